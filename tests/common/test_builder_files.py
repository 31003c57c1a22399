"""A saved model says what it is: every registered model works from its ``.keras`` file alone.

One table over ``registry.names()``: each model is built tiny, fit one step, saved, and moved to a folder with no
``config.json``; its task's command (``zoo predict``, ``zoo eval-pose``, ``zoo tri-al-predict``) runs on the file
alone, and the model that command loaded equals the one saved (config, output names, weights, outputs).

``zoo export`` runs on the segmentation and the tiles file (``EXPORTED``). A pose model's export differs from
those only by ``entry.serving_outputs``, which the table applies to the model loaded from the file (the stage it
serves is the file's recorded ``num_stacks``); a pose SavedModel is written in
``tests/acnn_pose/test_decode.py``, and every model's export graph is traced in
``tests/common/serve/test_export.py``'s allow-list test. (Writing one more SavedModel here, of the hourglass, costs
about 7 s, more than a quarter of what this module may add to ``make test``.)

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
# The smallest model each builder takes; a registered model missing here fails its row.
TINY = {
    "unet": dict(num_classes=2, base_filters=2),
    "attention_unet": dict(num_classes=2, base_filters=2),
    "mhsa": dict(num_classes=2, base_filters=2, heads=2),
    "mhca": dict(num_classes=2, base_filters=2, heads=2),
    "u_transformer": dict(num_classes=2, base_filters=2, heads=2),
    "eas_unet": dict(num_classes=2, base_filters=2),
    "acnn": dict(input_shape=(64, 64, 3), num_stacks=2, base_filters=8),
    "hourglass": dict(input_shape=(64, 64, 3), num_stacks=1, base_filters=8),
    "tri_cnn": dict(tile_size=32, base_filters=2, head_units=4),
}
EXPORTED = ("unet", "tri_cnn")  # pose: see the module docstring


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> pathlib.Path:
    """A slide of 6x6 32-pixel squares: 4x4 of stroma in glass."""
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    labels = np.full((6, 6), 255, np.uint8)
    labels[1:5, 1:5] = 3
    helpers.flat_slide(path, labels, np.array(list(synthetic_slides.QUPATH_COLOURS.values())[:5], np.uint8), 32)
    return path


def _sample(model, rng):
    shapes = [(1, *(side or 64 for side in t.shape[1:])) for t in model.inputs]  # free sides: 64, a multiple of 16
    x = [rng.random(shape, dtype=np.float32) for shape in shapes]
    return x if len(x) > 1 else x[0]


def _fit_one_step(model, rng):
    """One SGD step on random targets of the outputs' shapes, so the saved weights are not the initial ones."""
    x = _sample(model, rng)
    y = keras.tree.map_structure(lambda out: rng.random(out.shape, dtype=np.float32), model(x))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)  # one step: tracing would cost more than it
    model.train_on_batch(x, y)  # fit's one step, without its epoch machinery
    return x


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
def test_a_model_file_alone_reloads_equal_and_runs_every_command_of_its_task(name, zoo_here, data, loaded, tmp_path):
    rng = np.random.default_rng(0)
    model = registry.build(name, **TINY[name])
    x = _fit_one_step(model, rng)
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    (tmp_path / "alone").mkdir()
    path = pathlib.Path(shutil.move(tmp_path / "run" / "model.keras", tmp_path / "alone" / f"{name}.keras"))

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
    if registry.get(name).serving_outputs:  # pose: zoo export serves the last stage, counted from the file's record
        served = registry.entry_of(used).serving_outputs(used)(outputs)
        np.testing.assert_array_equal(served["heatmaps"], outputs[TINY[name]["num_stacks"] - 1])
    if name in EXPORTED:
        done = zoo_here("export", path, tmp_path / "serving")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "serving" / name / "1" / "saved_model.pb").exists()
    keras.backend.clear_session()


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
    x = _sample(old, np.random.default_rng(0))
    outputs = keras.tree.flatten(old(x))
    for theirs, mine in zip(outputs, keras.tree.flatten(today(x))):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    if registry.get(name).serving_outputs:  # counted from the names of its outputs: nothing else records it
        np.testing.assert_array_equal(registry.entry_of(old).serving_outputs(old)(outputs)["heatmaps"], outputs[-1])
    keras.backend.clear_session()
