"""``zoo train-pose``: a pose model of the registry trained by its paper's own procedure on an MPII-style data folder.

What is trained and how come from the registry's entry: the model (``Entry.build``), its paper's training
stages and procedure (``Entry.stages``, ``Entry.fit``) and its recipe (``Entry.recipe``: stacks, base_filters,
input size, batch), which ``PoseTrainConfig``'s options default to.

A run folder holds::

    RUN/config.json               what was trained, on which data (paths absolute); a rerun of other options is
                                  refused before anything is written (``overwrite``: train afresh)
    RUN/stage_<X>.weights.h5      after each finished stage (a rerun skips it)
    RUN/backup/stage_<X>/         resume state inside a stage
    RUN/history_<X>.csv           one line per epoch: loss, and val_loss on the valid split when there is one
    RUN/logs/stage_<X>/           TensorBoard, a folder per stage (``common.train.callbacks.logging_callbacks``,
                                  as ``zoo train``'s RUN/logs)
    RUN/model.keras               the final model

A run folder written before issue 37 records ``features`` for ``base_filters`` and ``attention`` beside
``model``; it resumes with either spelling of its command (``LEGACY_KEYS``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import pathlib
import shlex
import shutil
import sys

import keras

from common import atomic, registry
from common.errors import DataError
from common.pose import data as pose_data
from common.pose import mpii
from common.train import batch_norm, callbacks

logger = logging.getLogger(__name__)


# The recipe's fields a config takes: None, the default, is the recipe's value.
RECIPE_FIELDS = ("num_stacks", "base_filters", "input_size", "batch_size")
# config.json keys of runs written before issue 37 -> their names now; compared under their old names (claim_run
# compares the keys the previous config.json holds). The old "attention" needs none: those runs also record
# "model" (since the registry) and their "stages" (always), which tell the two models apart.
LEGACY_KEYS = {"features": "base_filters"}


@dataclasses.dataclass
class PoseTrainConfig:
    """What ``zoo train-pose`` trains: ``model``, a registry name of task "pose" (None: the first), and the options
    of its paper's recipe (``RECIPE_FIELDS``; None: the recipe's, ``registry.get(model).recipe``)."""

    data: str
    out: str
    model: str | None = None
    num_stacks: int | None = None
    base_filters: int | None = None
    input_size: int | None = None
    batch_size: int | None = None
    stage_factor: float = 1.0
    lr_scale: float = 1.0  # multiplies every stage's learning rate (a study's sweep; 1: the paper's)
    seed: int = 0
    init: str | None = None  # a .keras pose model (e.g. from `zoo convert`) standing for the stages that train heatmaps
    verbose: int = 2
    run_eagerly: bool = False  # for tiny models (tests), where tracing costs more than the steps

    def __post_init__(self):
        models = registry.names("pose")
        self.model = models[0] if self.model is None else self.model
        if self.model not in models:
            raise ValueError(f"model must be one of {models}, got {self.model!r}")
        recipe = registry.get(self.model).recipe
        for field in RECIPE_FIELDS:
            if getattr(self, field) is None:
                if recipe is None:  # a pose entry registered without its paper's recipe
                    raise ValueError(f"{field}: model {self.model!r} declares no recipe to take it from; give it")
                setattr(self, field, getattr(recipe, field))

    def validate(self) -> None:
        for field in RECIPE_FIELDS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
        for field in ("stage_factor", "lr_scale"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)}")
        stride = registry.get(self.model).stride
        if self.input_size % stride:
            raise ValueError(f"input_size must be a positive multiple of {stride} ({self.model}'s stride), "
                             f"got {self.input_size}")


    def stages(self) -> list:
        """The model's training stages (its entry's), epochs scaled by ``stage_factor``, rates by ``lr_scale``."""
        return [dataclasses.replace(stage, learning_rate=stage.learning_rate * self.lr_scale)
                for stage in registry.get(self.model).stages(self.stage_factor)]


def _validation(config: PoseTrainConfig):
    """The valid split's crops without augmentation, or None when the data folder has none."""
    annotations, _ = pose_data.split_paths(config.data, "valid")
    if not annotations.exists():
        logger.info(f"no {annotations}: training without a validation loss")
        return None
    records = pose_data.load_split(config.data, "valid")
    return pose_data.pose_dataset(records, config.batch_size, config.input_size, training=False, seed=config.seed)


def _load_init(model: keras.Model, config: PoseTrainConfig) -> None:
    """Copies the weights of the pose model in ``config.init`` into ``model``, variable by variable (same names,
    shapes)."""
    path = config.init
    source, _ = registry.load_run(path)
    theirs = {w.path: w for w in source.weights}
    run = f"{config.num_stacks} stacks, base_filters {config.base_filters}, model {config.model}"
    for variable in model.weights:
        other = theirs.pop(variable.path, None)
        if other is None or tuple(other.shape) != tuple(variable.shape):
            found = "nothing" if other is None else f"shape {tuple(other.shape)}"
            raise DataError(f"{path}: --init holds {found} for {variable.path} {tuple(variable.shape)}: give a model "
                            f"of the run's stacks, base_filters and model ({run}; zoo convert makes one)")
        variable.assign(other)
    if theirs:
        raise DataError(f"{path}: --init has weights the run's model lacks ({next(iter(theirs))}); "
                        f"train with the same stacks, base_filters and model ({run})")


def _start_run(run_dir: pathlib.Path, record: dict, previous: dict | None, overwrite: bool) -> None:
    """Writes config.json into a fresh folder (a rerun of the same options keeps the one it finds).

    ``overwrite`` first drops the old run's resume state (``backup/``, ``stage_<X>.weights.h5``, which a rerun
    would take for finished stages of this run) and TensorBoard logs (TensorBoard would draw both runs as one); its
    other files are replaced as the new ones are written.
    """
    if overwrite:
        for folder in ("backup", "logs"):
            if (run_dir / folder).exists():
                shutil.rmtree(run_dir / folder)
        for done in run_dir.glob("stage_*.weights.h5"):
            done.unlink()
    if previous is None or overwrite:
        atomic.write_json(run_dir / callbacks.CONFIG, record)


def run_record(config: PoseTrainConfig, train_images: int, stages) -> dict:
    """What ``config.json`` records: the options, the training set's size, the stages and the command; paths
    absolute, so a run means the same from any directory."""
    return {
        **dataclasses.asdict(config), "data": callbacks.absolute(config.data), "out": callbacks.absolute(config.out),
        "init": callbacks.absolute(config.init), "train_images": train_images,
        "stages": [dataclasses.asdict(s) for s in stages], "command": shlex.join(sys.argv),
    }


def stage_histories(run) -> dict[str, pathlib.Path]:
    """Each stage's ``history_<X>.csv`` of a pose run folder, in training order (the stages its config.json records;
    A and C for runs that recorded none)."""
    run = pathlib.Path(run)
    config = run / callbacks.CONFIG
    stages = json.loads(config.read_text(encoding="utf-8")).get("stages") if config.exists() else None
    names = [stage["name"] for stage in stages] if stages else ["A", "C"]
    return {name: run / f"history_{name}.csv" for name in names}


def last_stage_history(run) -> pathlib.Path:
    """The history of a pose run's last stage, the one its model ends with."""
    return list(stage_histories(run).values())[-1]


def claim_run(run_dir: pathlib.Path, record: dict, overwrite: bool) -> dict | None:
    """``callbacks.claim_run`` for a pose run: ``record`` compared under the old names too (``LEGACY_KEYS``), so an
    older run folder is refused a change of them as any other, and resumed without one."""
    legacy = {old: record[new] for old, new in LEGACY_KEYS.items()}
    return callbacks.claim_run(run_dir, {**record, **legacy}, overwrite)


def _stage_logs(run_dir: pathlib.Path, stage) -> list[keras.callbacks.Callback]:
    """A stage's logs: ``history_<X>.csv`` (where earlier runs kept it, so a resume finds it) and TensorBoard's
    ``logs/stage_<X>/``."""
    return callbacks.logging_callbacks(run_dir / "logs" / f"stage_{stage.name}",
                                       history=run_dir / f"history_{stage.name}.csv")


def train_pose(config: PoseTrainConfig, overwrite: bool = False) -> keras.Model:
    """Trains ``config.model`` through its entry's stages, scaled by ``config.stage_factor``; rerunning resumes.

    A rerun with other options is refused before anything is written (``callbacks.OtherOptions``), unless
    ``overwrite``, which trains afresh. A NaN or infinite loss ends a stage with ``NonFiniteLoss``, nothing of its
    epoch saved.
    """
    entry = registry.get(config.model)
    config.validate()
    records = pose_data.load_split(config.data, "train")
    run_dir = pathlib.Path(config.out)
    stages = config.stages()
    if config.init:  # its weights stand for what the heatmap stages would train: the later stages start there
        config.init = callbacks.absolute(config.init)
        stages = [stage for stage in stages if stage.trains != "heatmaps"]
    record = run_record(config, len(records), stages)
    previous = claim_run(run_dir, record, overwrite)  # before anything is written
    keras.utils.set_random_seed(config.seed)
    model = entry.build(input_shape=(config.input_size, config.input_size, 3), num_stacks=config.num_stacks,
                        num_joints=mpii.NUM_JOINTS, base_filters=config.base_filters)
    if config.init:
        _load_init(model, config)
    _start_run(run_dir, record, previous, overwrite)  # only now: a refused start or a bad --init writes nothing
    logger.info(f"training {model.name} ({model.count_params():,} parameters) on {len(records)} people, "
                f"{config.input_size}x{config.input_size}, stages {', '.join(f'{s.name}:{s.epochs}' for s in stages)}")
    batch_norm.fuse_batch_norm(model)  # TensorFlow's fused kernel: 1.28x the images/s (docs/performance.md)
    dataset = pose_data.pose_dataset(records, config.batch_size, config.input_size, training=True, seed=config.seed)
    steps = math.ceil(len(records) / config.batch_size)
    entry.fit(model, dataset, run_dir, stages, steps_per_epoch=steps, verbose=config.verbose,
              run_eagerly=config.run_eagerly, validation=_validation(config),
              logs=functools.partial(_stage_logs, run_dir))
    with atomic.atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    return model
