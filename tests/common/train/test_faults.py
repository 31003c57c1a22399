"""The training wing's faults (issue 39): each row makes one, runs the command, and expects one exact line, exit 2
and every file the run held before unchanged. Then the way out the refusal names (--overwrite), and what a run
folder records read from another working directory.

The rows start from two runs made once: ``zoo train`` stopped after its first of two epochs (trained from the
prepared folder's parent, with a relative data path), and a ``zoo train-pose`` run as it is before its first epoch
ends (its config.json). A row works on a copy of one.
"""

import contextlib
import csv
import dataclasses
import functools
import io
import json
import pathlib
import shutil

import keras
import pytest

from tests import helpers

SHARED = ["--batch-size", "4", "--crop-size", "32", "--test-fraction", "0.25"]
TRAIN = ["--base-filters", "2", "--epochs", "2", *SHARED]
POSE = ["--stacks", "2", "--base-filters", "16", "--input-size", "64", "--batch-size", "4", "--stage-factor", "0.001"]
LAST_GOOD = "rerun the same command to resume after epoch 1 (its backup is kept)"


def _nan_slices(monkeypatch, run):
    """Every training slice NaN, as NaN voxels in a shard would make them."""
    from common.ct import pipeline

    clean = pipeline.slice_dataset
    monkeypatch.setattr(pipeline, "slice_dataset",
                        lambda *args, **kwargs: clean(*args, **kwargs).map(lambda x, y: (x * float("nan"), y)))


def _nan_pose_images(monkeypatch, run):
    """Every training crop NaN (the validation crops stay clean), and eager steps: tracing the hourglass costs more."""
    from common.pose import data
    from common.train import pose

    clean = data.pose_dataset

    def poisoned(*args, training=True, **kwargs):
        dataset = clean(*args, training=training, **kwargs)
        return dataset.map(lambda x, y: (x * float("nan"), y)) if training else dataset

    monkeypatch.setattr(data, "pose_dataset", poisoned)
    monkeypatch.setattr(pose, "PoseTrainConfig", functools.partial(pose.PoseTrainConfig, run_eagerly=True))


def _truncated_config(monkeypatch, run):
    (run / "config.json").write_text("{", encoding="utf-8")


def _logs_are_a_file(monkeypatch, run):
    shutil.rmtree(run / "logs")
    (run / "logs").write_text("not a folder\n", encoding="utf-8")


@dataclasses.dataclass
class Fault:
    name: str
    base: str  # "train" or "pose": the run a copy of which the row starts from
    argv: list[str]  # "{data}", "{run}" formatted in
    message: str  # the one stderr line
    make: object = None  # make(monkeypatch, run): the fault
    file_limit: int | None = None  # RLIMIT_FSIZE bytes while the command runs: writes beyond fail (a full disk)
    may_add: str | None = None  # where the failed command may add a file (TensorBoard's log of the attempt)
    resumes: bool = False  # a rerun of the same command then resumes after the last good backup


FAULTS = [
    Fault("disk full at the checkpoint", "train", ["train", "{data}", "{run}", *TRAIN],
          f"zoo train: error: {{run}}/checkpoints/last.keras: not written: file too large; the previous file is "
          f"untouched; {LAST_GOOD}", file_limit=64 * 1024, may_add="logs/", resumes=True),
    Fault("NaN loss in a resumed epoch", "train", ["train", "{data}", "{run}", *TRAIN],
          "zoo train: error: {run}: the loss became NaN at epoch 2, step 1; nothing of this epoch was saved",
          make=_nan_slices, may_add="logs/"),
    Fault("rerun with other options", "train",
          ["train", "{data}", "{run}", "--base-filters", "4", "--epochs", "3", *SHARED],
          "zoo train: error: {run}: holds a run with other options (epochs 2 -> 3, base_filters 2 -> 4); give a new "
          "folder or --overwrite"),
    Fault("config.json cut short", "train", ["train", "{data}", "{run}", *TRAIN],
          "zoo train: error: {run}/config.json: not a run's configuration (Expecting property name enclosed in double "
          "quotes: line 1 column 2 (char 1)); give a new folder or --overwrite", make=_truncated_config),
    Fault("TensorBoard's folder is a file", "train", ["train", "{data}", "{run}", *TRAIN],
          f"zoo train: error: {{run}}/logs: not written: {{run}}/logs is not a directory; {LAST_GOOD}",
          make=_logs_are_a_file),
    Fault("pose: NaN loss", "pose", ["train-pose", "{data}", "{run}", *POSE],
          "zoo train-pose: error: {run}: stage A: the loss became NaN at epoch 1, step 1; nothing of this epoch was "
          "saved", make=_nan_pose_images, may_add="logs/stage_A/"),
    Fault("pose: rerun with other options", "pose", ["train-pose", "{data}", "{run}", *POSE[:2], "--base-filters", "24",
                                                      *POSE[4:]],
          "zoo train-pose: error: {run}: holds a run with other options (base_filters 16 -> 24); give a new folder or "
          "--overwrite"),
]


class _Interrupted(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):  # after the zoo's callbacks: epoch 1 is backed up
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupted


@pytest.fixture(scope="module")
def bases(tiny_prepared, pose_data, tmp_path_factory):
    """The two runs the rows start from (module docstring)."""
    from common import atomic, cli, registry
    from common.cli.train import train_config
    from common.pose.data import load_split
    from common.train import pose, segmentation

    root = tmp_path_factory.mktemp("bases")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tiny_prepared.parent)
        args = cli.build_parser().parse_args(["train", tiny_prepared.name, str(root / "train"), *TRAIN])
        with pytest.raises(_Interrupted), contextlib.redirect_stdout(io.StringIO()):
            segmentation.train(train_config(args), extra_callbacks=[_StopAfterFirstEpoch()])
    config = pose.PoseTrainConfig(str(pose_data), str(root / "pose"), **helpers.TINY_POSE)  # POSE's settings
    records = load_split(pose_data, "train")
    stages = registry.get(config.model).stages(config.stage_factor)
    atomic.write_json(root / "pose" / "config.json", pose.run_record(config, len(records), stages))
    return {"train": (root / "train", tiny_prepared), "pose": (root / "pose", pose_data)}


def _epochs(run) -> list[str]:
    with open(run / "history.csv", newline="", encoding="utf-8") as file:
        return [row["epoch"] for row in csv.DictReader(file)]


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_a_fault_is_one_line_and_leaves_the_run_as_it_was(fault, bases, tmp_path, zoo_here, monkeypatch, request):
    base, data = bases[fault.base]
    if fault.may_add:  # the rows whose training starts, then stops with the fault
        helpers.free_stopped_training(request)
    run = tmp_path / "run"
    shutil.copytree(base, run)
    if fault.make:
        fault.make(monkeypatch, run)
    before = helpers.checksums(run)
    argv = [part.format(data=data, run=run) for part in fault.argv]
    with helpers.file_limit(fault.file_limit) if fault.file_limit else contextlib.nullcontext():
        done = zoo_here(*argv)
    assert (done.returncode, done.stderr.strip().splitlines()) == (2, [fault.message.format(run=run)])
    after = helpers.checksums(run)
    assert {name: after.get(name) for name in before} == before
    assert all(fault.may_add and name.startswith(fault.may_add) for name in set(after) - set(before))
    if fault.resumes:
        done = zoo_here(*argv)
        assert done.returncode == 0, done.stderr
        assert "Epoch 2/2" in done.stdout and "Epoch 1/2" not in done.stdout and _epochs(run) == ["0", "1"]
        assert (run / "model.keras").is_file() and not (run / "backup").exists()


def test_overwrite_trains_afresh_and_history_keeps_one_row_per_epoch(bases, tmp_path, zoo_here):
    base, data = bases["train"]
    run = tmp_path / "run"
    shutil.copytree(base, run)
    done = zoo_here("train", data, run, "--base-filters", "2", "--epochs", "1", *SHARED, "--overwrite")
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert (config["epochs"], _epochs(run)) == (1, ["0"])  # not resumed: the old run's epoch 1 is trained again
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    assert len(list((run / "logs").rglob("events.*"))) == 1  # the old run's curves are gone with it


def test_a_run_reads_the_same_from_any_working_directory(bases, tmp_path, monkeypatch):
    """What `zoo predict RUN` and `zoo export RUN` read of a run (ensemble.options_for, card.run_facts)."""
    from common.ct import ensemble
    from common.serve import card

    run, data = bases["train"]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    as_given = {**config, "data": data.name}  # what the zoo recorded before: the path as typed, relative

    model = helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)  # of any input size, as a U-Net

    def read(recorded):
        options = ensemble.options_for(ensemble.Models([model], ["run"], [recorded]))
        return options.tile, card.run_facts("unet", "segmentation", recorded)["training_spacing"]

    monkeypatch.chdir(data.parent)
    where_trained = read(config)
    assert config["data"] == str(data.resolve()) and where_trained[0] == (32, 32) and where_trained[1]
    assert read(as_given) == where_trained
    monkeypatch.chdir(tmp_path)
    assert read(config) == where_trained
    assert read(as_given) == (None, None)  # the relative record: whole slices, no spacing (the bug)


def _damage(shard):
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # zeros over a record: its CRC no longer matches
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("fault, reason", [
    ("deleted", "a shard the manifest lists is missing; run `zoo prepare` again"),
    ("damaged", "damaged (corrupted record at {offset}); run `zoo prepare` again"),
])
def test_a_deleted_or_damaged_training_shard_is_one_line_naming_it(bases, tmp_path, zoo_here, fault, reason, request):
    """tf.data's DataLossError ("corrupted record at N") names no shard: the zoo finds and names it."""
    import tensorflow as tf

    from common.ct import shards

    run, prepared = bases["train"]
    data = tmp_path / "prepared"
    shutil.copytree(prepared, data)
    first = json.loads((run / "config.json").read_text(encoding="utf-8"))["split"]["train"][0]
    shard = pathlib.Path(next(c["shard"] for c in shards.load_manifest(data)["cases"] if c["id"] == first))
    if fault == "deleted":
        shard.unlink()
    else:
        _damage(shard)
        helpers.free_stopped_training(request)  # this read and the training stop at the damaged record
        with pytest.raises(tf.errors.DataLossError) as raised:
            for _ in tf.data.TFRecordDataset(str(shard)):
                pass
        reason = reason.format(offset=raised.value.message.split("corrupted record at ")[1].split()[0])
    before = helpers.checksums(data)
    done = zoo_here("train", data, tmp_path / "run", *TRAIN)
    assert (done.returncode, done.stderr.strip()) == (2, f"zoo train: error: {shard}: {reason}")
    assert helpers.checksums(data) == before
