"""``zoo train-pose``: ACNN's staged training (section 3.3) on an MPII-style data folder.

A run folder holds::

    RUN/config.json               what was trained, on which data (paths absolute); a rerun of other options is
                                  refused before anything is written (``overwrite``: train afresh)
    RUN/stage_<X>.weights.h5      after each finished stage (a rerun skips it)
    RUN/backup/stage_<X>/         resume state inside a stage
    RUN/history_<X>.csv           one line per epoch: loss, and val_loss on the valid split when there is one
    RUN/logs/stage_<X>/           TensorBoard, a folder per stage (``common.train.callbacks.logging_callbacks``,
                                  as ``zoo train``'s RUN/logs)
    RUN/model.keras               the final model
"""

from __future__ import annotations

import dataclasses
import functools
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


@dataclasses.dataclass
class PoseTrainConfig:
    """What ``zoo train-pose`` trains; defaults are the paper's (section 3.1, 3.3: 4 stacks, 256 px, batch 12)."""

    data: str
    out: str
    attention: bool = True
    num_stacks: int = 4
    features: int = 256
    input_size: int = 256
    batch_size: int = 12
    stage_factor: float = 1.0
    seed: int = 0
    init: str | None = None  # a .keras pose model (e.g. `zoo convert hourglass`) standing for stage A
    verbose: int = 2
    run_eagerly: bool = False  # for tiny models (tests), where tracing costs more than the steps

    @property
    def model(self) -> str:
        """The registry's name of what is trained: ACNN, or Newell's hourglass without attention."""
        return "acnn" if self.attention else "hourglass"

    def validate(self) -> None:
        for field in ("num_stacks", "features", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.input_size < 64 or self.input_size % 64:
            raise ValueError(f"input_size must be a positive multiple of 64, got {self.input_size}")
        if not self.stage_factor > 0:
            raise ValueError(f"stage_factor must be > 0, got {self.stage_factor}")


def _validation(config: PoseTrainConfig):
    """The valid split's crops without augmentation, or None when the data folder has none."""
    annotations, _ = pose_data.split_paths(config.data, "valid")
    if not annotations.exists():
        logger.info(f"no {annotations}: training without a validation loss")
        return None
    records = pose_data.load_split(config.data, "valid")
    return pose_data.pose_dataset(records, config.batch_size, config.input_size, training=False, seed=config.seed)


def _load_init(model: keras.Model, path: str) -> None:
    """Copies the weights of the pose model in ``path`` into ``model``, variable by variable (same names, shapes)."""
    source, _ = registry.load_run(path)
    theirs = {w.path: w for w in source.weights}
    for variable in model.weights:
        other = theirs.pop(variable.path, None)
        if other is None or tuple(other.shape) != tuple(variable.shape):
            found = "nothing" if other is None else f"shape {tuple(other.shape)}"
            raise DataError(f"{path}: --init holds {found} for {variable.path} {tuple(variable.shape)}: give a model "
                            f"of the run's stacks, features and attention (zoo convert hourglass --attention for ACNN)")
        variable.assign(other)
    if theirs:
        raise DataError(f"{path}: --init has weights the run's model lacks ({next(iter(theirs))}); "
                        "train with the same stacks, features and attention")


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
        "init": callbacks.absolute(config.init), "train_images": train_images, "model": config.model,
        "stages": [dataclasses.asdict(s) for s in stages], "command": shlex.join(sys.argv),
    }


def _stage_logs(run_dir: pathlib.Path, stage) -> list[keras.callbacks.Callback]:
    """A stage's logs: ``history_<X>.csv`` (where earlier runs kept it, so a resume finds it) and TensorBoard's
    ``logs/stage_<X>/``."""
    return callbacks.logging_callbacks(run_dir / "logs" / f"stage_{stage.name}",
                                       history=run_dir / f"history_{stage.name}.csv")


def train_pose(config: PoseTrainConfig, overwrite: bool = False) -> keras.Model:
    """Trains ACNN (or the plain hourglass) through the scaled stages; rerunning resumes.

    A rerun with other options is refused before anything is written (``callbacks.OtherOptions``), unless
    ``overwrite``, which trains afresh. A NaN or infinite loss ends a stage with ``NonFiniteLoss``, nothing of its
    epoch saved.
    """
    entry = registry.get(config.model)
    config.validate()
    records = pose_data.load_split(config.data, "train")
    run_dir = pathlib.Path(config.out)
    stages = entry.stages(config.stage_factor)
    if config.init:  # its weights are stage A's result (Newell's trained network): the later stages start there
        config.init = callbacks.absolute(config.init)
        stages = [stage for stage in stages if stage.trains != "heatmaps"]
    record = run_record(config, len(records), stages)
    previous = callbacks.claim_run(run_dir, record, overwrite)  # before anything is written
    keras.utils.set_random_seed(config.seed)
    model = entry.build(input_shape=(config.input_size, config.input_size, 3), num_stacks=config.num_stacks,
                        num_joints=mpii.NUM_JOINTS, features=config.features)
    if config.init:
        _load_init(model, config.init)
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
