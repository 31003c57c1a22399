"""A built model's renamed output answers to its old name for one release, with a warning naming the new one."""

import warnings

import keras
import numpy as np
import pytest

import eas_unet


def test_the_old_name_of_a_renamed_output_still_trains_with_a_deprecation_warning():
    model = eas_unet.build_model(input_shape=(32, 32, 1), num_classes=2, base_filters=2)
    assert model.output_names[0] == "probabilities"
    with pytest.warns(DeprecationWarning, match="output 'fused' is named 'probabilities' now"):
        model.compile(optimizer="sgd", loss={"fused": "mse", **{f"side_{i}": "mse" for i in range(1, 5)}},
                      loss_weights={"fused": 1.0, **{f"side_{i}": 0.4 for i in range(1, 5)}}, run_eagerly=True)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    y = {name: np.full((2, 32, 32, 2), 0.5, np.float32) for name in ["fused", *(f"side_{i}" for i in range(1, 5))]}
    with pytest.warns(DeprecationWarning, match="'fused'"):
        logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and "probabilities_loss" in logs
    with pytest.warns(DeprecationWarning, match="'fused'"):
        assert model.get_layer("fused") is model.get_layer("probabilities")


def test_a_compiled_file_loads_compiled(tmp_path):
    model = eas_unet.build_model(input_shape=(32, 32, 1), num_classes=2, base_filters=2, deep_supervision=False)
    model.compile(optimizer="sgd", loss="mse")
    model.save(tmp_path / "compiled.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns and leaves it uncompiled where compile is overridden alone
        loaded = keras.models.load_model(tmp_path / "compiled.keras")
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.SGD) and loaded.optimizer.built


def test_todays_names_warn_of_nothing():
    model = eas_unet.build_model(input_shape=(32, 32, 1), num_classes=2, base_filters=2, deep_supervision=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model.compile(optimizer="sgd", loss={"probabilities": "mse"})
        assert model.get_layer("probabilities").name == "probabilities"
