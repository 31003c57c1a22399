"""A paper's training recipe: what ``model.fit`` needs besides the model and the data, declared beside each model.

Each segmentation package declares its paper's recipe once (``unet_transformer.RECIPE``,
``eas_unet.RECIPE``) with the section each value comes from; the registry's entries carry it, ``zoo train``
and ``zoo cv`` default to it, ``--preset NAME`` applies another model's, and a script compiles with it::

    >>> import eas_unet
    >>> eas_unet.RECIPE.optimizer, eas_unet.RECIPE.learning_rate, eas_unet.RECIPE.batch_size
    ('sgd', 0.01, 32)

(``common.train.recipe.compile_model(model, eas_unet.RECIPE, num_classes, steps_per_epoch)`` compiles a model as
that paper trained it.) Keras-only like the rest of ``common.nn``: the packages import it.

The fields every recipe must state have no default. The others default to the zoo's choice where the papers
are silent, each said at its field.
"""

from __future__ import annotations

import dataclasses

AUGMENTATIONS = ("none", "flip", "flip-rot")  # after the random crop: nothing, flips, flips and 90-degree rotations
LOSSES = ("ce_dice", "dice")  # common.nn.losses.CEDiceLoss, SoftDiceLoss
OPTIMIZERS = ("adam", "sgd")  # Keras' Adam; common.nn.optimizers.TorchSGD (PyTorch's rule)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def _field(help: str, default=dataclasses.MISSING, **metadata):
    """A recipe field with the help text ``zoo train --help`` shows for it (the CLI repeats none of them)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """How a paper trained its model; ``dataclasses.replace(RECIPE, epochs=5)`` for a variation.

    ``optimizer="sgd"`` is PyTorch's rule (``common.nn.optimizers.TorchSGD``: ``weight_decay`` is L2 added to
    the gradient before the momentum); with Adam, ``weight_decay`` is Keras' decoupled decay (AdamW's). The rate
    is multiplied by ``lr_decay`` once per epoch. Models with deep supervision get the loss on their main output
    plus ``side_weight`` times the same loss on each output of its shape.
    """

    optimizer: str = _field("optimizer", choices=OPTIMIZERS)
    learning_rate: float = _field("initial learning rate", type=float)
    lr_decay: float = _field("learning-rate factor per epoch (1: constant)", type=float)
    loss: str = _field("loss of every supervised output", choices=LOSSES)
    batch_size: int = _field("slices per batch", type=int)
    epochs: int = _field("epochs", type=int)
    augment: str = _field("training augmentation after the random crop", choices=AUGMENTATIONS)
    base_filters: int = _field("width of the model's first level; the others are multiples of it", type=int)
    momentum: float = _field("SGD momentum (unused by adam)", 0.9, type=float)
    weight_decay: float = _field("weight decay: with sgd PyTorch's L2 added to the gradient before the momentum, "
                                 "with adam Keras' decoupled decay", 0.0, type=float)
    # Neither paper weights its side outputs: 0.4, a common deep-supervision weight, is the zoo's choice.
    side_weight: float = _field("loss weight of each deep-supervision side output", 0.4, type=float)
    crop_size: int | None = _field("square training crops, a multiple of the model's stride (none: whole slices)",
                                   None, type=int)
    precision: str = _field("auto (mixed_float16 on a GPU, float32 otherwise), float32, mixed_float16 or "
                            "mixed_bfloat16", "auto", choices=PRECISIONS)
    steps_per_execution: int | None = _field(
        "training steps per compiled call; callbacks and logs run once per call (none: 1 on a CPU, 10 on a GPU, "
        "where per-step host work was the gap; at most an epoch's steps)", None, type=int)

    def __post_init__(self):
        self.validate()  # frozen: valid once, valid for good

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        for field, choices in (("optimizer", OPTIMIZERS), ("loss", LOSSES), ("augment", AUGMENTATIONS),
                               ("precision", PRECISIONS)):
            if getattr(self, field) not in choices:
                raise ValueError(f"{field} must be one of {choices}, got {getattr(self, field)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for field in ("lr_decay", "momentum", "weight_decay", "side_weight"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        for field in ("batch_size", "epochs", "base_filters", "crop_size", "steps_per_execution"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{field} must be an integer >= 1, got {value!r}")


FIELDS = tuple(field.name for field in dataclasses.fields(Recipe))
