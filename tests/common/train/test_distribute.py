"""Precision policies and distribution strategies: one device, two CPUs mirrored, two workers on 127.0.0.1."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import types
import zipfile

import keras
import numpy as np
import pytest

import unet_transformer
from common import registry
from common.nn import losses
from common.train import recipe
from tests import helpers


def test_mixed_float16_gives_float32_and_a_finite_step():
    previous = keras.config.dtype_policy()
    try:
        assert recipe.configure_precision("mixed_float16") == "mixed_float16"
        model = unet_transformer.build_model("unet", num_classes=3, base_filters=4)
        assert model.layers[1].compute_dtype == "float16"
        model.compile(optimizer="adam", loss=losses.CEDiceLoss(num_classes=3))
        x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
        y = np.random.default_rng(1).integers(0, 3, (2, 32, 32))
        assert np.asarray(model(x)).dtype == np.float32
        loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
    finally:
        keras.config.set_dtype_policy(previous)


def test_precision_argument_is_checked():
    with pytest.raises(ValueError, match="precision"):
        recipe.configure_precision("float8")


def test_mirrored_strategy_on_two_cpus_trains_one_epoch(tiny_prepared, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from common.train import segmentation as training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        config = training.TrainConfig(data={str(tiny_prepared)!r}, out={str(tmp_path / 'run')!r},
                                      base_filters=4, epochs=1, batch_size=4, crop_size=32, learning_rate=1e-3)
        model = training.train(config, strategy=strategy)
        print("replicas", strategy.num_replicas_in_sync)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2" in done.stdout
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"]))
    assert (tmp_path / "run" / "model.keras").exists()


TRAIN = ["--model", "unet", "--base-filters", "2", "--batch-size", "2", "--crop-size", "32",
         "--learning-rate", "1e-3", "--test-cases", "case_000", "--seed", "0"]


def _worker_env(ports, index: int) -> dict:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


def _start_workers(prepared, outs, epochs: int, ports, kill_after: int | None = None,
                   weights_to=(None, None)) -> list[subprocess.Popen]:
    """``zoo train`` on each worker; with ``kill_after``, each crashes once that epoch is backed up."""
    return [helpers.zoo_train_process([str(prepared), str(out), "--epochs", str(epochs), *TRAIN],
                                      env=_worker_env(ports, index), kill_after=kill_after, weights_to=weights)
            for index, (out, weights) in enumerate(zip(outs, weights_to))]


def _epochs(run) -> list[int]:
    with open(run / "history.csv", encoding="utf-8") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tiny_prepared, tmp_path_factory):
    """Two workers killed once epoch 1 of 2 is backed up, as after a power cut, then both started again.

    Each worker has its own run folder, so that what the non-chief writes would show. Every worker restores from
    the chief's backup, which a real cluster's workers see in one shared folder: before the rerun the chief's
    ``backup/`` is copied into the non-chief's folder, as that folder would show it.
    """
    root = tmp_path_factory.mktemp("multiworker")
    runs = [root / "run_0", root / "run_1"]
    crashed, codes = helpers.run_cluster(lambda ports: _start_workers(tiny_prepared, runs, epochs=2, ports=ports,
                                                                      kill_after=1))
    assert codes == [-signal.SIGKILL] * 2, "\n".join(log[-3000:] for log in crashed)
    backed_up = json.loads((runs[0] / "backup" / "training_metadata.json").read_text(encoding="utf-8"))["epoch"]
    epochs_before, non_chief_before = _epochs(runs[0]), helpers.checksums(runs[1])
    shutil.copytree(runs[0] / "backup", runs[1] / "backup", dirs_exist_ok=True)
    shared = helpers.checksums(runs[1])
    rerun, codes = helpers.run_cluster(lambda ports: _start_workers(
        tiny_prepared, runs, epochs=2, ports=ports, weights_to=[root / "final_0.npz", root / "final_1.npz"]))
    assert codes == [0, 0], "\n".join(log[-3000:] for log in rerun)
    return types.SimpleNamespace(root=root, crashed=crashed, rerun=rerun, backed_up=backed_up,
                                 epochs_before=epochs_before, non_chief_before=non_chief_before, shared=shared)


def test_two_workers_train_one_model_and_only_the_chief_writes(trained):
    run = trained.root / "run_0"
    assert all("2 replica(s)" in log for log in trained.crashed + trained.rerun)
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "last.keras").is_file()
    assert (run / "config.json").is_file()
    assert _epochs(run) == [0, 1]
    with zipfile.ZipFile(run / "model.keras") as saved:  # synchronized batch norm is TensorFlow-only: the file
        config = json.loads(saved.read("config.json"))   # holds the builder arguments: rebuilt unsynchronized
    assert config["class_name"] == "BuiltModel" and '"synchronized"' not in json.dumps(config)
    assert not any(getattr(layer, "synchronized", False) for layer in registry.load_run(run)[0]._flatten_layers())
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "history.csv", "logs",
                                                      "model.keras"]  # the backup is gone once training ends
    # The other worker's folder: nothing of its own, before the crash or after the rerun (the chief's backup,
    # copied in, is as it was: a non-chief neither writes nor discards it), so in a folder both share there is
    # one writer.
    assert trained.non_chief_before == {} and trained.shared
    assert helpers.checksums(trained.root / "run_1") == trained.shared


def test_both_workers_end_with_identical_weights(trained):
    # Each worker saves all its final weights, BatchNorm's moving statistics included (synchronized batch norm).
    a, b = np.load(trained.root / "final_0.npz"), np.load(trained.root / "final_1.npz")
    assert a.files == b.files and len(a.files) > 20
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


def test_killed_workers_resume_on_rerun(trained):
    assert trained.backed_up == 1 and trained.epochs_before == [0]
    rerun = "".join(trained.rerun)
    assert "Epoch 2/2" in rerun and "Epoch 1/2" not in rerun  # resumed after the backup, not from scratch
    assert not (trained.root / "run_0" / "backup").exists()
