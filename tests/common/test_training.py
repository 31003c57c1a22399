import csv
import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import unet_transformer
from common.nn import losses
from common.train import batch_norm, distribute
from common.train import segmentation as training


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


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("crop_size", 40),
                                          ("learning_rate", 0.0), ("loss", "focal"), ("optimizer", "lamb"),
                                          ("momentum", -0.1), ("weight_decay", -1.0), ("model", "unet3d")])
def test_bad_train_config_names_the_field(field, value):
    config = training.TrainConfig(data="d", out="o", **{field: value})
    with pytest.raises(ValueError, match=field):
        config.validate()


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


def _completed_epochs(history):
    if not history.exists():
        return 0
    return len(list(csv.DictReader(open(history))))


def _backed_up_epochs(run) -> int:
    metadata = run / "backup" / "training_metadata.json"
    try:
        return json.loads(metadata.read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError):
        return 0


def test_killed_training_resumes_from_last_completed_epoch(tiny_prepared, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "common.cli", "train", tiny_prepared, run, "--base-filters", "8",
               "--epochs", "6", "--batch-size", "4", "--crop-size", "64", "--test-fraction", "0.25"]
    first = subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while _backed_up_epochs(run) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    backed_up = _backed_up_epochs(run)
    assert 2 <= backed_up < 6, "training was not interrupted mid-run"
    assert not (run / "model.keras").exists()
    logged_before = _completed_epochs(run / "history.csv")

    second = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    first_epoch = int(re.search(r"Epoch (\d+)/6", second.stdout).group(1))
    assert first_epoch == backed_up + 1  # resumes after the last backed-up epoch
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]
    assert epochs[logged_before:] == list(range(backed_up, 6)) and sorted(set(epochs)) == list(range(6))
    assert (run / "model.keras").exists() and not (run / "backup").exists()


def test_eas_unet_preset_is_the_papers_recipe_scaled():
    config = training.preset_config("eas_unet", epoch_scale=0.1, data="d", out="o")
    assert (config.model, config.optimizer, config.learning_rate, config.momentum, config.weight_decay,
            config.batch_size, config.crop_size, config.epochs) == ("eas_unet", "sgd", 0.01, 0.9, 1e-4, 32, 256, 5)
    explicit = training.preset_config("eas_unet", epoch_scale=0.1, data="d", out="o", epochs=7, batch_size=4,
                                      model="unet", seed=None)
    assert (explicit.epochs, explicit.batch_size, explicit.model, explicit.seed) == (7, 4, "unet", 0)
    optimizer = training.make_optimizer(config, steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.9 and optimizer.weight_decay == pytest.approx(1e-4)
    assert training.preset_config(None, data="d", out="o").optimizer == "adam"
    with pytest.raises(ValueError, match="preset"):
        training.preset_config("unet_pp", data="d", out="o")


def test_deep_supervision_loss_is_fused_plus_weighted_sides(tiny_prepared, tmp_path):
    config = training.preset_config("eas_unet", epoch_scale=0.02, data=str(tiny_prepared), out=str(tmp_path),
                                    base_filters=4, batch_size=4, crop_size=32, side_weight=0.25)
    model = training.train(config, log=lambda _: None)
    assert model.output_names == ["fused", "side_1", "side_2", "side_3", "side_4"]
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == 1
    for row in rows:
        sides = sum(float(row[f"side_{i}_loss"]) for i in range(1, 5))
        assert float(row["loss"]) == pytest.approx(float(row["fused_loss"]) + 0.25 * sides, rel=1e-4)
    assert "fused_mean_iou" in rows[0] and "side_1_mean_iou" not in rows[0]
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(reloaded(x)[0]), np.asarray(model(x)[0]), atol=1e-6)


def test_attention_outputs_are_not_trained():
    model = unet_transformer.build_model("mhsa", num_classes=2, base_filters=4, heads=2, return_attention=True)
    with pytest.raises(ValueError, match="return_attention"):
        training.output_weights(model, 0.4)


def _bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.BatchNormalization(momentum=0.9)(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_fused_batch_norm_trains_exactly_like_keras(precision):
    import tensorflow as tf

    keras.config.set_dtype_policy(precision)
    try:
        plain, fused = _bn_model(), _bn_model()
    finally:
        keras.config.set_dtype_policy("float32")
    fused.set_weights(plain.get_weights())
    config = fused.get_config()
    assert batch_norm.fuse_batch_norm(fused) == 1
    assert fused.get_config() == config  # nothing of the saved model changes
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 5, 3)).astype("float32")
    results = []
    for model in (plain, fused):
        with tf.GradientTape() as tape:
            y = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(y**2)
        grads = tape.gradient(loss, model.trainable_variables)
        results.append((y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in model.layers[1].weights],
                        model(x, training=False).numpy()))
    tolerance = 1e-5 if precision == "float32" else 1e-2
    (y_a, g_a, w_a, inf_a), (y_b, g_b, w_b, inf_b) = results
    np.testing.assert_allclose(y_b, y_a, rtol=tolerance, atol=tolerance)
    for a, b in zip(g_a, g_b):
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)
    for a, b in zip(w_a, w_b):  # gamma, beta and the moving mean and (biased) variance
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(w_b[3], 1.0)  # the moving variance did move
    np.testing.assert_allclose(inf_b, inf_a, rtol=tolerance, atol=tolerance)


def test_fused_batch_norm_reaches_nested_layers_and_leaves_synchronized_ones_to_keras():
    model = unet_transformer.build_model("u_transformer", input_shape=(32, 32, 1), num_classes=2, base_filters=4,
                                         heads=2)
    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norm.fuse_batch_norm(model) == len(bns) > 18  # 18 backbone + 3 in each MHCA
    assert all(isinstance(layer.call, batch_norm._FusedBatchNormCall) for layer in bns)
    layer = bns[0]
    layer.synchronized = True
    assert not layer.call._fusable(np.zeros((1, 4, 4, 4), "float32"), True, None)
