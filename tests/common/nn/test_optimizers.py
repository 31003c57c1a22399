"""Tests of common.nn.optimizers: each rule against a NumPy transcription of the framework's documented update."""

import keras
import numpy as np
import pytest

from common.nn.optimizers import TorchRMSprop, TorchSGD

STEPS = 7
SHAPES = [(3,), (2, 4)]
LEARNING_RATES = [1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 1e-3, 1e-3]  # a schedule's drops between steps


def _problem(seed=0, scale=1.0):
    """Initial weights and one gradient per step and variable, of mixed signs and sizes."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=s).astype("float32") for s in SHAPES]
    grads = [[(scale * rng.normal(size=s) * 10.0 ** rng.uniform(-2, 0, s)).astype("float32") for s in SHAPES]
             for _ in range(STEPS)]
    return weights, grads


def _run_keras(optimizer, weights, grads):
    variables = [keras.Variable(w) for w in weights]
    for lr, step in zip(LEARNING_RATES, grads):
        optimizer.learning_rate = lr  # as keras.callbacks.LearningRateScheduler sets it
        optimizer.apply([np.asarray(g) for g in step], variables)
    return [v.numpy() for v in variables]


def _torch7_rmsprop(weights, grads, alpha, eps, wd):
    """Torch7 optim.rmsprop: dfdx += wd x; m = alpha m + (1 - alpha) dfdx^2; x -= lr dfdx / (sqrt(m) + eps)."""
    x = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in x]
    for lr, step in zip(LEARNING_RATES, grads):
        for i, g in enumerate(step):
            g = g.astype(np.float64) + wd * x[i]
            m[i] = alpha * m[i] + (1 - alpha) * g * g
            x[i] = x[i] - lr * g / (np.sqrt(m[i]) + eps)
    return x


def _pytorch_sgd(weights, grads, momentum, wd, nesterov):
    """torch.optim.SGD (dampening 0): d = g + wd w; buf = d at the first step, else momentum buf + d."""
    x = [w.astype(np.float64) for w in weights]
    buf = [None] * len(x)
    for lr, step in zip(LEARNING_RATES, grads):
        for i, g in enumerate(step):
            d = g.astype(np.float64) + wd * x[i]
            if momentum:
                buf[i] = d.copy() if buf[i] is None else momentum * buf[i] + d
                d = d + momentum * buf[i] if nesterov else buf[i]
            x[i] = x[i] - lr * d
    return x


@pytest.mark.parametrize("rho, epsilon, weight_decay, scale", [
    (0.99, 1e-8, 0.0, 1.0),    # Torch7's defaults, Newell's and ACNN's constants
    (0.9, 1e-6, 1e-2, 1.0),
    (0.99, 1e-8, 0.0, 1e-5),   # small gradients: where Keras' rule differs most
])
def test_torch_rmsprop_matches_torch7_rule(rho, epsilon, weight_decay, scale):
    weights, grads = _problem(scale=scale)
    got = _run_keras(TorchRMSprop(rho=rho, epsilon=epsilon, weight_decay=weight_decay), weights, grads)
    for g, e in zip(got, _torch7_rmsprop(weights, grads, rho, epsilon, weight_decay)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize("momentum, weight_decay, nesterov", [
    (0.9, 1e-4, False),   # the EAS U-Net's SGD
    (0.9, 0.05, False),
    (0.9, 0.05, True),    # TRI-CNN's Nesterov momentum
    (0.0, 0.05, False),
])
def test_torch_sgd_matches_pytorch_rule(momentum, weight_decay, nesterov):
    weights, grads = _problem(seed=1)
    got = _run_keras(TorchSGD(momentum=momentum, weight_decay=weight_decay, nesterov=nesterov), weights, grads)
    for g, e in zip(got, _pytorch_sgd(weights, grads, momentum, weight_decay, nesterov)):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def _max_gap(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_torch_rmsprop_differs_from_keras_rule_on_small_gradients():
    weights, grads = _problem(scale=1e-5)
    torch = _run_keras(TorchRMSprop(rho=0.99, epsilon=1e-8), weights, grads)
    keras_rule = _run_keras(keras.optimizers.RMSprop(rho=0.99, epsilon=1e-8), weights, grads)
    moved_torch, moved_keras = _max_gap(torch, weights), _max_gap(keras_rule, weights)
    # Keras' sqrt(v + 1e-8) >= 1e-4 caps the step near lr * g / 1e-4; Torch's is ~10 lr at the first step.
    assert moved_torch > 0.02 and moved_keras < 0.1 * moved_torch, (moved_torch, moved_keras)


def test_torch_sgd_differs_from_keras_decoupled_decay():
    weights, grads = _problem(seed=1)
    torch = _run_keras(TorchSGD(momentum=0.9, weight_decay=0.05), weights, grads)
    keras_rule = _run_keras(keras.optimizers.SGD(momentum=0.9, weight_decay=0.05), weights, grads)
    expected = _pytorch_sgd(weights, grads, 0.9, 0.05, False)
    assert _max_gap(keras_rule, expected) > 1e-3  # Keras' decoupled decay is another rule
    assert _max_gap(torch, expected) < 1e-6


@pytest.mark.parametrize("optimizer", [TorchRMSprop(2.5e-4, weight_decay=1e-4), TorchSGD(0.1, 0.9, 1e-4, True)])
def test_compiles_fits_and_round_trips_through_serialization(optimizer, tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras").optimizer
    assert type(restored) is type(optimizer)
    assert restored.get_config() == optimizer.get_config()
    assert restored.get_config()["weight_decay"] == 1e-4  # the coupled decay, not Keras' decoupled one


@pytest.mark.parametrize("build, argument", [
    (lambda: TorchRMSprop(rho=1.5), "rho"),
    (lambda: TorchRMSprop(epsilon=-1.0), "epsilon"),
    (lambda: TorchSGD(momentum=-0.1), "momentum"),
    (lambda: TorchSGD(weight_decay=-1e-4), "weight_decay"),
    (lambda: TorchSGD(nesterov=True), "nesterov"),
])
def test_bad_arguments_name_themselves(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()
