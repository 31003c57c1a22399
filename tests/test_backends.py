"""Every model on Keras' JAX backend: same weights, same outputs, no TensorFlow, a finite training step.

The models are built and saved under TensorFlow here; one subprocess with
``KERAS_BACKEND=jax`` loads each ``.keras`` file (the same configuration
rebuilt under JAX, with the TensorFlow-trained weights), compares its outputs
to TensorFlow's, loads the plain ``.weights.h5`` file as well, takes one
training step, and checks that TensorFlow was never imported (SPEC,
"backend-agnostic models").
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
    "hourglass": ("acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, features=16, attention=False)",
                  [(2, 64, 64, 3)]),
    "acnn": ("acnn_pose.build_model(input_shape=(64, 64, 3), num_stacks=2, features=16)", [(2, 64, 64, 3)]),
    "tri_cnn": ("tri_al.build_model(tile_size=32, width=1 / 16, head_units=16)", [(2, 32, 32, 3)] * 3),
}
# Relative JAX compile times, measured, so that the two processes below take about as long.
COMPILE_WEIGHT = {"acnn": 3, "hourglass": 3, "eas_unet": 3, "mhca": 2, "u_transformer": 2, "attention_unet": 2}
SEGMENTATION = {"unet", "attention_unet", "mhsa", "mhca", "u_transformer", "eas_unet"}
IMPORTS = "import acnn_pose, eas_unet, tri_al, unet_transformer"

JAX_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    {imports}
    from common.nn.losses import CEDiceLoss

    assert keras.backend.backend() == "jax", keras.backend.backend()
    folder, models = sys.argv[1], json.loads(sys.argv[2])
    SEGMENTATION = {segmentation}
    report = {{}}
    for name, (build, shapes) in models.items():
        data = np.load(f"{{folder}}/{{name}}.npz")
        inputs = [data[f"input_{{i}}"] for i in range(len(shapes))]
        x = inputs if len(inputs) > 1 else inputs[0]
        # The .keras file saved under TensorFlow: the same config rebuilt here, its weights loaded.
        model = keras.models.load_model(f"{{folder}}/{{name}}.keras", compile=False)
        outputs = model(x)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        difference = max(float(np.abs(np.asarray(o) - data[f"output_{{i}}"]).max()) for i, o in enumerate(outputs))
        model.load_weights(f"{{folder}}/{{name}}.weights.h5")  # the plain weights file loads as well
        again = model(x)
        again = again if isinstance(again, (list, tuple)) else [again]
        reload_difference = max(float(np.abs(np.asarray(a) - np.asarray(o)).max()) for a, o in zip(again, outputs))
        rng = np.random.default_rng(0)
        if name in SEGMENTATION:  # the zoo's segmentation loss, keras-only
            classes = outputs[0].shape[-1]
            model.compile(optimizer="adam", loss=[CEDiceLoss(num_classes=classes) for _ in outputs])
            targets = [rng.integers(0, classes, outputs[0].shape[:-1])] * len(outputs)
        else:  # heatmaps, masks, class probabilities: one step of mean squared error
            model.compile(optimizer="adam", loss=["mse"] * len(outputs))
            targets = [rng.random(o.shape, dtype=np.float32) for o in outputs]
        loss = model.train_on_batch(x, targets)
        loss = float(np.ravel(loss)[0])
        report[name] = {{"difference": difference, "reload_difference": reload_difference, "loss": loss,
                        "dtype": str(outputs[0].dtype)}}
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
    script = JAX_SCRIPT.format(imports=IMPORTS, segmentation=sorted(SEGMENTATION))
    # Two JAX processes at once, one per core: JAX compiles on one thread.
    names = sorted(MODELS, key=lambda name: -COMPILE_WEIGHT.get(name, 1))
    halves = [{n: MODELS[n] for n in names[0::2]}, {n: MODELS[n] for n in names[1::2]}]
    runs = [subprocess.Popen([sys.executable, "-c", script, str(folder), json.dumps(half)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env) for half in halves]
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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_jax_matches_tensorflow_and_trains(jax_report, name):
    result = jax_report[name]
    assert result["difference"] <= 1e-4, result
    assert result["reload_difference"] <= 1e-5, result
    assert np.isfinite(result["loss"]) and result["loss"] > 0, result
    assert result["dtype"] == "float32"
