"""``zoo train``: a segmentation model of the registry trained on prepared CT shards.

A run folder holds everything one training writes::

    RUN/config.json        what was trained, on which cases and voxels (data_sha256), with which preprocessing
                           (paths absolute)
    RUN/model.keras        the final model (written once training ends)
    RUN/checkpoints/       last.keras after every epoch
    RUN/backup/            BackupAndRestore state, there until model.keras is written: rerunning resumes
    RUN/history.csv        one line per epoch, never two for one epoch
    RUN/logs/              TensorBoard

Rerunning the same command resumes an unfinished run and leaves a finished
one as it is; a rerun with other options is refused before anything is
written, with the list of what differs (``overwrite``: train afresh). Every
file is written atomically; a failed write, or a NaN or infinite loss, ends
training with one line and keeps the last complete backup
(``common.train.callbacks``).

How the model trains is its paper's recipe (``TrainConfig``; ``common.nn.recipe``), compiled by
``common.train.recipe`` (keras-only, shared with ``benchmarks gpu-check``). Keras may run on TensorFlow
(the default: fused batch norm, ``tf.distribute``) or, with ``KERAS_BACKEND=jax``, on JAX: the same
tf.data pipeline feeds one device and the step is compiled by XLA.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shlex
import shutil
import sys

import keras
import tensorflow as tf

from common import atomic, registry
from common.ct import pipeline, shards, splits
from common.nn.recipe import FIELDS as RECIPE_FIELDS
from common.nn.recipe import Recipe
from common.train import batch_norm, callbacks, distribute, recipe

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """What ``zoo train`` trains: the data, the model, and how, its paper's recipe unless a field says otherwise.

    The recipe's fields (``common.nn.recipe.Recipe``: optimizer, learning rate and decay, loss, batch, epochs,
    crop, augmentation, width, ...) left None take the model's recipe's value (``registry.get(model).recipe``,
    declared in its package as ``RECIPE``); ``preset_config`` takes another model's recipe instead.
    """

    data: str
    out: str
    model: str = dataclasses.field(default_factory=lambda: registry.names("segmentation")[0])
    model_options: dict = dataclasses.field(default_factory=dict)  # more build_model kwargs
    # The recipe (common.nn.recipe.Recipe's fields); None: the model's.
    optimizer: str | None = None
    learning_rate: float | None = None
    lr_decay: float | None = None
    loss: str | None = None
    batch_size: int | None = None
    epochs: int | None = None
    augment: str | None = None
    base_filters: int | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    side_weight: float | None = None
    crop_size: int | None = None  # None stays None where the recipe has none: whole slices
    precision: str | None = None
    steps_per_execution: int | None = None
    # The split.
    test_fraction: float = 0.2
    test_cases: list[str] | None = None
    train_cases: int | None = None  # a fixed subset of the training cases (splits.holdout_split)
    validation_cases: int = 0  # training cases that give val_loss per epoch instead (common.train.convergence)
    seed: int = 0
    verbose: int = 2

    def __post_init__(self):
        if self.model not in registry.names("segmentation"):
            raise ValueError(f"model must be one of {registry.names('segmentation')}, got {self.model!r}")
        paper = registry.get(self.model).recipe
        for field in RECIPE_FIELDS:
            if getattr(self, field) is None:
                setattr(self, field, getattr(paper, field))

    @property
    def recipe(self) -> Recipe:
        """The recipe as trained: the model's, with this config's changes (ValueError naming a bad field)."""
        return Recipe(**{field: getattr(self, field) for field in RECIPE_FIELDS})

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        if self.model not in registry.names("segmentation"):
            raise ValueError(f"model must be one of {registry.names('segmentation')}, got {self.model!r}")
        trained = self.recipe
        stride = registry.get(self.model).stride
        if trained.crop_size is not None and trained.crop_size % stride:
            raise ValueError(f"crop_size must be a positive multiple of {stride}, got {trained.crop_size}")


def preset_config(preset: str | None, epoch_scale: float = 1.0, **fields) -> TrainConfig:
    """A TrainConfig with another model's recipe (``preset``: a segmentation model's name), epochs scaled.

    ``fields`` override the recipe; without ``preset`` the model's own recipe is scaled. A preset's model is
    the default model. Example: ``preset_config(NAME, epoch_scale=0.1, data="prep", out="run")`` trains model
    NAME by its paper's recipe for a tenth of its epochs; ``preset_config(NAME, model=OTHER, ...)`` trains
    OTHER by NAME's paper's recipe (a baseline trained as the paper's model is).
    """
    if preset is not None and preset not in presets():
        raise ValueError(f"preset must be one of {presets()}, got {preset!r}")
    if not epoch_scale > 0:
        raise ValueError(f"epoch_scale must be > 0, got {epoch_scale}")
    given = {k: v for k, v in fields.items() if v is not None}
    if preset is not None:
        given = {"model": preset, **dataclasses.asdict(registry.get(preset).recipe), **given}
    config = TrainConfig(**given)
    if fields.get("epochs") is None:
        config.epochs = max(1, round(config.epochs * epoch_scale))
    return config


def presets() -> tuple[str, ...]:
    """The models whose recipe ``--preset`` may name: every segmentation model (baselines take their paper's)."""
    return tuple(name for name in registry.names("segmentation") if registry.get(name).recipe is not None)


def build_segmentation_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """Builds the registry's model ``config.model`` for one-channel slices of any size."""
    try:
        return registry.build(config.model, input_shape=(None, None, 1), num_classes=num_classes,
                              base_filters=config.base_filters, **config.model_options)
    except ValueError as error:
        raise ValueError(f"model_options {config.model_options}: {error}") from None


def default_crop(manifest: dict, stride: int) -> int:
    """The largest slice side of the prepared cases, rounded up to the model stride."""
    side = max(max(case["shape"][1:]) for case in manifest["cases"])
    return -(-side // stride) * stride


def compile_model(model: keras.Model, config: TrainConfig, num_classes: int, steps_per_epoch: int) -> None:
    """``recipe.compile_model`` (every compile setting), plus TensorFlow's fused batch norm where Keras runs on it."""
    recipe.compile_model(model, config.recipe, num_classes, steps_per_epoch)
    if keras.backend.backend() == "tensorflow":  # a TensorFlow kernel: other backends keep Keras' own layer
        batch_norm.fuse_batch_norm(model)


def _data_plan(config: TrainConfig, manifest: dict) -> tuple[dict, int, list, int]:
    """The split, the crop side, the training shards and their slice count."""
    stride = registry.get(config.model).stride
    split = splits.holdout_split([c["id"] for c in manifest["cases"]], config.test_fraction,
                                 config.seed, config.test_cases, config.train_cases, config.validation_cases)
    # Crops no larger than the slices (a 256 preset on 64-pixel slices trains on whole slices).
    crop = min(config.crop_size or default_crop(manifest, stride), default_crop(manifest, stride))
    by_id = {c["id"]: c for c in manifest["cases"]}
    return split, crop, [by_id[i]["shard"] for i in split["train"]], sum(by_id[i]["slices"] for i in split["train"])


def run_record(config: TrainConfig, manifest: dict, split: dict, crop: int, precision: str, execution: int) -> dict:
    """What ``config.json`` records: the options as trained (crop and precision resolved), the data's classes and
    preprocessing, the split and the command; paths absolute, so a run means the same from any directory.

    ``data_sha256`` is the prepared voxels of the whole cohort, held-out cases included (``shards.cohort_sha256``):
    two runs on the same shards record the same; None from a folder prepared before digests.
    """
    return {
        **dataclasses.asdict(config), "data": callbacks.absolute(config.data), "out": callbacks.absolute(config.out),
        "crop_size": crop, "precision": precision, "steps_per_execution": execution,
        "num_classes": manifest["num_classes"], "class_names": manifest["class_names"],
        "hu_window": manifest["hu_window"], "label_map": manifest.get("label_map"),
        "source": manifest.get("source"), "data_sha256": shards.cohort_sha256(manifest), "split": split,
        "command": shlex.join(sys.argv),
    }


def _validation_data(split: dict, manifest: dict, config: TrainConfig, crop: int, targets) -> dict:
    """``fit``'s validation arguments: the validation cases' slices, centre-cropped to the training crop, every
    one once per epoch (``val_loss``); none without validation cases."""
    if not split.get("validation"):
        return {}
    by_id = {c["id"]: c for c in manifest["cases"]}
    files = [by_id[i]["shard"] for i in split["validation"]]
    shards.check_present(files)
    slices = sum(by_id[i]["slices"] for i in split["validation"])
    return {"validation_data": pipeline.slice_dataset(files, config.batch_size, crop, training=False, outputs=targets),
            "validation_steps": -(-slices // config.batch_size)}


def _finished(run_dir: pathlib.Path, previous: dict | None, overwrite: bool) -> bool:
    """Whether the folder holds this run trained to its end: model.keras is written and no backup/ is left."""
    return (previous is not None and not overwrite and (run_dir / "model.keras").exists()
            and not (run_dir / "backup").exists())


def _start_run(run_dir: pathlib.Path, record: dict, previous: dict | None, overwrite: bool) -> None:
    """What the chief writes before the first epoch: config.json and an empty backup/ (unfinished until model.keras).

    A rerun of the same options keeps the config.json it finds. ``overwrite`` first drops the old run's resume
    state and TensorBoard logs (TensorBoard would draw both runs as one); its other files are replaced as the new
    ones are written.
    """
    if overwrite:
        for folder in ("backup", "logs"):
            if (run_dir / folder).exists():
                shutil.rmtree(run_dir / folder)
    if previous is None or overwrite:
        atomic.write_json(run_dir / callbacks.CONFIG, record)
    (run_dir / "backup").mkdir(parents=True, exist_ok=True)


def _resume_hint(error: atomic.WriteError, backup: callbacks.BackupAndRestore) -> atomic.WriteError:
    epochs = backup.saved_epochs()
    hint = (f"rerun the same command to resume after epoch {epochs} (its backup is kept)" if epochs else
            "no epoch was backed up yet, a rerun starts from the first")
    return atomic.WriteError(f"{error}; {hint}")


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None, extra_callbacks=(),
          overwrite: bool = False) -> keras.Model:
    """Trains a segmentation model on a prepared folder; rerunning resumes.

    Args:
        config: what to train.
        strategy: a ``tf.distribute`` strategy; default ``distribute.choose_strategy()`` (one device when
            Keras runs on JAX or PyTorch: tf.data still feeds it, Keras hands the batches over as NumPy).
        extra_callbacks: more Keras callbacks, run after the zoo's own (so after each epoch's backup).
        overwrite: train afresh in a folder that holds a run, of the same options or not.

    Returns:
        The trained model, also saved as ``<out>/model.keras`` (a finished run's model, loaded).

    Raises:
        callbacks.OtherOptions: the folder holds a run with other options (and not ``overwrite``); nothing written.
        NonFiniteLoss: the loss became NaN or infinite; nothing of that epoch is saved.
        WriteError: a file could not be written; the last complete backup is kept for a rerun.
    """
    config.validate()
    manifest = shards.load_manifest(config.data)
    run_dir = pathlib.Path(config.out)
    split, crop, train_shards, num_slices = _data_plan(config, manifest)
    shards.check_present(train_shards)
    strategy = strategy or distribute.choose_strategy()  # first: collective ops must be set up before TensorFlow starts
    precision = recipe.configure_precision(config.precision)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps = -(-num_slices // global_batch)
    execution = recipe.resolve_steps_per_execution(config.steps_per_execution, steps)
    chief = distribute.is_chief(strategy)
    record = run_record(config, manifest, split, crop, precision, execution)
    previous = callbacks.claim_run(run_dir, record, overwrite)  # before anything is written
    if _finished(run_dir, previous, overwrite):
        logger.info(f"{run_dir}: trained earlier with these options (model.keras); nothing to train "
                    "(--overwrite: again)")
        return registry.load_run(run_dir)[0]
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_segmentation_model(config, manifest["num_classes"])
        compile_model(model, config, manifest["num_classes"], steps)
    distribute.synchronize_batch_norm(model, strategy.num_replicas_in_sync > 1)
    targets = list(recipe.output_weights(model, config.side_weight))
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.slice_dataset(train_shards, config.batch_size, crop, training=True, seed=config.seed,
                                           input_context=ctx, augmentation=config.augment, outputs=targets)
    )
    validation = _validation_data(split, manifest, config, crop, targets)
    if chief:  # only now: a refused start, a bad model option or a bad shard leaves the folder as it was
        _start_run(run_dir, record, previous, overwrite)
    logger.info(f"training {config.model} ({model.count_params():,} parameters, {precision}) on "
                f"{len(split['train'])} cases / {num_slices} slices, {crop}x{crop} crops, "
                f"{strategy.num_replicas_in_sync} replica(s), {execution} step(s) per execution, "
                f"{keras.backend.backend()}")
    made = callbacks.make_callbacks(run_dir, chief)
    try:
        model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=[*made, *extra_callbacks],
                  verbose=config.verbose, shuffle=False, **validation)  # the dataset shuffles itself
        distribute.synchronize_batch_norm(model, False)
        if chief:
            callbacks.save_model_atomic(model, run_dir / "model.keras")
    except atomic.WriteError as error:
        raise _resume_hint(error, made[-1]) from None
    except tf.errors.DataLossError as error:  # a shard damaged after prepare wrote it
        raise shards.damaged_shard(train_shards, error) from None
    made[-1].discard()  # only now: a failed final save resumes from the last epoch's backup
    return model
