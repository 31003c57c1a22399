"""A model that names its builder: the registry name and the arguments that made it, inside its ``.keras`` file.

keras-hub's backbones carry their class and constructor arguments in their
config; a zoo model carries the name its package registered its builder
under and that builder's arguments, so a file moved away from its run folder
still says what it is (``common.registry.entry_of``). ``BuiltModel`` is the
functional model the builder made (same layers, weights and output names);
only its config differs: ``{"builder", "arguments", "name", "trainable",
"dtype"}``, and ``from_config`` calls the builder again.

Loading a file calls only a builder some package registered here, by name:
nothing the file names is imported or evaluated, so Keras' safe mode keeps
its meaning (a file cannot make the zoo run code it did not register).

Example:

>>> import keras
>>> inputs = keras.Input((3,), name="x")
>>> model = BuiltModel("tiny", {"units": 4}, inputs=inputs, outputs=keras.layers.Dense(4, name="y")(inputs))
>>> model.get_config()["builder"], model.get_config()["arguments"]
('tiny', {'units': 4})
>>> BuiltModel.from_config(model.get_config())  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: builder must be one of (...), got 'tiny'

A package registers its builder beside it (``register_builder("eas_unet", build_model)``); only then
does a file naming "eas_unet" rebuild. An output renamed since a release keeps its old name for one more
(``register_builder(..., renamed_outputs={"fused": "probabilities"})``): ``compile``'s loss, loss weight and
metric dicts, ``fit``'s and ``evaluate``'s label dicts and ``get_layer`` take it, with a ``DeprecationWarning``
naming the new one.
"""

from __future__ import annotations

import json
import warnings
from typing import Callable

import keras

_BUILDERS: dict[str, Callable[..., keras.Model]] = {}
_RENAMED: dict[str, dict[str, str]] = {}  # builder -> {an output's old name: its name now}


def register_builder(name: str, build: Callable[..., keras.Model],
                     renamed_outputs: dict[str, str] | None = None) -> Callable[..., keras.Model]:
    """Makes ``build(**arguments)`` the builder that files recording ``name`` are rebuilt with; returns it.

    ``renamed_outputs``: {old name: name now} of outputs renamed in this release, which the old name still reaches.
    """
    if name in _BUILDERS and _BUILDERS[name] is not build:
        raise ValueError(f"builder {name!r} is registered already")
    _BUILDERS[name], _RENAMED[name] = build, dict(renamed_outputs or {})
    return build


def builder(name: str) -> Callable[..., keras.Model]:
    """The builder registered under ``name``; ValueError naming the registered ones otherwise."""
    if name not in _BUILDERS:
        raise ValueError(f"builder must be one of {tuple(sorted(_BUILDERS))}, got {name!r}")
    return _BUILDERS[name]


def builder_of(model) -> str | None:
    """The builder name a model records; None for a model built otherwise (or saved before models recorded it)."""
    return model.builder if isinstance(model, BuiltModel) else None


@keras.saving.register_keras_serializable(package="zoo")
class BuiltModel(keras.Model):
    """A functional model that records its builder's registered name and arguments.

    Args:
        builder: the name the builder is registered under (``register_builder``), the registry's model name.
        arguments: every argument of the builder, defaults filled in, as JSON values (lists, not tuples):
            ``builder(**arguments)`` builds this model again.
        inputs, outputs, name: as for ``keras.Model(inputs, outputs, name=name)``.
    """

    def __init__(self, builder: str, arguments: dict, *, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        try:  # a value JSON cannot hold would be lost (or refused) when the file is saved
            text = json.dumps(arguments, allow_nan=False)
        except TypeError as error:
            raise ValueError(f"arguments of builder {builder!r}: not JSON values ({error})") from None
        except ValueError:
            raise ValueError(f"arguments of builder {builder!r}: NaN or infinity, got {arguments}") from None
        if json.loads(text) != arguments:  # a tuple would come back a list, and the config differ
            raise ValueError(f"arguments of builder {builder!r}: use lists, not tuples, got {arguments}")
        # Kept as text: Keras would track a dict attribute as state, and text hands out copies only.
        self._builder, self._arguments = builder, text

    @property
    def builder(self) -> str:
        return self._builder

    @property
    def arguments(self) -> dict:
        return json.loads(self._arguments)

    # An output's old name, for one release: compile's dicts, fit's and evaluate's label dicts, get_layer.
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                **kwargs):
        super().compile(optimizer, self._renamed(loss), self._renamed(loss_weights), self._renamed(metrics),
                        self._renamed(weighted_metrics), **kwargs)

    def compile_from_config(self, config):
        """What Keras' own does on loading a compiled file (which skips any model whose ``compile`` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, self._renamed(y), y_pred, self._renamed(sample_weight), training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._renamed(y), y_pred, self._renamed(sample_weight))

    def get_layer(self, name=None, index=None):
        return super().get_layer(self._renamed({name: None}).popitem()[0] if name else name, index)

    def _renamed(self, structure):
        """``structure`` with an output's old name (a dict key) as its name now, and a DeprecationWarning."""
        renames = {old: new for old, new in _RENAMED.get(self._builder, {}).items() if new in self.output_names}
        if not isinstance(structure, dict) or not renames.keys() & structure.keys():
            return structure
        for old in renames.keys() & structure.keys():
            warnings.warn(f"{self._builder}: output {old!r} is named {renames[old]!r} now; the old name goes in "
                          "the next release", DeprecationWarning, stacklevel=3)
        return {renames.get(key, key): value for key, value in structure.items()}

    def get_config(self) -> dict:
        return {"builder": self._builder, "arguments": self.arguments, "name": self.name,
                "trainable": self.trainable, "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    @classmethod
    def from_config(cls, config: dict) -> BuiltModel:
        """Builds the model again through its registered builder, under the dtype policy it was built with."""
        build = builder(config["builder"])
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(keras.dtype_policies.get(config.get("dtype") or policy))
        try:
            model = build(**config["arguments"])
        except TypeError as error:  # an argument this zoo's builder does not take
            raise ValueError(f"builder {config['builder']!r}: {error}") from None
        finally:
            keras.config.set_dtype_policy(policy)
        model.trainable = config.get("trainable", True)
        return model
