"""Shared fixtures: a tiny synthetic cohort, its prepared shards, and a `zoo` runner."""

from __future__ import annotations

import gc
import os
import pathlib
import subprocess
import sys

import pytest

from tests import helpers

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN on, as `make test` and the zoo CLI set it, before TensorFlow is imported: a plain `pytest` on a CPU
# without AVX-512 would otherwise compute with it off here and on in the subprocesses, which round differently.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# 64 px slices at twice the default spacing keep the phantom's anatomy in view.
TINY_SIZE = (64, 64, 12)
TINY_SPACING = (5.4, 5.4, 8.0)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> pathlib.Path:
    from common.ct import synthetic as synthetic_ct

    root = tmp_path_factory.mktemp("cohort")
    synthetic_ct.write_cohort(root, num_cases=4, seed=1, size=TINY_SIZE, spacing=TINY_SPACING)
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cohort, tmp_path_factory) -> pathlib.Path:
    from common.ct import shards

    out = tmp_path_factory.mktemp("prepared")
    shards.prepare(tiny_cohort, out)
    return out


def run_zoo(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Runs the `zoo` CLI in a fresh process and returns its completed process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "common.cli", *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout, env=env, **kwargs)


@pytest.fixture
def zoo():
    """Runs `zoo` in a fresh process, as a user does: the real entry point, a CompletedProcess back."""
    return run_zoo


@pytest.fixture
def zoo_here(capsys):
    """Runs `zoo` in this process (no TensorFlow start-up to wait for); a CompletedProcess back."""

    def run(*args) -> subprocess.CompletedProcess:
        from common import cli

        argv = [str(a) for a in args]
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["zoo", *argv], code, out, err)

    return run


@pytest.fixture(scope="session")
def pose_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_data")
    from common.pose import synthetic as synthetic_pose

    synthetic_pose.write_dataset(root, num_images=10, seed=0, size=96)
    return root


@pytest.fixture(scope="session")
def pose_run(pose_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    from common.train import pose as pose_training

    config = pose_training.PoseTrainConfig(str(pose_data), str(out), **helpers.TINY_POSE)
    with helpers.logged() as lines:  # what `zoo train-pose` prints
        pose_training.train_pose(config)
    return out, lines


@pytest.fixture(scope="session")
def keras_file(tmp_path_factory):
    """A tiny U-Net (base 2, 8 classes) of free input size, saved."""
    import unet_transformer

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    unet_transformer.build_model("unet", num_classes=8, base_filters=2).save(path)
    return path


@pytest.fixture(scope="session")
def fixed_keras_file(tmp_path_factory):
    """The same U-Net fixed to 32x32 inputs, saved."""
    import unet_transformer

    path = tmp_path_factory.mktemp("model") / "fixed.keras"
    unet_transformer.build_model("unet", input_shape=(32, 32, 1), num_classes=8, base_filters=2).save(path)
    return path


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict:
    """Every registered model, tiny (``helpers.TINY_MODELS``), fit one step, saved in a run folder and moved to a
    folder with no config.json: name -> (model, a batch it was fit on, the file)."""
    import shutil

    import numpy as np

    from common import registry

    base, found = tmp_path_factory.mktemp("model_files"), {}
    for name in registry.names():
        model = registry.build(name, **helpers.TINY_MODELS[name])
        x = helpers.fit_one_step(model, np.random.default_rng(0))
        (base / name).mkdir()
        model.save(base / name / "model.keras")
        found[name] = (model, x, pathlib.Path(shutil.move(base / name / "model.keras", base / f"{name}.keras")))
    return found


@pytest.fixture(scope="session")
def exported_files(model_files, tmp_path_factory) -> dict:
    """``zoo export FILE SERVING`` of each file of ``model_files``, the file alone: name -> its version folder."""
    from common.cli import main

    serving, found = tmp_path_factory.mktemp("exported"), {}
    for name, (_, _, path) in model_files.items():
        assert main(["-q", "export", str(path), str(serving)]) == 0, name
        found[name] = serving / name / "1"
    return found


# Modules that share the trained pose run (the session fixture ``pose_run``, a three-stage training): one worker
# runs them all (one work unit for pytest-xdist), so it is trained once, not once per worker.
POSE_RUN_USERS = ("tests/common/cli/test_pose.py", "tests/common/train/test_pose.py",
                  "tests/common/pose/test_evaluate.py", "tests/common/pose/test_faults.py",
                  "tests/common/studies/test_pose_pictures.py",
                  "tests/common/serve/test_card.py")
# Modules that share every model's export (the session fixtures ``model_files``, ``exported_files``): one work
# unit as well, so the nine exports are written once.
EXPORT_USERS = ("tests/common/test_builder_files.py", "tests/common/serve/test_export.py",
                "tests/acnn_pose/test_decode.py")
# The slowest modules (pytest --durations), run first: with `make test`'s two workers (pytest-xdist,
# one file per worker at a time) a long module left for the end would run while the other worker idles.
SLOWEST_FIRST = ("tests/test_backends.py", "tests/common/train/test_distribute.py", *POSE_RUN_USERS, *EXPORT_USERS,
                 "tests/common/train/test_crossval.py",
                 "tests/common/studies/test_tri_al.py", "tests/common/train/test_faults.py",
                 "tests/tri_al/test_active_learning.py", "tests/acnn_pose/test_staged.py",
                 "tests/common/convert/test_tri_cnn.py", "tests/common/train/test_callbacks.py",
                 "tests/common/ct/test_faults.py", "tests/common/convert/test_hourglass.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test`'s --dist loadfile, with the modules of ``POSE_RUN_USERS`` as one work unit, ``EXPORT_USERS``
    as another."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "pose_run users" if path in POSE_RUN_USERS else "export users" if path in EXPORT_USERS else path

    return SharedFixtureScheduling(config, log)


def pytest_collection_finish(session):
    """Python's garbage collector, tuned for a process that traces TensorFlow graphs (docs/performance.md).

    Tracing allocates millions of short-lived objects, so the default young generation (700 allocations) is
    collected thousands of times a test file: a young generation of 50,000 and the objects of the imports frozen
    out of every collection took the collector's time from 22-25 s to 13 s of a 2-worker run of 8 heavy files.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}

    def key(item):
        path = pathlib.Path(str(item.fspath)).relative_to(config.rootpath).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: every other test keeps its order
