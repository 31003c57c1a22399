"""Every model on Keras' JAX backend: same weights, same outputs, no TensorFlow, a training step that moves them.

The models are built and saved under TensorFlow here; two subprocesses with
``KERAS_BACKEND=jax`` load each ``.keras`` file (the same configuration
rebuilt under JAX, with the TensorFlow-trained weights), compare its outputs
to TensorFlow's, load the plain ``.weights.h5`` file as well, and check that
TensorFlow was never imported (SPEC, "backend-agnostic models"). Each model
then takes one training step, with the papers' PyTorch rules where the zoo has
one (``TorchSGD`` for the EAS U-Net, ``TorchRMSprop`` for ACNN), and must
change its outputs; the plain U-Net, the hourglass, MHSA and MHCA variants are
checked forward only, since every layer they have trains in the attention U-Net,
ACNN or the U-Transformer. One
process also checks the U-Transformer's JAX attention kernels
(``keras.ops.dot_product_attention``, whole and in query blocks) against
eq. 1 op by op, outputs and gradients.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# name -> (build expression, input shapes); every model and variant of the four packages, tiny.
MODELS = {
    "unet": ("unet_transformer.build_model('unet', num_classes=3, base_filters=4)", [(2, 32, 32, 1)]),
    "attention_unet": ("unet_transformer.build_model('attention_unet', num_classes=3, base_filters=4)",
                       [(2, 32, 32, 1)]),
    "mhsa": ("unet_transformer.build_model('mhsa', num_classes=3, base_filters=4, heads=2)", [(2, 32, 32, 1)]),
    "mhca": ("unet_transformer.build_model('mhca', num_classes=3, base_filters=4, heads=2)", [(2, 32, 32, 1)]),
    "u_transformer": ("unet_transformer.build_model('u_transformer', num_classes=3, base_filters=4, heads=2)",
                      [(2, 32, 32, 1)]),
    "eas_unet": ("eas_unet.build_model(num_classes=3, base_filters=4)", [(2, 32, 32, 1)]),
    "hourglass": ("acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16, attention=False)",
                  [(2, 64, 64, 3)]),
    "acnn": ("acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)", [(2, 64, 64, 3)]),
    "tri_cnn": ("tri_al.build_model(tile_size=32, base_filters=4, head_units=16)", [(2, 32, 32, 3)] * 3),
}
# Relative JAX compile times, measured, so that the two processes below take about as long.
COMPILE_WEIGHT = {"acnn": 3, "eas_unet": 3, "u_transformer": 2, "attention_unet": 2, "hourglass": 0.5, "mhca": 0.5,
                  "unet": 0.5}
SEGMENTATION = {"unet", "attention_unet", "mhsa", "mhca", "u_transformer", "eas_unet"}
# The training step's optimizer: the papers' PyTorch rules where the zoo has one (Adam trains under JAX in test_recipe).
OPTIMIZERS = {"eas_unet": "optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=1e-4)",
              "acnn": "optimizers.TorchRMSprop(2.5e-4)"}
# Forward only: their layers all train in the model named (a training step's compile is most of this file's time);
# the plain U-Net trains under JAX in tests/common/train (test_recipe without TensorFlow, test_segmentation_jax).
FORWARD_ONLY = {"hourglass": "acnn", "mhsa": "u_transformer", "mhca": "u_transformer", "unet": "attention_unet"}
IMPORTS = "import acnn_pose, eas_unet, tri_al, unet_transformer"

JAX_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    {imports}
    from common.nn import optimizers
    from common.nn.losses import CEDiceLoss

    assert keras.backend.backend() == "jax", keras.backend.backend()


    def attention_check():
        """Each JAX attention kernel against eq. 1 op by op (the layers' attention before dot_product_attention):
        outputs and gradients, as the largest |got - expected| / (1e-5 + 1e-5 |expected|) (<= 1: equal to 1e-5)."""
        import jax
        import jax.numpy as jnp
        from unet_transformer import ops as attention_ops

        rng = np.random.default_rng(0)
        q, k, v = (rng.normal(size=(1, n, 2, 4)).astype("float32") for n in (40, 24, 24))  # 2 heads of 4

        def todays(q, k, v):  # softmax(Q / sqrt(d_k) K^T) V per head, (B, N, h, d) layout
            q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
            attention = jax.nn.softmax((q / 2.0) @ jnp.swapaxes(k, -1, -2), axis=-1)
            return jnp.transpose(attention @ v, (0, 2, 1, 3))

        weights = jnp.asarray(np.arange(40 * 2 * 4).reshape(1, 40, 2, 4) % 5 - 2.0, "float32")

        def value_and_gradients(f):
            gradients = jax.jit(jax.grad(lambda *t: jnp.sum(f(*t) * weights), argnums=(0, 1, 2)))(q, k, v)
            return [f(q, k, v), *gradients]

        expected = value_and_gradients(todays)
        kernels = dict(fused=lambda *t: attention_ops.fused_attention(*t, 0.5),
                       blocked=lambda *t: attention_ops.blocked_attention(*t, 0.5, block=16))  # 2 blocks, 1 padded
        result = dict()
        for name, kernel in kernels.items():
            got = value_and_gradients(kernel)
            result[f"attention_{{name}}"] = max(float((np.abs(np.asarray(g) - np.asarray(e))
                                                     / (1e-5 + 1e-5 * np.abs(np.asarray(e)))).max())
                                              for g, e in zip(got, expected))
        half = attention_ops.fused_attention(*(t.astype("float16") for t in (q, k, v)), 0.5)  # mixed precision
        result["attention_float16"] = dict(dtype=str(half.dtype), difference=float(
            np.abs(np.asarray(half, "float32") - np.asarray(expected[0])).max()))
        return result


    def predict(model, x):  # one jitted forward pass, its outputs as a list
        y = model.predict_on_batch(x)
        return list(y) if isinstance(y, (list, tuple)) else [y]


    def largest_difference(a, b):
        return max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in zip(a, b))


    folder, models = sys.argv[1], json.loads(sys.argv[2])
    SEGMENTATION, FORWARD_ONLY, OPTIMIZERS = {segmentation}, {forward_only}, {optimizers}
    report = {{}}
    for name, (build, shapes) in models.items():
        data = np.load(f"{{folder}}/{{name}}.npz")
        inputs = [data[f"input_{{i}}"] for i in range(len(shapes))]
        x = inputs if len(inputs) > 1 else inputs[0]
        # The .keras file saved under TensorFlow: the same config rebuilt here, its weights loaded.
        model = keras.models.load_model(f"{{folder}}/{{name}}.keras", compile=False)
        # One jitted forward pass: compiling it whole takes about half as long as JAX's op-by-op eager call.
        outputs = predict(model, x)
        difference = largest_difference(outputs, [data[f"output_{{i}}"] for i in range(len(outputs))])
        model.load_weights(f"{{folder}}/{{name}}.weights.h5")  # the plain weights file loads as well
        again = predict(model, x)
        reload_difference = largest_difference(again, outputs)
        report[name] = {{"difference": difference, "reload_difference": reload_difference,
                        "dtype": str(outputs[0].dtype)}}
        if name in FORWARD_ONLY:
            continue
        optimizer = eval(OPTIMIZERS.get(name, "keras.optimizers.SGD()"))
        forward = model.predict_function  # compile() drops it: the stepped weights go through the same jitted pass
        rng = np.random.default_rng(0)
        if name in SEGMENTATION:  # the zoo's segmentation loss, keras-only
            classes = outputs[0].shape[-1]
            model.compile(optimizer=optimizer, loss=[CEDiceLoss(num_classes=classes) for _ in outputs])
            targets = [rng.integers(0, classes, outputs[0].shape[:-1])] * len(outputs)
        else:  # heatmaps, masks, class probabilities: one step of mean squared error
            model.compile(optimizer=optimizer, loss=["mse"] * len(outputs))
            targets = [rng.random(o.shape, dtype=np.float32) for o in outputs]
        loss = model.train_on_batch(x, targets)
        report[name]["loss"] = float(np.ravel(loss)[0])
        model.predict_function = forward
        report[name]["step_change"] = largest_difference(predict(model, x), again)  # on the stepped weights
    if sys.argv[3:] == ["attention"]:
        report.update(attention_check())
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    print("REPORT " + json.dumps(report))
''')


@pytest.fixture(scope="module")
def jax_report(tmp_path_factory):
    import keras

    import acnn_pose  # noqa: F401  (the build expressions name the packages)
    import eas_unet  # noqa: F401
    import tri_al  # noqa: F401
    import unet_transformer  # noqa: F401

    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    for name, (build, shapes) in MODELS.items():
        model = eval(build)
        inputs = [rng.random(shape, dtype=np.float32) for shape in shapes]
        outputs = model(inputs if len(inputs) > 1 else inputs[0])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        np.savez(folder / f"{name}.npz", **{f"input_{i}": x for i, x in enumerate(inputs)},
                 **{f"output_{i}": np.asarray(o) for i, o in enumerate(outputs)})
        model.save_weights(folder / f"{name}.weights.h5")
        model.save(folder / f"{name}.keras")
        keras.backend.clear_session()
    # Tiny models compute nothing worth optimising: XLA's LLVM passes are most of their compile time.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    script = JAX_SCRIPT.format(imports=IMPORTS, segmentation=sorted(SEGMENTATION), forward_only=FORWARD_ONLY,
                               optimizers=OPTIMIZERS)
    # Two JAX processes at once, one per core: JAX compiles on one thread.
    names = sorted(MODELS, key=lambda name: -COMPILE_WEIGHT.get(name, 1))
    halves = [{n: MODELS[n] for n in names[0::2]}, {n: MODELS[n] for n in names[1::2]}]
    # The lighter half also checks the attention kernels against the formula (attention_check).
    runs = [subprocess.Popen([sys.executable, "-c", script, str(folder), json.dumps(half), *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
            for half, extra in zip(halves, ([], ["attention"]))]
    report = {"tensorflow_imported": False}
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-4000:]
        line = next(line for line in out.splitlines() if line.startswith("REPORT "))
        part = json.loads(line[len("REPORT "):])
        report["tensorflow_imported"] |= part.pop("tensorflow_imported")
        report.update(part)
    return report


def test_tensorflow_is_not_imported_under_jax(jax_report):
    assert jax_report["tensorflow_imported"] is False


@pytest.mark.parametrize("kernel", ["fused", "blocked"])
def test_jax_attention_equals_the_formula_with_gradients(jax_report, kernel):
    assert jax_report[f"attention_{kernel}"] <= 1.0, jax_report[f"attention_{kernel}"]  # within 1e-5


def test_jax_attention_keeps_float16_values_under_mixed_precision(jax_report):
    result = jax_report["attention_float16"]
    assert result["dtype"] == "float16" and result["difference"] <= 2e-3, result


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jax_matches_tensorflow_and_trains(jax_report, name):
    result = jax_report[name]
    assert result["difference"] <= 1e-4, result
    assert result["reload_difference"] <= 1e-5, result
    if name in FORWARD_ONLY:
        assert "loss" not in result and FORWARD_ONLY[name] in MODELS, result
    else:
        assert np.isfinite(result["loss"]) and result["loss"] > 0, result
        assert np.isfinite(result["step_change"]) and result["step_change"] > 0, result  # the step moved the weights
    assert result["dtype"] == "float32"
