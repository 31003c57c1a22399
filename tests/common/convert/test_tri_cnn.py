"""common.convert.tri_cnn: the original TRI-CNN's Keras 2 weights give the zoo's model the original's outputs.

The reference is a float64 NumPy forward of the original (tests/references/tri_cnn.py); the full-width
model (67M parameters) runs on 32 px tiles, which VGG16 pools to one pixel, so it stays cheap.
"""

import h5py
import keras
import numpy as np
import pytest

from common.convert import tri_cnn
from common.errors import DataError
from tests.references import tri_cnn as reference

TILE = 32
ZOO_INPUTS = {"tile_2_5x": "_25x", "tile_10x": "_100x", "tile_40x": ""}  # zoo input -> original suffix


@pytest.fixture(scope="module")
def original():
    return reference.random_weights(seed=0)


@pytest.fixture(scope="module")
def weights_file(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("original") / "AL_Model_0.h5"
    reference.write_keras2_weights(path, original)
    return path


@pytest.fixture(scope="module")
def converted(weights_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "tri_cnn.keras"
    return tri_cnn.convert(weights_file, out, tile_size=TILE), out


@pytest.fixture(scope="module")
def raw_tiles():
    """Raw 0-255 RGB triplets, by the original's suffix (40x: "", 10x: "_100x", 2.5x: "_25x")."""
    rng = np.random.default_rng(1)
    return {s: rng.integers(0, 256, (3, TILE, TILE, 3)).astype("float32") for s in reference.SUFFIXES}


def _zoo_probabilities(model, raw_tiles):
    inputs = {name: raw_tiles[suffix] / np.float32(255) for name, suffix in ZOO_INPUTS.items()}  # the [0, 1] contract
    return np.asarray(model(inputs, training=False), "float64")


def test_converted_model_gives_the_originals_probabilities_renormalised_over_the_tissues(
        original, converted, raw_tiles):
    six = reference.forward(original, *(raw_tiles[s] for s in reference.SUFFIXES))
    assert six[:, 0].min() > 0.01 and six.max() < 0.9  # the background matters and nothing saturates
    expected = six[:, 1:] / six[:, 1:].sum(axis=-1, keepdims=True)
    ours = _zoo_probabilities(converted[0], raw_tiles)
    difference = np.abs(ours - expected).max()
    print(f"TRI-CNN converted vs the float64 original: max |difference| {difference:.2e}")
    assert difference < 1e-5
    np.testing.assert_array_equal(ours.argmax(-1), six[:, 1:].argmax(-1))
    # The branches are not interchangeable with these weights: a mapping that swapped two would fail.
    swapped = reference.forward(original, raw_tiles["_25x"], raw_tiles["_100x"], raw_tiles[""])
    assert np.abs(swapped[:, 1:] / swapped[:, 1:].sum(-1, keepdims=True) - expected).max() > 1e-3


def test_whole_model_file_reads_the_same_and_the_keras_file_reloads(original, converted, raw_tiles, tmp_path):
    whole = tmp_path / "whole_model.h5"
    reference.write_keras2_weights(whole, original, whole_model=True)
    read = tri_cnn.read_weights(whole)
    assert read.keys() == original.keys()
    for name, values in original.items():
        assert len(read[name]) == len(values) and all(np.array_equal(a, b) for a, b in zip(read[name], values))
    # The same arrays as the weights-only file: to_keras, tested above, maps them the same.
    reloaded = keras.models.load_model(converted[1], compile=False)
    assert reloaded.get_layer("preprocess_40x").mode == "raw"
    np.testing.assert_allclose(_zoo_probabilities(reloaded, raw_tiles), _zoo_probabilities(converted[0], raw_tiles),
                               atol=1e-7)


def _without(layers, name):
    return {k: v for k, v in layers.items() if k != name}


def _reshaped(layers, name, shape):
    return {**layers, name: [np.zeros(shape, "float32"), *layers[name][1:]]}


def _write(change):
    return lambda path, good, layers: reference.write_keras2_weights(path, change(layers))


def _truncated(path, good, layers):
    data = good.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _keras3_weights(path, good, layers):  # Keras 3's .weights.h5 layout: no layer_names
    with h5py.File(path, "w") as f:
        f.create_group("layers/dense/vars").create_dataset("0", data=np.zeros((2, 2), "float32"))


BAD_FILES = [
    # (id, writes the bad file from the good one and its layers, words its one-line DataError must contain)
    ("missing", lambda path, good, layers: None, ["no such file"]),
    ("text", lambda path, good, layers: path.write_text("layer,weights\nmy_dense1,0\n"),
     ["cannot be read", "signature"]),
    ("truncated", _truncated, ["cannot be read", "truncated"]),
    ("keras3_layout", _keras3_weights, ["no layer_names"]),
    ("extra_layer", _write(lambda w: {**w, "conv_extra": w["block1_conv1"]}), ["layer conv_extra", "not TRI-CNN's"]),
    ("no_output", _write(lambda w: _without(w, "my_output")), ["no layer my_output"]),
    ("no_branch_layer", _write(lambda w: _without(w, "block3_conv2_25x")), ["no layer block3_conv2_25x"]),
    ("conv_shape", _write(lambda w: _reshaped(w, "block1_conv1_100x", (3, 3, 3, 32))),
     ["layer block1_conv1_100x", "weight 0 (kernel)", "(3, 3, 3, 32)", "(3, 3, 3, 64)"]),
    ("output_shape", _write(lambda w: _reshaped(w, "my_output", (4096, 5))),
     ["layer my_output", "(4096, 5)", "(4096, 6)"]),
    ("weight_count", _write(lambda w: {**w, "my_dense2": w["my_dense2"][:1]}), ["layer my_dense2", "1 weights"]),
]


@pytest.mark.parametrize("write, words", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_files_give_one_line_naming_the_file_and_write_nothing(write, words, original, weights_file, tmp_path):
    bad = tmp_path / "bad.h5"
    write(bad, weights_file, original)
    out = tmp_path / "out" / "tri_cnn.keras"
    with pytest.raises(DataError) as error:
        tri_cnn.convert(bad, out, tile_size=TILE)
    message = str(error.value)
    assert message.startswith(str(bad)) and "\n" not in message, message
    for word in words:
        assert word in message, message
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_output_must_be_a_new_keras_file(weights_file, tmp_path):
    before = weights_file.stat()
    with pytest.raises(ValueError, match="differ from the weights file"):
        tri_cnn.convert(weights_file, weights_file.parent / ".." / weights_file.parent.name / weights_file.name)
    with pytest.raises(ValueError, match=r"\.keras"):
        tri_cnn.convert(weights_file, tmp_path / "tri_cnn.h5")
    assert (weights_file.stat().st_size, weights_file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not (tmp_path / "tri_cnn.h5").exists()


def test_cli_a_bad_file_is_one_line_and_writes_nothing(zoo_here, tmp_path):
    """The CLI's success path is ``convert``'s, tested above (a full conversion costs seconds)."""
    (tmp_path / "notes.h5").write_text("not weights")
    done = zoo_here("convert", "tri-cnn", tmp_path / "notes.h5", tmp_path / "notes.keras")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"zoo convert: error: {tmp_path / 'notes.h5'}: cannot be read")
    assert not (tmp_path / "notes.keras").exists()
