import json
import pathlib
import warnings
import zipfile

import keras
import numpy as np
import pytest

import tri_al
from common.nn.built import BuiltModel
from tests import helpers
from tri_al.model import IMAGENET_BGR_MEAN

LEGACY = pathlib.Path(__file__).resolve().parents[1] / "data" / "legacy" / "tri_cnn.keras"

SHAPE_CASES = [
    # (build_model kwargs, batch, expected output shape); small heads and widths: CPU-sized
    (dict(tile_size=32, base_filters=4, head_units=16), 2, (2, 5)),
    (dict(num_classes=3, tile_size=64, base_filters=8, head_units=8), 1, (1, 3)),
    (dict(tile_size=32, base_filters=3, head_units=12, dropout=0.0), 3, (3, 5)),
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
    (dict(base_filters=0), r"base_filters must be an integer in \[1, 64\] \(VGG16's first block at most\), got 0"),
    (dict(base_filters=65), "base_filters must be an integer in .*got 65"),
    (dict(base_filters=8.0), "base_filters must be an integer in .*got 8.0"),
    (dict(base_filters=True), "base_filters must be an integer in .*got True"),
    (dict(base_filters=32, backbone_weights="vgg16.weights.h5"),
     "backbone_weights: a VGG16 weights file fits base_filters 64 only, got base_filters 32"),
    # The deprecated width (base_filters = 64 x width): a multiplier of no whole number of channels, or both names.
    (dict(width=0), r"width must be a multiple of 1/64 in \(0, 1\] \(base_filters = 64 x width, a whole number of "
                    r"channels\), got 0"),
    (dict(width=1.5), "width must be a multiple of 1/64 .*got 1.5"),
    (dict(width=0.1), "width must be a multiple of 1/64 .*got 0.1"),
    (dict(width=float("nan")), "width must be a multiple of 1/64 .*got nan"),
    (dict(width=0.5, base_filters=8), "width: the old name of base_filters .*got width 0.5 and base_filters 8"),
    (dict(width=0.5, backbone_weights="vgg16.weights.h5"), "backbone_weights: .*got base_filters 32"),
    (dict(dropout=1.0), "dropout"),
    (dict(head_units=0), "head_units"),
    (dict(head_units=64.0), "head_units"),
    (dict(preprocessing="caffe"), "preprocessing"),
    (dict(preprocessing=None), "preprocessing"),
]


@pytest.mark.parametrize("kwargs, argument", ILL_CASES)
def test_bad_configuration_names_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tri_al.build_model(**kwargs)


# (the deprecated width, the base_filters it stands for): every width the zoo, its docs and its tests used.
WIDTH_CASES = [(1 / 32, 2), (1 / 16, 4), (0.125, 8)]


def _layer_shapes(model) -> list:
    return [(w.path, tuple(w.shape)) for w in model.weights]


@pytest.mark.parametrize("width, base_filters", WIDTH_CASES)
def test_the_deprecated_width_builds_the_same_model_and_says_what_to_write(width, base_filters):
    with pytest.warns(DeprecationWarning) as caught:
        old = tri_al.build_model(tile_size=32, width=width, head_units=4)
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        f"tri_al.build_model: width is deprecated and goes in the next release; use base_filters={base_filters}"]
    assert {w.filename for w in caught if w.category is DeprecationWarning} == {__file__}  # the caller's line
    new = tri_al.build_model(tile_size=32, base_filters=base_filters, head_units=4)
    assert _layer_shapes(old) == _layer_shapes(new)
    assert old.get_layer("vgg16_40x").get_layer("block5_conv3").filters == 8 * base_filters  # VGG16's 512 at 64
    assert old.arguments == new.arguments and new.arguments["base_filters"] == base_filters
    assert "width" not in new.arguments


def _assert_same_outputs(model, other):
    x = _triplet(2, 32, seed=13)
    np.testing.assert_allclose(np.asarray(other(x)), np.asarray(model(x)), atol=1e-6)


def test_the_committed_file_from_before_builders_loads_as_base_filters_2():
    """tests/data/legacy/tri_cnn.keras: ``build_model(tile_size=32, width=1 / 32, head_units=4)`` of commit f2c3497."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # a plain functional file names no width
        legacy = keras.models.load_model(LEGACY)
    built = tri_al.build_model(tile_size=32, base_filters=2, head_units=4)
    assert [tuple(w.shape) for w in legacy.weights] == [tuple(w.shape) for w in built.weights]
    built.set_weights(legacy.get_weights())
    _assert_same_outputs(legacy, built)


def test_a_file_recording_width_loads_as_its_base_filters(tmp_path):
    model = tri_al.build_model(tile_size=32, base_filters=8, head_units=4)
    arguments = {**model.arguments, "width": 0.125}
    del arguments["base_filters"]  # what build_model recorded before the rename
    BuiltModel("tri_cnn", arguments, inputs=model.inputs, outputs=model.outputs, name="tri_cnn").save(
        tmp_path / "width.keras")
    with pytest.warns(DeprecationWarning, match="use base_filters=8"):  # the file's rebuild, not the caller's
        loaded = keras.models.load_model(tmp_path / "width.keras")
    assert loaded.arguments == model.arguments and _layer_shapes(loaded) == _layer_shapes(model)
    _assert_same_outputs(model, loaded)  # the file's weights


@pytest.fixture(scope="module")
def tiny():
    return tri_al.build_model(tile_size=32, base_filters=4, head_units=16)


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
    # VGG16 no-top, by hand: 1,792 + 36,928 | 73,856 + 147,584 | 295,168 + 2 x 590,080
    # | 1,180,160 + 2 x 2,359,808 | 3 x 2,359,808 = 14,714,688 (keras.applications agrees).
    assert backbones == [reference.count_params()] * 3 == [14_714_688] * 3
    # The original's head on 3 x 512 pooled features: 1536 -> 4096 -> 4096 -> 5, weights and biases:
    # 6,295,552 + 16,781,312 + 20,485 = 23,097,349; with 3 x 14,714,688 = 44,144,064: 67,241,413.
    assert head == (1536 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 5 + 5) == 23_097_349
    assert model.count_params() == 67_241_413
    for name in ("2_5x", "10x", "40x"):
        loaded = model.get_layer(f"vgg16_{name}").get_layer("block5_conv3").kernel
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(reference.get_layer("block5_conv3").kernel))


def test_head_is_the_originals_two_dense_layers_each_followed_by_dropout():
    model = tri_al.build_model(tile_size=32, base_filters=4, head_units=24, dropout=0.25)
    names = [layer.name for layer in model.layers]
    assert names[names.index("features"):] == ["features", "head_dense1", "head_dropout1", "head_dense2",
                                               "head_dropout2", "probabilities"]
    assert [model.get_layer(f"head_dense{i}").units for i in (1, 2)] == [24, 24]
    assert model.get_layer("features").output.shape[-1] == 3 * 32  # pooled VGG16 features: 8 x base_filters each
    assert [model.get_layer(f"head_dropout{i}").rate for i in (1, 2)] == [0.25, 0.25]
    assert tri_al.build_model(tile_size=32, base_filters=4, head_units=8).get_layer("head_dropout1").rate == 0.4


def test_preprocessing_is_vgg16_preprocess_input_of_0_255_pixels():
    rgb = np.random.default_rng(3).random((2, 4, 5, 3), dtype=np.float32)  # model inputs: RGB in [0, 1]
    ours = np.asarray(tri_al.VGG16Preprocess()(rgb))
    # NumPy transcription of keras.applications.vgg16.preprocess_input ("caffe"): RGB -> BGR, minus the means.
    expected = (rgb * 255.0)[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    keras_own = np.asarray(keras.applications.vgg16.preprocess_input(rgb * 255.0))
    np.testing.assert_allclose(ours, keras_own, atol=1e-4)
    assert IMAGENET_BGR_MEAN == (103.939, 116.779, 123.68)


# What each VGG16 sees of RGB tiles x in [0, 1], in NumPy: the original's raw pixels, or ImageNet's "caffe" input.
PREPROCESSING_CASES = [
    ("raw", lambda x: 255 * x),
    ("imagenet", lambda x: 255 * x[..., ::-1] - np.array(IMAGENET_BGR_MEAN)),
]


@pytest.mark.parametrize("mode, expected", PREPROCESSING_CASES, ids=[case[0] for case in PREPROCESSING_CASES])
def test_vgg16_preprocess_modes(mode, expected):
    rgb = np.random.default_rng(4).random((2, 4, 5, 3), dtype=np.float32)
    layer = tri_al.VGG16Preprocess(mode=mode)
    np.testing.assert_allclose(np.asarray(layer(rgb)), expected(rgb), atol=1e-4)
    assert layer.get_config()["mode"] == mode
    assert tri_al.VGG16Preprocess.from_config(layer.get_config()).mode == mode


def test_vgg16_preprocess_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode.*'caffe'"):
        tri_al.VGG16Preprocess(mode="caffe")


@pytest.mark.parametrize("mode, expected", PREPROCESSING_CASES, ids=[case[0] for case in PREPROCESSING_CASES])
def test_each_backbone_sees_its_preprocessed_tile(mode, expected, tiny):
    model = tiny if mode == "raw" else tri_al.build_model(tile_size=32, base_filters=4, head_units=16,
                                                            preprocessing=mode)
    assert tiny.get_layer("preprocess_40x").mode == "raw"  # the default: what the original fed
    x = _triplet(2, 32, seed=5)
    names = ("2_5x", "10x", "40x")
    probe = keras.Model(model.inputs, [model.get_layer(f"preprocess_{m}").output for m in names] +
                        [model.get_layer(f"pool_{m}").output for m in names])
    outputs = [np.asarray(o) for o in probe(x)]
    for k, name in enumerate(names):
        assert model.get_layer(f"preprocess_{name}").mode == mode
        np.testing.assert_allclose(outputs[k], expected(x[k]), atol=1e-3)
        features = np.asarray(model.get_layer(f"vgg16_{name}")(outputs[k])).mean(axis=(1, 2))
        np.testing.assert_allclose(outputs[3 + k], features, rtol=1e-5, atol=1e-5)


def test_a_file_saved_before_the_mode_argument_loads_with_imagenet_preprocessing(tmp_path):
    model = tri_al.build_model(tile_size=32, base_filters=4, head_units=16, preprocessing="imagenet")
    keras.Model(model.inputs, model.outputs, name=model.name).save(tmp_path / "new.keras")  # a pre-BuiltModel file
    with zipfile.ZipFile(tmp_path / "new.keras") as new, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.namelist():
            data = new.read(item)
            if item == "config.json":  # as written before VGG16Preprocess had ``mode``
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "VGG16Preprocess":
                        del layer["config"]["mode"]
                data = json.dumps(config)
                assert '"mode"' not in data
            old.writestr(item, data)
    loaded = keras.models.load_model(tmp_path / "old.keras")
    assert {loaded.get_layer(f"preprocess_{m}").mode for m in ("2_5x", "10x", "40x")} == {"imagenet"}
    x = _triplet(2, 32, seed=9)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_saved_model_reloads_in_a_fresh_process(tiny, tmp_path):
    report = helpers.reload_in_fresh_process(tmp_path, {"tri": tiny}, _triplet(2, 32, seed=7), "tri_al", atol=1e-6)
    assert report["tri"]["inputs"] == ["tile_2_5x", "tile_10x", "tile_40x"]


def test_exports_through_the_common_code_with_named_tiles(tiny, tmp_path):
    from common.serve import export

    version = export.export_saved_model(tiny, tmp_path, "tri_cnn")
    x = _triplet(3, 32, seed=11)
    served = helpers.load_serving(version)(**dict(zip(tri_al.INPUT_NAMES, x)))
    expected = np.asarray(tiny(x))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["labels"], expected.argmax(-1))
