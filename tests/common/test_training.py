import csv
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from common import losses, training
import unet_transformer


def test_mixed_float16_gives_float32_and_a_finite_step():
    previous = keras.config.dtype_policy()
    try:
        assert training.configure_precision("mixed_float16") == "mixed_float16"
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
        training.configure_precision("float8")


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("crop_size", 40),
                                          ("learning_rate", 0.0), ("loss", "focal")])
def test_bad_train_config_names_the_field(field, value):
    config = training.TrainConfig(data="d", out="o", **{field: value})
    with pytest.raises(ValueError, match=field):
        config.validate(16)


def test_mirrored_strategy_on_two_cpus_trains_one_epoch(tiny_prepared, tmp_path):
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from common import training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        config = training.TrainConfig(data={str(tiny_prepared)!r}, out={str(tmp_path / 'run')!r},
                                      base_filters=4, epochs=1, batch_size=4, crop_size=32, learning_rate=1e-3)
        model = training.train(config, strategy=strategy)
        print("replicas", strategy.num_replicas_in_sync)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2" in done.stdout
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"]))
    assert (tmp_path / "run" / "model.keras").exists()


def _completed_epochs(history):
    if not history.exists():
        return 0
    return len(list(csv.DictReader(open(history))))


def test_killed_training_resumes_from_last_completed_epoch(tiny_prepared, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "common.cli", "train", tiny_prepared, run, "--base-filters", "8",
               "--epochs", "6", "--batch-size", "4", "--crop-size", "64", "--test-fraction", "0.25"]
    first = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while _completed_epochs(run / "history.csv") < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = _completed_epochs(run / "history.csv")
    assert 2 <= done_before < 6, "training was not interrupted mid-run"
    assert not (run / "model.keras").exists()

    second = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    first_epoch = int(re.search(r"Epoch (\d+)/6", second.stdout).group(1))
    assert first_epoch == done_before + 1  # resumes after the last completed epoch
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]
    assert epochs == list(range(6))
    assert (run / "model.keras").exists()
