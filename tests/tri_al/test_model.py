import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tri_al
from tri_al.model import HEAD_UNITS

SHAPE_CASES = [
    # (build_model kwargs, batch, expected output shape)
    (dict(tile_size=32, width=1 / 16), 2, (2, 5)),
    (dict(num_classes=3, tile_size=64, width=1 / 8), 1, (1, 3)),
    (dict(tile_size=32, width=0.1, dropout=0.0), 3, (3, 5)),
]


def _triplet(batch, tile, seed=0):
    return [np.random.default_rng(seed + k).random((batch, tile, tile, 3), dtype=np.float32) for k in range(3)]


@pytest.mark.parametrize("kwargs, batch, out_shape", SHAPE_CASES)
def test_output_shapes_and_softmax(kwargs, batch, out_shape):
    model = tri_al.build_model(**kwargs)
    assert [t.name for t in model.inputs] == list(tri_al.INPUT_NAMES)
    out = np.asarray(model(_triplet(batch, kwargs["tile_size"])))
    assert out.shape == out_shape
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


ILL_CASES = [
    (dict(num_classes=1), "num_classes"),
    (dict(tile_size=100), "tile_size"),
    (dict(tile_size=16), "tile_size"),
    (dict(width=0), "width"),
    (dict(width=1.5), "width"),
    (dict(width=0.5, backbone_weights="vgg16.weights.h5"), "backbone_weights"),
    (dict(dropout=1.0), "dropout"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tri_al.build_model(**kwargs)


@pytest.fixture(scope="module")
def tiny():
    return tri_al.build_model(tile_size=32, width=1 / 16)


def test_the_three_backbones_are_weight_independent(tiny):
    backbones = [tiny.get_layer(f"vgg16_{m}") for m in ("2_5x", "10x", "40x")]
    paths = [{w.path for w in b.weights} for b in backbones]
    assert not (paths[0] & paths[1]) and not (paths[1] & paths[2]) and not (paths[0] & paths[2])
    kernel = backbones[0].get_layer("block1_conv1").kernel
    before = [np.asarray(b.get_layer("block1_conv1").kernel).copy() for b in backbones[1:]]
    kernel.assign(np.zeros(kernel.shape, "float32"))
    after = [np.asarray(b.get_layer("block1_conv1").kernel) for b in backbones[1:]]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)


def test_exact_vgg16_tri_cnn_parameter_count_and_local_weights(tmp_path):
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.save_weights(tmp_path / "vgg16_notop.weights.h5")
    model = tri_al.build_model(tile_size=32, backbone_weights=str(tmp_path / "vgg16_notop.weights.h5"))
    backbones = [model.get_layer(f"vgg16_{m}").count_params() for m in ("2_5x", "10x", "40x")]
    head = model.count_params() - sum(backbones)
    print(f"TRI-CNN (exact VGG16): backbones {backbones} = {sum(backbones):,}, head {head:,}, "
          f"total {model.count_params():,}")
    assert backbones == [reference.count_params()] * 3 == [14_714_688] * 3
    assert head == 3 * 512 * HEAD_UNITS + HEAD_UNITS + HEAD_UNITS * 5 + 5
    assert model.count_params() == 45_723_077
    for name in ("2_5x", "10x", "40x"):
        loaded = model.get_layer(f"vgg16_{name}").get_layer("block5_conv3").kernel
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(reference.get_layer("block5_conv3").kernel))


def test_saved_model_reloads_in_a_fresh_process(tiny, tmp_path):
    x = _triplet(2, 32, seed=7)
    np.savez(tmp_path / "x.npz", *x)
    np.save(tmp_path / "y.npy", np.asarray(tiny(x)))
    tiny.save(tmp_path / "tri.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import tri_al  # noqa: F401
        x = list(np.load({str(tmp_path / 'x.npz')!r}).values())
        model = keras.models.load_model({str(tmp_path / 'tri.keras')!r})
        np.testing.assert_allclose(np.asarray(model(x)), np.load({str(tmp_path / 'y.npy')!r}), atol=1e-6)
        print("reloaded", [t.name for t in model.inputs])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reloaded ['tile_2_5x', 'tile_10x', 'tile_40x']" in done.stdout


def test_exports_through_the_common_code_with_named_tiles(tiny, tmp_path):
    import tensorflow as tf

    from common.serve import export

    version = export.export_saved_model(tiny, tmp_path, "tri_cnn")
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    x = _triplet(3, 32, seed=11)
    served = serve(**{name: tf.constant(v) for name, v in zip(tri_al.INPUT_NAMES, x)})
    expected = np.asarray(tiny(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["labels"].numpy(), expected.argmax(-1))
