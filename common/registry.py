"""The model registry: every model the zoo trains, loads and serves, by name.

Generic code (training, cross-validation, the CLI, export) asks this module
and never imports a model package: adding a model is one ``register`` call
below. An entry says how to build the model, its total stride (image sides
must be multiples of it), its task, how its outputs are served, and, where
its paper trains it its own way, that procedure::

    >>> from common import registry
    >>> registry.get("eas_unet").task, registry.get("eas_unet").stride
    ('segmentation', 16)
    >>> registry.names("pose")
    ('acnn', 'hourglass')

Importing this module imports the four model packages, which registers
their custom layers with Keras and their builders with ``common.nn.built``,
so any saved ``.keras`` file of the zoo loads afterwards (``load_run``). A
model the zoo built records its builder's name, the entry's: ``entry_of``
reads it, from the file alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
import weakref
import zipfile
from typing import Callable

import h5py
import keras

import acnn_pose
import eas_unet
import tri_al  # registers TRI-CNN's builder and layer; its entry builds through common.nn.built
import unet_transformer
from common.errors import DataError
from common.nn import (
    built,
    losses,  # noqa: F401  (registers the losses a compiled model may refer to)
)

TASKS = ("segmentation", "pose", "tiles")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model of the zoo.

    Attributes:
        name: what ``--model`` and ``config.json`` call it.
        task: "segmentation" (CT slices -> class probabilities), "pose"
            (image -> stacked heatmaps) or "tiles" (three tiles -> class).
        build: ``build(**kwargs) -> keras.Model``, the package's ``build_model``.
        stride: image sides must be multiples of it.
        serving_outputs: ``serving_outputs(model)`` gives the ``outputs``
            callable of ``common.serve.export`` (None: probabilities and labels).
        keypoints: pose models: ``keypoints(heatmaps) -> (coords, scores)`` in
            heatmap pixels.
        stages: pose models: ``stages(factor)``, the paper's training stages
            with epochs scaled by ``factor``; ``fit`` runs them.
        fit: the paper's own training procedure where it has one.
        recipe: the paper's training setup, declared in the model's package
            (``eas_unet.RECIPE``, ``acnn_pose.RECIPE``): what ``zoo train`` and
            ``zoo train-pose`` default to, and what a script compiles with.
        paper: what a model card says of the paper (``common.serve.card``):
            "description" (the package's one-line summary), "authors",
            "references" (its package's ``PAPER``).
    """

    name: str
    task: str
    build: Callable[..., keras.Model]
    stride: int
    serving_outputs: Callable | None = None
    keypoints: Callable | None = None
    stages: Callable | None = None
    fit: Callable | None = None
    recipe: object | None = None
    paper: dict | None = None


_ENTRIES: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Adds ``entry``; a name may be registered once."""
    if entry.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {entry.task!r}")
    if entry.name in _ENTRIES:
        raise ValueError(f"model {entry.name!r} is registered already")
    _ENTRIES[entry.name] = entry
    return entry


def names(task: str | None = None) -> tuple[str, ...]:
    """Registered model names, of one task or all, in registration order."""
    return tuple(n for n, e in _ENTRIES.items() if task is None or e.task == task)


def get(name: str) -> Entry:
    """The entry of ``name``; ValueError naming the choices for an unknown one."""
    if name not in _ENTRIES:
        raise ValueError(f"model must be one of {names()}, got {name!r}")
    return _ENTRIES[name]


def build(name: str, **kwargs) -> keras.Model:
    """Builds model ``name``; an argument it does not take is a ValueError naming it."""
    try:
        return get(name).build(**kwargs)
    except TypeError as error:  # an unknown keyword
        raise ValueError(f"{name}: {error}") from None


def entry_of(model: keras.Model, config: dict | None = None) -> Entry:
    """The entry a model belongs to: the builder it records (``common.nn.built``), else its run's ``config["model"]``.

    Only files saved before models recorded their builder need the run's config; ``load_run`` keeps the one it
    read beside such a file, so a caller without the config gets the same answer.

    Raises:
        DataError naming the file when neither the file nor a config.json beside it names a model of the zoo;
        ValueError for a model built outside the zoo's builders.
    """
    name = built.builder_of(model)
    if name is not None:
        return get(name)
    path, run_model = _UNRECORDED.get(model, (None, None))
    name = (config or {}).get("model") or run_model
    if path is None:
        if name is None:
            raise ValueError(f"model: {model.name!r} records no builder (it was not built by a zoo model's "
                             f"build_model) and no run config names it; give the config, its model one of {names()}")
        return get(name)
    if name is None:
        raise DataError(f"{path}: saved before zoo models recorded their builder, and no config.json beside it names "
                        f'the model: put it back in its run folder, or beside a config.json {{"model": NAME}}, NAME '
                        f"one of {', '.join(names())}")
    if name not in _ENTRIES:
        raise DataError(f"{path.parent / 'config.json'}: model {name!r} is none of the zoo's "
                        f"({', '.join(names())})")
    return _ENTRIES[name]


# Models load_run read from files that record no builder: their file, and the model their run's config.json names.
_UNRECORDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_run(path) -> tuple[keras.Model, dict]:
    """Loads a model from a run folder (``RUN/model.keras``) or a ``.keras`` file, with the run's config if any.

    Keras loads in its safe mode: a file naming code it may not load (a Python lambda, a function
    of another module such as ``os.system``) is refused before any of it runs.

    Raises:
        DataError, one line naming the file: missing, not a Keras model file, refused by the safe
        mode, or not loadable.
    """
    path = pathlib.Path(path)
    model_path = path / "model.keras" if path.is_dir() else path
    config_path = model_path.parent / "config.json"
    if not model_path.exists():
        raise DataError(f"{model_path}: no such model (train one with `zoo train`)")
    _check_format(model_path)
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # whatever a damaged or hostile file makes Keras raise is a finding about the file
        raise DataError(f"{model_path}: {_load_failure(error)}") from None
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    if built.builder_of(model) is None:
        _UNRECORDED[model] = (model_path, config.get("model"))
    return model, config


MESSAGE_CHARACTERS = 300  # of Keras' message in ours: its first line can hold a whole model's config
# The formats Keras loads: what each file is, how it starts, and the check that it is whole.
_FORMATS = {".keras": ("a zip archive", b"PK\x03\x04", zipfile.is_zipfile),
            ".h5": ("an HDF5 file", b"\x89HDF\r\n\x1a\n", lambda path: h5py.is_hdf5(str(path))),
            ".hdf5": ("an HDF5 file", b"\x89HDF\r\n\x1a\n", lambda path: h5py.is_hdf5(str(path)))}


def _check_format(model_path: pathlib.Path) -> None:
    """DataError naming the file when it is not of its suffix's format (Keras would say "File not found")."""
    if model_path.suffix.lower() not in _FORMATS:
        return
    kind, magic, whole = _FORMATS[model_path.suffix.lower()]
    try:
        if whole(model_path):
            return
        with open(model_path, "rb") as stream:
            head = stream.read(512)
    except OSError as error:
        raise DataError(f"{model_path}: unreadable ({error.strerror or error})") from None
    try:
        found = "text" if head.decode("utf-8") else "empty"
    except UnicodeDecodeError as error:  # text cut inside a character at the 512th byte is still text
        found = "text" if error.start > len(head) - 4 else "data of another format"
    if head.startswith(magic):
        found = f"{kind} cut short or damaged"
    raise DataError(f"{model_path}: not a Keras model file (it is {found}; a {model_path.suffix} file is {kind})")


def _load_failure(error: Exception) -> str:
    """One line for what Keras raised: a safe-mode refusal by name, else the first line of its message."""
    texts, cause = [], error
    while cause is not None and len(texts) < 16:  # Keras wraps the refusal in a layer's, then the model's, error
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(texts)
    located = re.search(r"Could not (?:locate|deserialize) (class|function) '([^']+)'", text)
    if located:
        module = re.search(r"Full object config: \{'module': '([^']*)'", text)
        origin = f" of module '{module.group(1)}'" if module else ""
        return (f"refused by Keras' safe mode: it names {located.group(1)} '{located.group(2)}'{origin}, which is "
                "neither Keras' nor registered with it, so nothing of it was loaded")
    if "safe_mode" in text:
        first = next(line for line in text.splitlines() if line.strip())
        return f"refused by Keras' safe mode: {first.split('. ')[0].strip().rstrip('.')}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"cannot be loaded as a Keras model ({first[:MESSAGE_CHARACTERS]})"


def _paper(package) -> dict:
    """A package's ``PAPER`` facts with its docstring's first line as the description."""
    summary = (package.__doc__ or "").strip()
    return {"description": summary.splitlines()[0] if summary else None, **getattr(package, "PAPER", {})}


# Each entry builds through the builder its package registered under the entry's name: the name a saved
# model records. U-Transformer (paper 000) and its baselines; EAS U-Net (paper 001).
# The baselines are the U-Transformer paper's ablations, trained by its recipe.
for _variant in unet_transformer.VARIANTS:
    register(Entry(_variant, "segmentation", built.builder(_variant), unet_transformer.STRIDE,
                   recipe=unet_transformer.RECIPE, paper=_paper(unet_transformer)))
register(Entry("eas_unet", "segmentation", built.builder("eas_unet"), eas_unet.STRIDE, recipe=eas_unet.RECIPE,
               paper=_paper(eas_unet)))


def _pose_serving(model: keras.Model):
    return acnn_pose.serving_outputs(acnn_pose.model.num_stacks_of(model))


# ACNN (paper 003) and Newell's stacked hourglass, trained by ACNN's stages (section 3.3).
for _name, _attention in (("acnn", True), ("hourglass", False)):
    register(Entry(_name, "pose", built.builder(_name), acnn_pose.STRIDE,
                   serving_outputs=_pose_serving, keypoints=acnn_pose.decode_heatmaps,
                   stages=functools.partial(acnn_pose.scaled_stages, attention=_attention),
                   fit=acnn_pose.train_staged, recipe=acnn_pose.RECIPE, paper=_paper(acnn_pose)))

# TRI-CNN (paper 004): three VGG16 branches on 2.5x, 10x and 40x tiles.
register(Entry("tri_cnn", "tiles", built.builder("tri_cnn"), stride=32, recipe=tri_al.TrainConfig(),
               paper=_paper(tri_al)))
