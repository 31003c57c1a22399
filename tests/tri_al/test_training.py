"""Training one TRI-CNN (tri_al/training.py): the original's optimizer, the round's fresh state, the metrics."""

import dataclasses

import keras
import numpy as np
import pytest

from tri_al import training

TRAIN = training.TrainConfig(learning_rate=1e-3, momentum=0.9, batch_size=16, epochs=1)


def test_class_metrics_f1_fnr_micro_macro():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 2, 0, 3, 3])
    m = training.class_metrics(y_true, y_pred, 5)
    np.testing.assert_allclose(m["f1"], [2 * 2 / (4 + 1 + 1), 2 * 2 / (4 + 1), 2 * 2 / (4 + 2), 2 / 3, 0.0])
    np.testing.assert_allclose(m["fnr"], [1 / 3, 0, 0.5, 0, 0])
    assert m["micro_f1"] == pytest.approx(0.7)  # single-label: micro F1 is accuracy
    assert m["macro_f1"] == pytest.approx(np.mean(m["f1"]))


def test_training_defaults_are_the_papers_and_the_original_codes():
    config = training.TrainConfig()
    assert (config.learning_rate, config.patience) == (1.5e-4, 5)  # paper III
    assert (config.momentum, config.nesterov, config.decay, config.batch_size) == (0.9, True, 1e-6, 128)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_follows_keras_2_sgd_with_decay_momentum_and_nesterov(nesterov):
    """The original's ``SGD(lr, decay, momentum=0.9, nesterov)`` of Keras 2, transcribed in NumPy."""
    lr, decay, momentum = 0.1, 0.05, 0.9  # a decay large enough to show in five steps
    optimizer = training.sgd(training.TrainConfig(learning_rate=lr, decay=decay, momentum=momentum,
                                                  nesterov=nesterov))
    w = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32))
    grads = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for t, g in enumerate(grads):
        optimizer.apply([keras.ops.convert_to_tensor(g)], [w])
        lr_t = lr / (1.0 + decay * t)  # Keras 2: the step count before this update
        v = momentum * v - lr_t * g
        expected = expected + (momentum * v - lr_t * g if nesterov else v)
        np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=0.0), "learning_rate must be > 0, got 0.0"),
    (dict(learning_rate=float("nan")), "learning_rate must be > 0, got nan"),
    (dict(momentum=1.0), "momentum must lie in [0, 1), got 1.0"), (dict(decay=-1e-6), "decay must be >= 0, got -1e-06"),
    (dict(batch_size=0), "batch_size must be >= 1, got 0"), (dict(patience=0), "patience must be >= 1, got 0"),
    (dict(epochs=float("nan")), "epochs must be >= 1, got nan"),
    (dict(stain_augment=-0.05), "stain_augment (HED jitter sigma) must lie in [0, 1), got -0.05"),
    (dict(stain_augment=1.0), "stain_augment (HED jitter sigma) must lie in [0, 1), got 1.0"),
])
def test_bad_training_configuration(kwargs, message):
    """One ValueError naming the field, in ``common.train.recipe.Recipe.validate``'s words."""
    with pytest.raises(ValueError) as raised:
        training.TrainConfig(**kwargs)
    assert str(raised.value) == message


def test_each_round_restarts_the_momenta_and_the_decay_step_count():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    x, y = np.random.default_rng(1).random((8, 3), dtype=np.float32), np.array([0, 1] * 4)
    training._fresh_optimizer(model, TRAIN)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2 and any(np.abs(np.asarray(v)).sum() > 0
                                                        for v in model.optimizer.variables[1:])
    compiled = model.optimizer
    training._fresh_optimizer(model, TRAIN)  # the next round: same optimizer object, state back to zero
    assert model.optimizer is compiled and int(model.optimizer.iterations) == 0
    assert all(not np.asarray(v).any() for v in model.optimizer.variables)
    # The model itself says what it was compiled for: other settings, or a compile elsewhere, compile again.
    training._fresh_optimizer(model, dataclasses.replace(TRAIN, learning_rate=2e-3))
    assert model.optimizer is not compiled and float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    model.compile("adam", "sparse_categorical_crossentropy")
    training._fresh_optimizer(model, TRAIN)
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.loss == training.LOSS


def test_fresh_logs_start_an_empty_folder_or_none(tmp_path):
    stale = tmp_path / "logs" / "train" / "events.out.tfevents.killed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a try killed mid-epoch")
    made = training.fresh_logs(tmp_path / "logs", training.epoch_logs)
    assert not (tmp_path / "logs").exists()  # the callbacks write once training starts
    assert [type(c).__name__ for c in made] == ["EpochHistory", "TensorBoard"] and all(c.async_safe for c in made)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"kept")
    assert training.fresh_logs(tmp_path / "logs", None) == [] and stale.read_bytes() == b"kept"  # no logs asked for
