import keras
import numpy as np
import pytest

from acnn_pose import AttentionMaskGate, Hourglass, Residual, StagePrediction

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.random(shape, dtype=np.float32)


@pytest.mark.parametrize("filters, in_shape, has_skip", [(8, (2, 8, 8, 8), False), (8, (1, 4, 6, 3), True),
                                                         (16, (1, 8, 8, 32), True)])
def test_residual_shapes_and_skip(filters, in_shape, has_skip):
    layer = Residual(filters)
    y = layer(_x(*in_shape))
    assert y.shape == (*in_shape[:-1], filters)
    assert (layer.skip is not None) == has_skip
    # Pre-activation bottleneck: three convs C/2, C/2, C.
    assert [c.filters for c in layer.convs] == [filters // 2, filters // 2, filters]
    assert [c.kernel_size for c in layer.convs] == [(1, 1), (3, 3), (1, 1)]


def test_residual_identity_skip_passes_the_input():
    layer = Residual(4)
    x = _x(1, 4, 4, 4)
    layer(x)
    for conv in layer.convs:  # zero the residual branch: y = x exactly
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
        conv.bias.assign(np.zeros(conv.bias.shape, "float32"))
    np.testing.assert_array_equal(np.asarray(layer(x)), x)


@pytest.mark.parametrize("depth, size", [(1, 4), (2, 8), (4, 16), (4, 32)])
def test_hourglass_keeps_shape_at_every_depth(depth, size):
    layer = Hourglass(8, depth=depth)
    assert layer(_x(2, size, size, 8)).shape == (2, size, size, 8)
    assert len(layer.up) == len(layer.down) == len(layer.after) == depth  # 3 residuals per level + bottom


def test_hourglass_is_recursive_pool_residual_upsample_add():
    # With every residual the identity (zero branches), level d returns x + up(pool(x)) recursively:
    # depth 1 on a constant input gives 2x.
    layer = Hourglass(4, depth=1)
    x = np.ones((1, 4, 4, 4), "float32")
    layer(x)
    for block in [*layer.up, *layer.down, *layer.after, layer.bottom]:
        for conv in block.convs:
            conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
            conv.bias.assign(np.zeros(conv.bias.shape, "float32"))
    np.testing.assert_allclose(np.asarray(layer(x)), 2 * x)


ILL_LAYERS = [
    (lambda: Residual(0), "filters"),
    (lambda: Residual(7), "filters"),
    (lambda: Hourglass(8, depth=0), "depth"),
    (lambda: Hourglass(8)(_x(1, 16, 16, 4)), "channels"),
    (lambda: AttentionMaskGate()([_x(1, 4, 4, 8), _x(1, 4, 4, 2)]), "one channel"),
]


@pytest.mark.parametrize("make, message", ILL_LAYERS)
def test_bad_layer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_gate_multiplies_every_channel_by_the_mask():
    features, mask = _x(2, 4, 4, 6), _x(2, 4, 4, 1)
    gated, used = AttentionMaskGate()([features, mask])
    np.testing.assert_allclose(np.asarray(gated), features * mask, rtol=1e-6)  # eq. 1, broadcast over C
    np.testing.assert_array_equal(np.asarray(used), mask)


def test_gate_switch_forces_exact_ones_and_back():
    gate = AttentionMaskGate()
    features, mask = _x(1, 4, 4, 3), _x(1, 4, 4, 1) * 0.5
    gate([features, mask])
    gate.force_ones = True
    assert gate.force_ones and float(gate.force.numpy()) == 1.0
    gated, used = gate([features, mask])
    assert np.all(np.asarray(used) == 1.0)
    np.testing.assert_array_equal(np.asarray(gated), features)
    gate.force_ones = False
    np.testing.assert_array_equal(np.asarray(gate([features, mask])[1]), mask)
    assert not gate.trainable_weights  # the switch is state, not a parameter


def test_stage_prediction_is_equation_4():
    h, p, m = _x(2, 4, 4, 5), _x(2, 4, 4, 5), _x(2, 4, 4, 1)
    np.testing.assert_allclose(np.asarray(StagePrediction()([h, p, m])), h + p * (1 - m), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(StagePrediction()([h])), h)


def test_layers_roundtrip_their_config():
    for layer in (Residual(8, name="r"), Hourglass(8, depth=3, name="h"), AttentionMaskGate(True, name="g"),
                  StagePrediction(name="p")):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(Hourglass) == "acnn_pose>Hourglass"
