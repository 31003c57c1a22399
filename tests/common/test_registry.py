"""The model registry: names, tasks, strides, building, which entry a loaded model is, and loading a run."""

import keras
import pytest

from common import registry


def test_every_model_of_the_four_papers_is_registered_once_per_task():
    assert registry.names("segmentation") == ("unet", "attention_unet", "mhsa", "mhca", "u_transformer", "eas_unet")
    assert registry.names("pose") == ("acnn", "hourglass")
    assert registry.names("tiles") == ("tri_cnn",)
    assert [registry.get(n).stride for n in ("unet", "eas_unet", "acnn", "tri_cnn")] == [16, 16, 64, 32]


def test_unknown_names_and_arguments_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="model must be one of .*got 'unet3d'"):
        registry.get("unet3d")
    with pytest.raises(ValueError, match="eas_unet: .*'heads'"):
        registry.build("eas_unet", heads=4)
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.get("unet"))
    with pytest.raises(ValueError, match="task must be one of"):
        registry.register(registry.Entry("x", "video", lambda: None, 1))


@pytest.mark.parametrize("name, kwargs", [
    ("mhca", dict(num_classes=3, base_filters=4, heads=2)),
    ("eas_unet", dict(num_classes=3, base_filters=4)),
    ("acnn", dict(input_shape=(64, 64, 3), num_stacks=2, features=16)),
    ("hourglass", dict(input_shape=(64, 64, 3), num_stacks=2, features=16)),
    ("tri_cnn", dict(tile_size=32, width=1 / 16, head_units=16)),
])
def test_a_built_model_is_recognised_without_its_run_config(name, kwargs):
    model = registry.build(name, **kwargs)
    entry = registry.entry_of(model)
    assert entry.task == registry.get(name).task
    if entry.task != "segmentation":  # segmentation models all load and serve alike
        assert entry.name == name
    assert registry.entry_of(model, {"model": name}).name == name
    keras.backend.clear_session()


def test_pose_entries_carry_their_staged_training():
    acnn, hourglass = registry.get("acnn"), registry.get("hourglass")
    assert [s.name for s in acnn.stages(0.01)] == ["A", "B", "C"]
    assert [s.name for s in hourglass.stages(0.01)] == ["A", "C"]  # no masks to train
    model = hourglass.build(input_shape=(64, 64, 3), num_stacks=2, features=16)
    outputs = hourglass.serving_outputs(model)(model.outputs)
    assert sorted(outputs) == ["heatmaps", "keypoints", "scores"]


def test_load_run_reads_the_run_config(tmp_path, keras_file):
    model, config = registry.load_run(keras_file)
    assert model.output_shape[-1] == 8 and config == {}
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"broken.keras: not a Keras model file \(it is text; a .keras file is a zip"):
        registry.load_run(broken)
    broken.write_bytes(b"")
    with pytest.raises(ValueError, match=r"broken.keras: not a Keras model file \(it is empty;"):
        registry.load_run(broken)
    broken.write_bytes(keras_file.read_bytes()[:-100])  # Keras: "File not found"
    with pytest.raises(ValueError, match=r"broken.keras: not a Keras model file \(it is a zip archive cut short"):
        registry.load_run(broken)
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match=r"bad.h5: cannot be loaded as a Keras model \(Unable to synchronously open "
                                         r"file \(bad byte number in an address\)\)$"):  # h5py's reason
        registry.load_run(tmp_path / "bad.h5")
    (tmp_path / "text.h5").write_text("weights\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text.h5: not a Keras model file \(it is text; a .h5 file is an HDF5 file"):
        registry.load_run(tmp_path / "text.h5")
    with pytest.raises(ValueError, match="missing.keras: no such model"):
        registry.load_run(tmp_path / "missing.keras")


def test_a_sequential_model_is_a_segmentation_model():
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(2, 1, activation="softmax")])
    assert registry.entry_of(model).task == "segmentation"
