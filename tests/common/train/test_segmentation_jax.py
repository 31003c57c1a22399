"""``KERAS_BACKEND=jax zoo train``: tf.data feeds Keras on JAX, the recipe compiles, the run folder is complete."""

import csv
import json
import math

import keras
import numpy as np


def test_zoo_train_under_jax_writes_a_model_and_a_finite_loss(tiny_prepared, tmp_path, zoo):
    out = tmp_path / "run"
    # 3 training cases of 12 slices in tiny_prepared: batches of 18 make the epoch 2 steps, run as one execution.
    done = zoo("train", tiny_prepared, out, "--base-filters", "2", "--batch-size", "18", "--crop-size", "64",
               "--epochs", "1", "--steps-per-execution", "2",
               env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                    "XLA_FLAGS": "--xla_backend_optimization_level=0"})  # tiny model: LLVM passes are its compile
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 step(s) per execution, jax" in done.stdout
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"])) and float(rows[0]["loss"]) > 0
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["steps_per_execution"] == 2 and config["precision"] == "float32"
    model = keras.models.load_model(out / "model.keras", compile=False)  # trained on JAX, loaded on TensorFlow
    x = np.zeros((1, 64, 64, 1), np.float32)
    assert model(x).shape == (1, 64, 64, config["num_classes"])
