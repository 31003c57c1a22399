"""Training: precision policy, distribution strategy, callbacks and the ``zoo train`` loop.

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
import functools
import json
import os
import pathlib

import keras
import tensorflow as tf

import eas_unet
import unet_transformer
from common import atomic
from common.ct import pipeline, shards, splits
from common.nn import losses


def configure_precision(precision: str = "auto") -> str:
    """Sets Keras' global dtype policy and returns its name.

    Args:
        precision: "auto" (mixed_float16 on a GPU, float32 otherwise),
            "float32", "mixed_float16" or "mixed_bfloat16".
    """
    choices = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    if precision not in choices:
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    if precision == "auto":
        precision = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.config.set_dtype_policy(precision)
    return precision


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TensorFlow's multi-worker strategy with the ``reduce`` that Keras 3's ``fit`` expects.

    Keras 3 does not train under the plain strategy (keras-team/keras#20585):
    ``fit`` learns a distributed batch's shapes by reducing the whole
    ``(x, y)`` structure in one ``reduce`` call, which the collective strategy
    takes one value at a time and not as uint8 (our labels); and it averages
    each scalar loss and metric across workers with ``axis=0``, which a scalar
    does not have. This ``reduce`` maps over structures, reduces integers as
    int32 and scalars with ``axis=None``; nothing else changes.
    """

    _REDUCIBLE = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
        if axis is not None and getattr(local, "shape", None) is not None and local.shape.rank == 0:
            axis = None
        if isinstance(value, tf.distribute.DistributedValues) and local.dtype not in self._REDUCIBLE:
            value = self.run(lambda t: tf.cast(t, tf.int32), args=(value,))
        return super().reduce(reduce_op, value, axis)


def choose_strategy() -> tf.distribute.Strategy:
    """Picks the strategy the machine calls for.

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one
    worker, ``MirroredStrategy`` over several local GPUs, else the default
    (single-device) strategy.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = tf_config.get("cluster", {}).get("worker", [])
    if len(workers) > 1:
        return MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, logs and the final model."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' resume callback, written atomically by the chief and read by every worker.

    Every worker restores from the chief's ``RUN/backup`` (``RUN`` must be a
    folder all workers see, as TensorFlow's multi-worker guide asks of
    checkpoints), so all resume at the same epoch with the same weights; only
    the chief writes it, each file under a temporary name renamed into place,
    so a worker killed while saving leaves the last complete backup.
    """

    def __init__(self, backup_dir, chief: bool = True):
        super().__init__(str(backup_dir))
        self.chief = chief

    def _save_model(self):
        if not self.chief:
            return
        weights = pathlib.Path(self._weights_path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(f".tmp-{weights.name}")
        self.model.save_weights(str(tmp), overwrite=True)
        os.replace(tmp, weights)  # weights first: a kill before the metadata redoes one epoch
        atomic.write_json(self._training_metadata_path, {"epoch": self._current_epoch,
                                                         "batch": self._last_batch_seen})

    def on_train_end(self, logs=None):
        if self.chief:
            super().on_train_end(logs)


def make_callbacks(run_dir: pathlib.Path, chief: bool = True) -> list[keras.callbacks.Callback]:
    """Checkpoints and logs on the chief; resume state (``RUN/backup``) for every worker."""
    callbacks = []
    if chief:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        callbacks += [
            keras.callbacks.ModelCheckpoint(str(run_dir / "checkpoints" / "last.keras")),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        ]
    # Last, so an epoch's log line is written before its backup: a kill in between redoes the epoch.
    return callbacks + [BackupAndRestore(run_dir / "backup", chief)]


def synchronize_batch_norm(model: keras.Model, synchronized: bool) -> int:
    """Sets ``synchronized`` on every BatchNormalization layer (nested ones too); returns how many.

    With several replicas, batch statistics are then computed over the global
    batch, so every replica (and worker) keeps the same moving statistics, as
    synchronous data parallelism promises. The flag is TensorFlow-only, so
    ``train`` turns it off again before writing ``model.keras``, which then
    loads on every backend.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = synchronized
    return len(layers)


class _FusedBatchNormCall:
    """One BatchNormalization layer's ``call``, with TensorFlow's fused kernel for batch statistics.

    Keras 3 computes training-mode batch norm from separate moment, subtract,
    scale and shift ops, and their gradients op by op; ``FusedBatchNormV3``
    does each direction in one kernel. Same results: the moving statistics
    take the biased batch variance as Keras' own layer does. Anything else
    (inference, masks, renorm, synchronized replicas, other ranks or axes)
    goes to Keras' ``call``.
    """

    def __init__(self, layer: keras.layers.BatchNormalization):
        self.layer = layer
        self.keras_call = layer.call

    def _fusable(self, inputs, training, mask) -> bool:
        layer = self.layer
        return (training is True and layer.trainable and mask is None and len(inputs.shape) == 4
                and layer.axis in (-1, 3) and layer.center and layer.scale
                and not layer.renorm and not layer.synchronized)

    def __call__(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return self.keras_call(inputs, training=training, mask=mask)
        layer = self.layer
        x = tf.cast(inputs, tf.float32)  # as Keras' layer: statistics in float32 whatever the policy
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(layer.gamma, tf.float32), offset=tf.cast(layer.beta, tf.float32), mean=empty,
            variance=empty, epsilon=layer.epsilon, is_training=True, data_format="NHWC")
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (count - 1.0) / count  # the kernel returns the unbiased variance
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, layer.compute_dtype)


def fuse_batch_norm(model: keras.Model) -> int:
    """Trains every BatchNormalization layer of ``model`` (nested ones too) with TensorFlow's fused kernel.

    A speed default of ``compile_model``: on the project's CPU it trains the
    U-Net at 1.27x and the U-Transformer at 1.12x the images/s of Keras' own
    batch norm (docs/performance.md, ``speed-settings``). Only how this
    process computes the layers changes: their weights, configuration and
    saved files are Keras' own, so the model still loads on every backend.
    Call it before the first ``fit``. Returns how many layers it changed.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        if not isinstance(layer.call, _FusedBatchNormCall):
            layer.call = _FusedBatchNormCall(layer)
    return len(layers)


def save_model_atomic(model: keras.Model, path) -> pathlib.Path:
    """Saves a ``.keras`` file atomically."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)
    return pathlib.Path(path)


@dataclasses.dataclass
class TrainConfig:
    """What ``zoo train`` trains; defaults follow the U-Transformer paper (section 3).

    The paper trains with Adam at 1e-4 and an exponential decay (rate not
    given: we decay by ``lr_decay`` per epoch). ``PRESETS`` holds the other
    papers' recipes. ``optimizer="sgd"`` uses ``momentum``; ``weight_decay``
    is Keras' decoupled decay (each step ``w -= lr * weight_decay * w``), which
    equals PyTorch's coupled L2 without momentum and is slightly weaker with it.
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
    test_fraction: float = 0.2
    test_cases: list[str] | None = None
    seed: int = 0
    verbose: int = 2

    def validate(self, stride: int) -> None:
        """Raises ValueError naming the first bad field."""
        for field in ("epochs", "batch_size", "base_filters"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.crop_size is not None and (self.crop_size < stride or self.crop_size % stride):
            raise ValueError(f"crop_size must be a positive multiple of {stride}, got {self.crop_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for field in ("lr_decay", "momentum", "weight_decay", "side_weight"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")


LOSSES = {"ce_dice": losses.CEDiceLoss, "dice": losses.SoftDiceLoss}
OPTIMIZERS = ("adam", "sgd")
MODELS = (*unet_transformer.VARIANTS, "eas_unet")
STRIDE = unet_transformer.STRIDE  # the EAS U-Net pools as often (eas_unet.STRIDE, tested equal)

# The papers' training recipes; ``preset_config`` applies one.
PRESETS = {
    # U-Transformer (section 3): Adam 1e-4 with exponential decay: TrainConfig's defaults.
    "u_transformer": {"model": "u_transformer"},
    # EAS U-Net (section III.A): SGD 0.01, momentum 0.9, weight decay 1e-4, batch 32, 50 epochs,
    # 256x256 random crops (III.B); no schedule is given, so the rate stays constant.
    "eas_unet": {"model": "eas_unet", "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                 "weight_decay": 1e-4, "batch_size": 32, "epochs": 50, "crop_size": 256, "lr_decay": 1.0},
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
    """Builds the model named by ``config.model``: a U-Transformer family variant or the EAS U-Net."""
    if config.model == "eas_unet":
        build = eas_unet.build_model
    else:
        build = functools.partial(unet_transformer.build_model, config.model)
    try:
        return build(input_shape=(None, None, 1), num_classes=num_classes, base_filters=config.base_filters,
                     **config.model_options)
    except TypeError as error:  # an unknown key in model_options
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
    """Adam or SGD (momentum, weight decay) with an exponential decay of the rate per epoch."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=max(steps_per_epoch, 1), decay_rate=config.lr_decay
    )
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, weight_decay=decay)
    return keras.optimizers.Adam(schedule, weight_decay=decay)


def compile_model(model: keras.Model, config: TrainConfig, num_classes: int, steps_per_epoch: int) -> None:
    """The configured optimizer and loss (on every supervised output), mean IoU of the main output; fused BN."""
    weights = output_weights(model, config.side_weight)
    fuse_batch_norm(model)
    main = model.output_names[0]
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss={name: LOSSES[config.loss](num_classes=num_classes) for name in weights},
        loss_weights=weights,
        metrics={main: [keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="mean_iou")]},
    )


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None, log=print) -> keras.Model:
    """Trains a segmentation model on a prepared folder; rerunning resumes.

    Args:
        config: what to train.
        strategy: a ``tf.distribute`` strategy; default ``choose_strategy()``.
        log: where progress lines go.

    Returns:
        The trained model, also saved as ``<out>/model.keras``.
    """
    config.validate(STRIDE)
    manifest = shards.load_manifest(config.data)
    run_dir = pathlib.Path(config.out)
    split = splits.holdout_split([c["id"] for c in manifest["cases"]], config.test_fraction,
                                 config.seed, config.test_cases)
    # Crops no larger than the slices (a 256 preset on 64-pixel slices trains on whole slices).
    crop = min(config.crop_size or default_crop(manifest, STRIDE), default_crop(manifest, STRIDE))
    by_id = {c["id"]: c for c in manifest["cases"]}
    train_shards = [by_id[i]["shard"] for i in split["train"]]
    num_slices = sum(by_id[i]["slices"] for i in split["train"])

    strategy = strategy or choose_strategy()  # first: collective ops must be set up before TensorFlow starts
    precision = configure_precision(config.precision)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps = -(-num_slices // global_batch)
    chief = is_chief(strategy)
    if chief:
        atomic.write_json(run_dir / "config.json", {
            **dataclasses.asdict(config), "crop_size": crop, "precision": precision,
            "num_classes": manifest["num_classes"], "class_names": manifest["class_names"],
            "hu_window": manifest["hu_window"], "label_map": manifest.get("label_map"),
            "source": manifest.get("source"), "split": split,
        })
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_segmentation_model(config, manifest["num_classes"])
        compile_model(model, config, manifest["num_classes"], steps)
    replicated = strategy.num_replicas_in_sync > 1
    synchronize_batch_norm(model, replicated)
    targets = list(output_weights(model, config.side_weight))
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: with_targets(pipeline.slice_dataset(train_shards, config.batch_size, crop, training=True,
                                                        seed=config.seed, input_context=ctx), targets)
    )
    log(f"training {config.model} ({model.count_params():,} parameters, {precision}) on "
        f"{len(split['train'])} cases / {num_slices} slices, {crop}x{crop} crops, "
        f"{strategy.num_replicas_in_sync} replica(s)")
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps,
              callbacks=make_callbacks(run_dir, chief), verbose=config.verbose,
              shuffle=False)  # the dataset shuffles itself
    synchronize_batch_norm(model, False)
    if chief:
        save_model_atomic(model, run_dir / "model.keras")
    return model
