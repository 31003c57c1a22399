import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import unet_transformer

SHAPE_CASES = [
    # (build_model kwargs, input shape, expected output shape)
    (dict(input_shape=(None, None, 1), num_classes=2, base_filters=4), (2, 64, 64, 1), (2, 64, 64, 2)),
    (dict(input_shape=(None, None, 1), num_classes=8, base_filters=4), (1, 48, 80, 1), (1, 48, 80, 8)),
    (dict(input_shape=(32, 32, 3), num_classes=3, base_filters=2), (3, 32, 32, 3), (3, 32, 32, 3)),
]


@pytest.mark.parametrize("kwargs, in_shape, out_shape", SHAPE_CASES)
def test_output_shapes_and_softmax(kwargs, in_shape, out_shape):
    model = unet_transformer.build_model("unet", **kwargs)
    out = np.asarray(model(np.random.rand(*in_shape).astype("float32")))
    assert out.shape == out_shape
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


ILL_CASES = [
    (dict(variant="segformer"), "variant"),
    (dict(input_shape=(100, 100, 1)), "input_shape"),
    (dict(input_shape=(64, 64)), "input_shape"),
    (dict(input_shape=(64, 64, None)), "input_shape"),
    (dict(num_classes=1), "num_classes"),
    (dict(base_filters=0), "base_filters"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        unet_transformer.build_model(**kwargs)


def test_paper_size_parameter_count():
    # Paper section 3: "U-Net has ~30M parameters" (base 64, 512x512, 8 classes).
    model = unet_transformer.build_model("unet", input_shape=(512, 512, 1), num_classes=8, base_filters=64)
    count = model.count_params()
    print(f"U-Net base 64: {count:,} parameters")
    assert 28e6 <= count <= 33e6


def test_keras_file_reloads_in_fresh_process(tmp_path):
    model = unet_transformer.build_model("unet", num_classes=3, base_filters=4)
    x = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    model.save(tmp_path / "m.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import unet_transformer
        model = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        y = np.asarray(model(np.load({str(tmp_path / 'x.npy')!r})))
        np.testing.assert_array_equal(y, np.load({str(tmp_path / "y.npy")!r}))
        print("reloaded", y.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reloaded (2, 32, 48, 3)" in done.stdout
