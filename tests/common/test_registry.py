"""The model registry: names, tasks, strides, building, which entry a loaded model is, and loading a run."""

import json
import pathlib
import re
import shutil

import keras
import pytest

from common import registry
from common.errors import DataError
from common.nn import built


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


def test_a_built_model_names_its_entry_and_a_run_config_cannot_rename_it():
    # Every registered model's file alone: tests/common/test_builder_files.py.
    model = registry.build("mhca", num_classes=3, base_filters=4, heads=2)
    assert registry.entry_of(model).name == "mhca"
    assert registry.entry_of(model, {"model": "unet"}).name == "mhca"
    keras.backend.clear_session()


def test_pose_entries_carry_their_staged_training():
    acnn, hourglass = registry.get("acnn"), registry.get("hourglass")
    assert [s.name for s in acnn.stages(0.01)] == ["A", "B", "C"]
    assert [s.name for s in hourglass.stages(0.01)] == ["A", "C"]  # no masks to train
    model = hourglass.build(input_shape=(64, 64, 3), num_stacks=2, base_filters=16)
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


def test_a_model_built_outside_the_zoo_needs_a_config_naming_its_model():
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(2, 1, activation="softmax")],
                             name="mine")
    with pytest.raises(ValueError) as raised:
        registry.entry_of(model)
    assert str(raised.value) == (
        "model: 'mine' records no builder (it was not built by a zoo model's build_model) and no run config names "
        "it; give the config, its model one of ('unet', 'attention_unet', 'mhsa', 'mhca', 'u_transformer', "
        "'eas_unet', 'acnn', 'hourglass', 'tri_cnn')")
    assert registry.entry_of(model, {"model": "unet"}).name == "unet"
    with pytest.raises(ValueError, match="model must be one of .*got 'unet3d'"):
        registry.entry_of(model, {"model": "unet3d"})


LEGACY = pathlib.Path(__file__).resolve().parents[1] / "data" / "legacy"


def test_a_file_saved_before_models_recorded_their_builder_takes_its_name_from_the_run(tmp_path):
    # The commands on each task's file: tests/common/test_builder_files.py.
    path = tmp_path / "unet.keras"
    shutil.copy(LEGACY / "unet.keras", path)  # the zoo of f2c3497: no builder recorded
    old, config = registry.load_run(path)
    assert config == {} and not isinstance(old, built.BuiltModel)
    with pytest.raises(DataError, match=re.escape(f"{path}: saved before zoo models recorded their builder, and no "
                                                  "config.json beside it names the model")):
        registry.entry_of(old)
    assert registry.entry_of(old, {"model": "unet"}).name == "unet"
    (tmp_path / "config.json").write_text(json.dumps({"model": "unet"}), encoding="utf-8")
    old, config = registry.load_run(path)
    assert registry.entry_of(old).name == "unet"  # load_run keeps the config's name: a caller without it agrees
    (tmp_path / "config.json").write_text(json.dumps({"model": "unet3d"}), encoding="utf-8")
    with pytest.raises(DataError) as raised:
        registry.entry_of(registry.load_run(path)[0])
    assert str(raised.value) == (f"{tmp_path / 'config.json'}: model 'unet3d' is none of the zoo's (unet, "
                                 "attention_unet, mhsa, mhca, u_transformer, eas_unet, acnn, hourglass, tri_cnn)")
