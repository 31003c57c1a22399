"""``zoo train``: a segmentation model of the registry trained on prepared CT shards.

A run folder holds everything one training writes::

    RUN/config.json        what was trained, on which cases, with which preprocessing
    RUN/model.keras        the final model (written once training ends)
    RUN/checkpoints/       last.keras after every epoch
    RUN/backup/            BackupAndRestore state: rerunning the same command resumes
    RUN/history.csv        one line per epoch
    RUN/logs/              TensorBoard
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys

import keras
import tensorflow as tf

from common import atomic, registry
from common.ct import pipeline, shards, splits
from common.nn import losses, optimizers
from common.train import batch_norm, callbacks, distribute


@dataclasses.dataclass
class TrainConfig:
    """What ``zoo train`` trains; defaults follow the U-Transformer paper (section 3).

    The paper trains with Adam at 1e-4 and an exponential decay (rate not
    given: we decay by ``lr_decay`` per epoch). ``PRESETS`` holds the other
    papers' recipes. ``optimizer="sgd"`` is ``common.nn.optimizers.TorchSGD``:
    PyTorch's rule, whose ``weight_decay`` is L2 added to the gradient before
    the momentum (the EAS U-Net paper trained in PyTorch; Keras' decoupled
    decay would be ~10x weaker at momentum 0.9). With Adam, ``weight_decay``
    is Keras' decoupled decay (AdamW's).
    Models with deep supervision (``eas_unet``) get the loss on their main
    output plus ``side_weight`` times the same loss on each side output.
    """

    data: str
    out: str
    model: str = "unet"
    base_filters: int = 64
    model_options: dict = dataclasses.field(default_factory=dict)  # more build_model kwargs
    epochs: int = 50
    batch_size: int = 8
    crop_size: int | None = None
    learning_rate: float = 1e-4
    lr_decay: float = 0.95
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    side_weight: float = 0.4
    loss: str = "ce_dice"
    precision: str = "auto"
    augment: str = "flip-rot"  # flips and 90-degree rotations (EAS U-Net III.B); "none" keeps the layout
    test_fraction: float = 0.2
    test_cases: list[str] | None = None
    seed: int = 0
    verbose: int = 2

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        if self.model not in registry.names("segmentation"):
            raise ValueError(f"model must be one of {registry.names('segmentation')}, got {self.model!r}")
        stride = registry.get(self.model).stride
        for field in ("epochs", "batch_size", "base_filters"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.crop_size is not None and (self.crop_size < stride or self.crop_size % stride):
            raise ValueError(f"crop_size must be a positive multiple of {stride}, got {self.crop_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.augment not in pipeline.AUGMENTATIONS:
            raise ValueError(f"augment must be one of {pipeline.AUGMENTATIONS}, got {self.augment!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for field in ("lr_decay", "momentum", "weight_decay", "side_weight"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")


LOSSES = {"ce_dice": losses.CEDiceLoss, "dice": losses.SoftDiceLoss}
OPTIMIZERS = ("adam", "sgd")

# The papers' training recipes; ``preset_config`` applies one.
PRESETS = {
    # U-Transformer (section 3): Adam 1e-4 with exponential decay: TrainConfig's defaults. No flips or
    # rotations: positional encoding is there for the fixed anatomical layout, which they would destroy.
    "u_transformer": {"model": "u_transformer", "augment": "none"},
    # EAS U-Net (section III.A): SGD 0.01, momentum 0.9, weight decay 1e-4, batch 32, 50 epochs,
    # 256x256 random crops (III.B); no schedule is given, so the rate stays constant.
    "eas_unet": {"model": "eas_unet", "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                 "weight_decay": 1e-4, "batch_size": 32, "epochs": 50, "crop_size": 256, "lr_decay": 1.0,
                 "augment": "flip-rot"},
}


def preset_config(preset: str | None, epoch_scale: float = 1.0, **fields) -> TrainConfig:
    """A TrainConfig from a paper's preset, its epochs scaled by ``epoch_scale``; ``fields`` override.

    Example: ``preset_config("eas_unet", epoch_scale=0.1, data="prep", out="run")``
    trains the EAS U-Net recipe for 5 epochs instead of 50.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if not epoch_scale > 0:
        raise ValueError(f"epoch_scale must be > 0, got {epoch_scale}")
    values = {**PRESETS.get(preset, {}), **{k: v for k, v in fields.items() if v is not None}}
    if "epochs" not in fields or fields["epochs"] is None:
        epochs = values.get("epochs", TrainConfig.epochs)
        values["epochs"] = max(1, round(epochs * epoch_scale))
    return TrainConfig(**values)


def build_segmentation_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """Builds the registry's model ``config.model`` for one-channel slices of any size."""
    try:
        return registry.build(config.model, input_shape=(None, None, 1), num_classes=num_classes,
                              base_filters=config.base_filters, **config.model_options)
    except ValueError as error:
        raise ValueError(f"model_options {config.model_options}: {error}") from None


def output_weights(model: keras.Model, side_weight: float) -> dict[str, float]:
    """The loss weight of each output: 1 for the segmentation, ``side_weight`` for deep-supervision sides."""
    names = model.output_names
    if len(names) == 1:
        return {names[0]: 1.0}
    extra = [n for n in names[1:] if not n.startswith("side_")]
    if extra:
        raise ValueError(f"model_options: outputs {extra} are for inspection, not training "
                         "(drop return_attention)")
    return {names[0]: 1.0, **{name: side_weight for name in names[1:]}}


def with_targets(dataset: tf.data.Dataset, names) -> tf.data.Dataset:
    """Repeats the label of each (image, label) pair for every output that has a loss."""
    if len(names) == 1:
        return dataset
    return dataset.map(lambda image, label: (image, {name: label for name in names}),
                       num_parallel_calls=tf.data.AUTOTUNE)


def default_crop(manifest: dict, stride: int) -> int:
    """The largest slice side of the prepared cases, rounded up to the model stride."""
    side = max(max(case["shape"][1:]) for case in manifest["cases"])
    return -(-side // stride) * stride


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, or SGD with PyTorch's update rule (momentum, coupled weight decay); the rate decays per epoch."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=max(steps_per_epoch, 1), decay_rate=config.lr_decay
    )
    if config.optimizer == "sgd":  # PyTorch's rule: the EAS U-Net paper trained in PyTorch
        return optimizers.TorchSGD(schedule, momentum=config.momentum, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(schedule, weight_decay=config.weight_decay or None)


def compile_model(model: keras.Model, config: TrainConfig, num_classes: int, steps_per_epoch: int) -> None:
    """The configured optimizer and loss (on every supervised output), mean IoU of the main output; fused BN."""
    weights = output_weights(model, config.side_weight)
    batch_norm.fuse_batch_norm(model)
    main = model.output_names[0]
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss={name: LOSSES[config.loss](num_classes=num_classes) for name in weights},
        loss_weights=weights,
        metrics={main: [keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="mean_iou")]},
    )


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None, log=print,
          extra_callbacks=()) -> keras.Model:
    """Trains a segmentation model on a prepared folder; rerunning resumes.

    Args:
        config: what to train.
        strategy: a ``tf.distribute`` strategy; default ``distribute.choose_strategy()``.
        log: where progress lines go.
        extra_callbacks: more Keras callbacks, run after the zoo's own (so after each epoch's backup).

    Returns:
        The trained model, also saved as ``<out>/model.keras``.
    """
    config.validate()
    stride = registry.get(config.model).stride
    manifest = shards.load_manifest(config.data)
    run_dir = pathlib.Path(config.out)
    split = splits.holdout_split([c["id"] for c in manifest["cases"]], config.test_fraction,
                                 config.seed, config.test_cases)
    # Crops no larger than the slices (a 256 preset on 64-pixel slices trains on whole slices).
    crop = min(config.crop_size or default_crop(manifest, stride), default_crop(manifest, stride))
    by_id = {c["id"]: c for c in manifest["cases"]}
    train_shards = [by_id[i]["shard"] for i in split["train"]]
    num_slices = sum(by_id[i]["slices"] for i in split["train"])

    strategy = strategy or distribute.choose_strategy()  # first: collective ops must be set up before TensorFlow starts
    precision = distribute.configure_precision(config.precision)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps = -(-num_slices // global_batch)
    chief = distribute.is_chief(strategy)
    if chief:
        atomic.write_json(run_dir / "config.json", {
            **dataclasses.asdict(config), "crop_size": crop, "precision": precision,
            "num_classes": manifest["num_classes"], "class_names": manifest["class_names"],
            "hu_window": manifest["hu_window"], "label_map": manifest.get("label_map"),
            "source": manifest.get("source"), "split": split, "command": shlex.join(sys.argv),
        })
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_segmentation_model(config, manifest["num_classes"])
        compile_model(model, config, manifest["num_classes"], steps)
    replicated = strategy.num_replicas_in_sync > 1
    distribute.synchronize_batch_norm(model, replicated)
    targets = list(output_weights(model, config.side_weight))
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: with_targets(pipeline.slice_dataset(train_shards, config.batch_size, crop, training=True,
                                                        seed=config.seed, input_context=ctx,
                                                        augmentation=config.augment), targets)
    )
    log(f"training {config.model} ({model.count_params():,} parameters, {precision}) on "
        f"{len(split['train'])} cases / {num_slices} slices, {crop}x{crop} crops, "
        f"{strategy.num_replicas_in_sync} replica(s)")
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps,
              callbacks=[*callbacks.make_callbacks(run_dir, chief), *extra_callbacks], verbose=config.verbose,
              shuffle=False)  # the dataset shuffles itself
    distribute.synchronize_batch_norm(model, False)
    if chief:
        callbacks.save_model_atomic(model, run_dir / "model.keras")
    return model
