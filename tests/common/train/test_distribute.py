"""Precision policies and distribution strategies (one device, two CPUs mirrored)."""

import csv
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import unet_transformer
from common.nn import losses
from common.train import distribute


def test_mixed_float16_gives_float32_and_a_finite_step():
    previous = keras.config.dtype_policy()
    try:
        assert distribute.configure_precision("mixed_float16") == "mixed_float16"
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
        distribute.configure_precision("float8")


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
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2" in done.stdout
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"]))
    assert (tmp_path / "run" / "model.keras").exists()
