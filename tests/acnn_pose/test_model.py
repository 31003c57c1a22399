import dataclasses
import inspect
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import acnn_pose
from tests import helpers
from tests.references import pytorch_init

SHAPE_CASES = [
    # (build_model kwargs, input shape, prediction shape, number of masks)
    (dict(input_shape=(64, 64, 3), num_stacks=2, base_filters=16), (2, 64, 64, 3), (2, 16, 16, 16), 1),
    (dict(input_shape=(None, None, 3), num_stacks=3, base_filters=16), (1, 64, 128, 3), (1, 16, 32, 16), 2),
    (dict(input_shape=(128, 64, 1), num_stacks=1, num_joints=5, base_filters=16), (1, 128, 64, 1), (1, 32, 16, 5), 0),
    (dict(input_shape=(64, 64, 3), num_stacks=2, base_filters=24, attention=False), (1, 64, 64, 3), (1, 16, 16, 16), 0),
]


@pytest.mark.parametrize("kwargs, in_shape, pred_shape, num_masks", SHAPE_CASES)
def test_outputs_are_named_predictions_then_masks(kwargs, in_shape, pred_shape, num_masks):
    model = acnn_pose.build_model(**kwargs)
    stacks = kwargs["num_stacks"]
    assert model.output_names == [f"prediction_{i}" for i in range(1, stacks + 1)] + \
        [f"mask_{i}" for i in range(1, num_masks + 1)]
    outputs = model(np.random.rand(*in_shape).astype("float32"))
    outputs = outputs if isinstance(outputs, list) else [outputs]  # Keras unwraps a single output
    for output in outputs[:stacks]:
        assert output.shape == pred_shape
    for mask in outputs[stacks:]:
        assert mask.shape == (*pred_shape[:3], 1)
        assert 0.0 <= float(np.min(mask)) and float(np.max(mask)) <= 1.0


ILL_CASES = [
    (dict(input_shape=(100, 100, 3)), "input_shape"),
    (dict(input_shape=(256, 256)), "input_shape"),
    (dict(num_stacks=0), "num_stacks"),
    (dict(num_joints=0), "num_joints"),
    (dict(base_filters=20), "base_filters"),
    (dict(base_filters=True), "base_filters"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        acnn_pose.build_model(**kwargs)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_four_stack_hourglass_parameter_count():
    plain = acnn_pose.build_model(attention=False)
    acnn = acnn_pose.build_model(attention=True)
    mask_heads = sum(layer.count_params() for layer in acnn.layers if layer.name.startswith("mask_"))
    gates = sum(layer.count_params() for layer in acnn.layers if isinstance(layer, acnn_pose.AttentionMaskGate))
    merges = sum(layer.count_params() for layer in plain.layers if layer.name.startswith("merge_"))
    print(f"4-stack hourglass: {plain.count_params():,} parameters ({_trainable(plain):,} trainable), "
          f"merges {merges:,}; ACNN: {acnn.count_params():,}, mask heads {mask_heads:,}")
    assert abs(plain.count_params() - 12.9e6) <= 0.005 * 12.9e6  # SPEC: Newell's 4-stack has ~12.9M weights
    assert merges == 3 * ((256 * 256 + 256) + (16 * 256 + 256))  # fc' and score' between the 4 stacks
    assert acnn.count_params() == plain.count_params() + mask_heads + gates
    assert gates == 3  # one non-trainable switch per gate
    assert plain.output_shape == [(None, 64, 64, 16)] * 4  # 256x256 in, K x 64 x 64 out (section 3.1)


@pytest.mark.parametrize("attention", [True, False])
def test_batch_norm_has_torch_epsilon_and_momentum(attention):
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16, attention=attention)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 30  # the Residuals' own, inside the hourglasses, included
    assert {(n.epsilon, n.momentum) for n in norms} == {(1e-5, 0.9)}  # Torch's eps 1e-5, momentum 0.1


def test_plain_hourglass_merges_input_features_and_heatmaps():
    """Newell's stacking: X_2 = X_1 + fc'(F_1) + score'(H_1), and the plain model has no gate."""
    keras.utils.set_random_seed(3)
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16, attention=False)
    assert not any(isinstance(layer, acnn_pose.AttentionMaskGate) for layer in model.layers)
    names = ["stem_res3", "stage_1_fc_relu", "heatmap_1", "merge_1"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    x1, f1, h1, x2 = (np.asarray(t) for t in probe(np.random.default_rng(0).random((1, 64, 64, 3), "float32")))
    expected = x1 + np.asarray(model.get_layer("merge_features_1")(f1)) + np.asarray(
        model.get_layer("merge_heatmaps_1")(h1))
    np.testing.assert_allclose(x2, expected, rtol=1e-5, atol=1e-5)
    assert model.get_layer("hourglass_2").input is model.get_layer("merge_1").output


@pytest.fixture(scope="module")
def acnn():
    keras.utils.set_random_seed(1)
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=3, base_filters=16)
    for stage in (1, 2):  # spread the masks over (0, 1) so eq. 4 is tested away from M = 1
        logits = model.get_layer(f"mask_{stage}_logits")
        logits.kernel.assign(np.random.default_rng(stage).normal(0, 3, logits.kernel.shape).astype("float32"))
        logits.bias.assign(np.zeros(1, "float32"))
    return model


def test_equation_4_holds_on_the_outputs(acnn):
    names = [f"heatmap_{i}" for i in (1, 2, 3)] + [f"merge_{i}" for i in (1, 2)] + ["gate_1", "gate_2"]
    probe = keras.Model(acnn.input, [acnn.get_layer(n).output for n in names[:5]]
                        + [acnn.get_layer(n).output[0] for n in names[5:]] + acnn.outputs)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    h1, h2, h3, n1, n2, x2, x3, p1, p2, p3, m1, m2 = (np.asarray(t) for t in probe(x))
    assert 0.05 < m1.min() and m1.max() < 0.95 or m1.std() > 0.05  # masks are not trivially constant
    np.testing.assert_array_equal(p1, h1)
    np.testing.assert_allclose(p2, h2 + p1 * (1 - m1), rtol=1e-5, atol=1e-6)  # eq. 4
    np.testing.assert_allclose(p3, h3 + p2 * (1 - m2), rtol=1e-5, atol=1e-6)
    # eq. 1 on Newell's merge: X_{i+1} = (X_i + fc'(F_i) + score'(H_i)) * M_i
    np.testing.assert_allclose(x2, n1 * m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x3, n2 * m2, rtol=1e-5, atol=1e-6)


def test_mixed_precision_outputs_float32():
    with helpers.dtype_policy("mixed_float16"):
        model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
        outputs = model(np.random.rand(1, 64, 64, 3).astype("float32"))
    assert model.get_layer("hourglass_1").compute_dtype == "float16"
    assert [keras.ops.dtype(o) for o in outputs] == ["float32"] * 3


def test_reloads_in_a_fresh_process(acnn, tmp_path):
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "expected.npz", *[np.asarray(o) for o in acnn(x)])
    acnn.get_layer("gate_2").force_ones = True  # the switch's state is saved with the weights
    np.savez(tmp_path / "forced.npz", *[np.asarray(o) for o in acnn(x)])
    try:
        acnn.save(tmp_path / "acnn.keras")
    finally:
        acnn.get_layer("gate_2").force_ones = False
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import acnn_pose
        root = {str(tmp_path)!r}
        model = keras.models.load_model(root + "/acnn.keras")
        x = np.load(root + "/x.npy")
        for name in ("forced", "expected"):
            expected = np.load(f"{{root}}/{{name}}.npz")
            for i, output in enumerate(model(x)):
                np.testing.assert_allclose(np.asarray(output), expected[f"arr_{{i}}"], rtol=1e-5, atol=1e-6)
            model.get_layer("gate_2").force_ones = False
        print("reloaded", model.output_names)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reloaded ['prediction_1', 'prediction_2', 'prediction_3', 'mask_1', 'mask_2']" in done.stdout


def test_every_convolution_starts_as_pytorch_initialises_it():
    """Newell's code is PyTorch's: U(+-1/sqrt(fan_in)) weights and biases, but for the two documented choices."""
    model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=32)
    heatmaps = [w for w in model.weights if w.path.startswith("heatmap_")]
    mask_biases = [w for w in model.weights if w.path.startswith("mask_") and w.path.endswith("logits/bias")]
    exempt = {w.path for w in heatmaps + mask_biases}
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    checked = sum(pytorch_init.check_layer(layer, exempt) for layer in convs)
    assert checked == 2 * len(convs) - len(exempt)
    for w in heatmaps:  # HRNet's normal(std=0.001) kernels and zero biases (acnn_pose.model.HEATMAP_STDDEV)
        values = np.asarray(w)
        assert (values == 0).all() if w.path.endswith("bias") else 0.0007 < values.std() < 0.0013
    assert [float(np.asarray(w)[0]) for w in mask_biases] == [2.0]  # MASK_BIAS_INIT


DEPRECATED = r"^build_model: features is deprecated and goes in the next release; use base_filters$"


def test_features_is_base_filters_old_name_for_one_release():
    with pytest.warns(DeprecationWarning, match=DEPRECATED) as caught:
        model = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=1, features=8)
    assert [warning.filename for warning in caught] == [__file__]  # it points at the caller's line
    assert model.arguments == dict(input_shape=[64, 64, 3], num_stacks=1, num_joints=16, base_filters=8)
    with pytest.warns(DeprecationWarning, match=DEPRECATED), pytest.raises(ValueError, match=(
            r"^features: the deprecated name of base_filters; give base_filters only, got base_filters=16 and "
            r"features=8$")):
        acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=1, base_filters=16, features=8)


def test_defaults_are_the_papers_recipe():
    defaults = inspect.signature(acnn_pose.build_model).parameters
    recipe = acnn_pose.RECIPE
    assert (defaults["num_stacks"].default, defaults["base_filters"].default, defaults["input_shape"].default) == \
        (recipe.num_stacks, recipe.base_filters, (recipe.input_size, recipe.input_size, 3)) == (4, 256, (256, 256, 3))
    assert recipe.batch_size == 12  # section 3.3
    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1, got 0$"):
        dataclasses.replace(recipe, batch_size=0)
    # What a `model.fit` user needs to train as the paper did (acnn_pose.staged's docstring runs it).
    assert {"RECIPE", "STAGES", "build_model", "configure_stage", "stacked_mse", "training_model"} <= \
        set(acnn_pose.__all__)


def test_files_saved_before_the_rename_still_load(tmp_path):
    """A file recording ``features`` (saved by the zoo of f6a2d43) and one recording no builder (tests/data/legacy)."""
    from common import registry
    from common.nn.built import BuiltModel

    keras.utils.set_random_seed(0)
    made = acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=1, base_filters=8, attention=False)
    old = dict(input_shape=[64, 64, 3], num_stacks=1, num_joints=16, features=8)  # what that zoo recorded
    BuiltModel("hourglass", old, inputs=made.inputs, outputs=made.outputs, name="hourglass").save(
        tmp_path / "old.keras")
    with pytest.warns(DeprecationWarning, match=DEPRECATED):  # re-save it to record base_filters
        loaded, _ = registry.load_run(tmp_path / "old.keras")
    assert loaded.arguments["base_filters"] == 8 and registry.entry_of(loaded).name == "hourglass"
    for got, want in zip(loaded.weights, made.weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    legacy, _ = registry.load_run(helpers.ROOT / "tests" / "data" / "legacy" / "hourglass.keras")
    assert legacy.output_names == ["prediction_1"] and legacy.get_layer("stem_res3").output.shape[-1] == 8
