"""A saved model says what it is: every registered model works from its ``.keras`` file alone.

One table over ``registry.names()``: each model is built tiny, fit one step, saved, and moved to a folder with no
``config.json`` (the session fixture ``model_files``); its task's command (``zoo predict``, ``zoo eval-pose``,
``zoo tri-al-predict``) runs on the file alone, and the model that command loaded equals the one saved (config,
output names, weights, outputs). ``zoo export`` of each file alone (``exported_files``, shared with
tests/common/serve/test_export.py and tests/acnn_pose/test_decode.py, which check what those exports serve in
detail) serves what the model computes.

A second table: the files of ``tests/data/legacy/``, saved by the zoo before models recorded their builder,
refused in one line saying what to do when no config.json names their model, and predicting once one does.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

from common import registry
from common.slides import synthetic as synthetic_slides
from tests import helpers

LEGACY = pathlib.Path(__file__).resolve().parents[1] / "data" / "legacy"
# What each task's export serves that the model itself computes (pose: the last stage's heatmaps).
SERVED = {"segmentation": "probabilities", "pose": "heatmaps", "tiles": "probabilities"}


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> pathlib.Path:
    """A slide of 6x6 32-pixel squares: 4x4 of stroma in glass."""
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    labels = np.full((6, 6), 255, np.uint8)
    labels[1:5, 1:5] = 3
    helpers.flat_slide(path, labels, np.array(list(synthetic_slides.QUPATH_COLOURS.values())[:5], np.uint8), 32)
    return path


def _command(name, path, tmp, data) -> tuple[list, pathlib.Path | None]:
    """The task's command on ``path`` and the file it writes (None: eval-pose of a file prints its table)."""
    task = registry.get(name).task
    if task == "segmentation":
        out = tmp / "labels.nii.gz"
        return ["predict", path, data["ct"], out, "--batch-size", 12], out  # the volume's 12 slices: one trace
    if task == "pose":
        return ["eval-pose", path, data["pose"], "--no-flip-test"], None  # the flip test adds a second pass
    out = tmp / "tiles.geojson"
    return ["tri-al-predict", path, data["slide"], out, "--batch-size", 16], out  # its 16 tiles in tissue


def _assert_ran(done, name, out) -> None:
    """Exit 0 and the command's result: its file (GeoJSON with annotations), or eval-pose's table row."""
    assert done.returncode == 0, done.stderr
    if out is None:
        assert f"| {name} |" in done.stdout, done.stdout
    elif out.suffix == ".geojson":
        assert json.loads(out.read_text(encoding="utf-8"))["features"], out.read_text(encoding="utf-8")
    else:
        assert out.exists()


@pytest.fixture(scope="module")
def data(tiny_cohort, pose_data, slide) -> dict:
    return {"ct": tiny_cohort / "images" / "case_000.nii.gz", "pose": pose_data, "slide": slide}


@pytest.fixture
def loaded(monkeypatch) -> list:
    """What ``registry.load_run`` gave the commands run in this test: the very model a command used."""
    found, load_run = [], registry.load_run

    def spy(path):
        found.append(load_run(path))
        return found[-1]

    monkeypatch.setattr(registry, "load_run", spy)
    return found


@pytest.mark.parametrize("name", registry.names())
def test_a_model_file_alone_reloads_equal_and_runs_every_command_of_its_task(name, model_files, exported_files,
                                                                             zoo_here, data, loaded, tmp_path):
    model, x, path = model_files[name]
    args, out = _command(name, path, tmp_path, data)
    _assert_ran(zoo_here(*args), name, out)
    [(used, config)] = loaded
    assert config == {} and registry.entry_of(used).name == name
    assert used.get_config() == model.get_config() and used.output_names == model.output_names
    assert [w.path for w in used.weights] == [w.path for w in model.weights]
    for mine, theirs in zip(model.weights, used.weights):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy(), err_msg=mine.path)
    outputs = keras.tree.flatten(used(x))
    for mine, theirs in zip(keras.tree.flatten(model(x)), outputs):
        np.testing.assert_array_equal(np.asarray(theirs), np.asarray(mine))
    # zoo export of the file alone: the entry it serves by is the file's (pose: the stage its num_stacks records).
    served = helpers.load_serving(exported_files[name])(**_named(used, x))[SERVED[registry.get(name).task]]
    expected = outputs[helpers.TINY_MODELS[name]["num_stacks"] - 1] if registry.get(name).task == "pose" else \
        outputs[0]
    np.testing.assert_allclose(served, np.asarray(expected), atol=1e-5)


def _named(model, x) -> dict:
    """The model's batch as the served signature takes it: by input name."""
    return dict(zip([t.name for t in model.inputs], x if isinstance(x, list) else [x]))


def _hint(path) -> str:
    return (f"{path}: saved before zoo models recorded their builder, and no config.json beside it names the model: "
            'put it back in its run folder, or beside a config.json {"model": NAME}, NAME one of unet, '
            "attention_unet, mhsa, mhca, u_transformer, eas_unet, acnn, hourglass, tri_cnn")


# The files of tests/data/legacy, saved by the zoo of commit f2c3497 (before models recorded their builder) from a
# worktree of it: the model of their run, the arguments it was built with, and a command that needs the entry.
LEGACY_FILES = {
    "unet": (dict(num_classes=3, base_filters=2), "predict"),
    "hourglass": (dict(input_shape=(64, 64, 3), num_stacks=1, base_filters=8), "eval-pose"),
    "tri_cnn": (dict(tile_size=32, base_filters=2, head_units=4), "export"),  # tri-al-predict asks for no entry
}


@pytest.mark.parametrize("name", list(LEGACY_FILES))
def test_a_file_saved_before_models_named_their_builder_needs_a_config_naming_its_model(
        name, zoo_here, data, loaded, tmp_path):
    arguments, command = LEGACY_FILES[name]
    path = tmp_path / "old" / f"{name}.keras"
    path.parent.mkdir()
    shutil.copy(LEGACY / path.name, path)
    args, out = _command(name, path, tmp_path, data)
    refused = ["export", path, tmp_path / "serving"] if command == "export" else args
    before = helpers.checksums(tmp_path)
    done = zoo_here(*refused)
    assert (done.returncode, done.stderr.splitlines()) == (2, [f"zoo {command}: error: {_hint(path)}"])
    assert helpers.checksums(tmp_path) == before

    (path.parent / "config.json").write_text(json.dumps({"model": name}), encoding="utf-8")
    _assert_ran(zoo_here(*args), name, out)
    old, config = loaded[-1]
    assert config == {"model": name} and registry.entry_of(old).name == name
    today = registry.build(name, **arguments)  # the file's weights, in order, are today's builder's
    today.set_weights(old.get_weights())
    x = helpers.model_inputs(old, np.random.default_rng(0))
    outputs = keras.tree.flatten(old(x))
    for theirs, mine in zip(outputs, keras.tree.flatten(today(x))):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    if registry.get(name).serving_outputs:  # counted from the names of its outputs: nothing else records it
        np.testing.assert_array_equal(registry.entry_of(old).serving_outputs(old)(outputs)["heatmaps"], outputs[-1])
    keras.backend.clear_session()
