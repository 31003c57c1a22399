"""The model card of an export and `verify`: one export, copied and broken per case; a run's card leaks nothing."""

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import logging
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from common.ct import shards, splits
from common.errors import DataError
from common.pose import mpii
from common.serve import card, export
from common.slides import annotations
from common.train import pose as pose_training
from common.train import segmentation
from tests import helpers

CLASSES = ["background", "liver", "spleen"]
CONFIG = {"model": "unet", "class_names": CLASSES, "hu_window": [-200.0, 250.0], "command": "zoo train data run",
          "epochs": 3}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # One softmax layer: what verify checks is the export's files, and a small graph loads in a fraction of a second.
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(3, 1, activation="softmax")])
    base = tmp_path_factory.mktemp("serving")
    export.export_saved_model(model, base, "liver", warmup_sizes=((32, 32), (32, 48)),
                              facts=card.run_facts("unet", "segmentation", CONFIG))
    return base / "liver"


@pytest.fixture
def logged(caplog):
    """What card.py has logged in the test so far, as (level name, line), INFO and up."""
    caplog.set_level(logging.INFO, logger=card.__name__)
    return lambda: [(record.levelname, record.getMessage()) for record in caplog.records
                    if record.name == card.__name__]


@pytest.fixture
def copy(served, tmp_path):
    """A copy of the export for a test to break."""
    shutil.copytree(served, tmp_path / "liver")
    return tmp_path / "liver"


def _read(version_dir) -> dict:
    return json.loads((pathlib.Path(version_dir) / "assets.extra" / card.CARD_FILE).read_text(encoding="utf-8"))


def _edit_card(folder, edit):
    path = folder / "1" / "assets.extra" / card.CARD_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    edit(metadata)
    path.write_text(json.dumps(metadata), encoding="utf-8")


def _write_warmup(folder, payloads):
    with tf.io.TFRecordWriter(str(folder / "1" / "assets.extra" / card.WARMUP_FILE)) as writer:
        for payload in payloads:
            writer.write(payload)


def test_card_describes_the_run_and_the_signature(served):
    metadata = _read(served / "1")
    assert metadata["format"] == card.FORMAT == 2 and (metadata["name"], metadata["model"]) == ("liver", "unet")
    assert metadata["class_names"] == CLASSES and metadata["hu_window"] == [-200.0, 250.0]
    assert metadata["training_config"] == {"model": "unet", "class_names": CLASSES, "hu_window": [-200.0, 250.0],
                                           "epochs": 3}
    assert metadata["training_config_left_out"] == {"command": "the command line (it names paths)"}
    tensors = metadata["network_data_format"]
    assert tensors["inputs"] == {"image": {"dtype": "float32", "shape": [None, None, None, 1],
                                           "value_range": [0.0, 1.0]}}
    assert tensors["outputs"]["probabilities"] == {"dtype": "float32", "shape": [None, None, None, 3],
                                                   "value_range": [0.0, 1.0]}
    assert tensors["outputs"]["labels"] == {"dtype": "int32", "shape": [None, None, None], "value_range": [0, 2]}
    version = importlib.metadata.version("medzoo")
    assert metadata["version"] == version and list(metadata["changelog"]) == [version]
    assert metadata["license"] == "Apache-2.0" and "not for clinical diagnosis" in metadata["intended_use"]
    assert metadata["description"].startswith("U-Transformer (Petit et al., MLMI 2021)")
    assert metadata["authors"].startswith("Olivier Petit") and "hal-03337089" in metadata["references"][0]
    assert metadata["eval_metrics"] == [] and "split" not in metadata
    assert (metadata["tensorflow_version"], metadata["keras_version"], metadata["numpy_version"]) == \
        (tf.__version__, keras.__version__, np.__version__)
    exported = datetime.datetime.fromisoformat(metadata["exported_at"])
    assert exported.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - exported) < datetime.timedelta(hours=1)
    assert card.schema_problem(metadata) is None


def test_a_good_export_verifies_with_one_ok_line_per_check(served, copy, logged):
    assert card.verify(served) == [served / "1"]
    levels, lines = zip(*logged())
    assert len(lines) == 5 and all(line.startswith("ok  ") for line in lines), lines
    assert set(levels) == {"INFO"}  # `zoo export --verify -q` shows none of them
    assert "metadata.json: format 2, valid against card_schema.json, model unet (segmentation)" in lines[0]
    assert "op types, each among the zoo's exports' (nothing else runs)" in lines[1]
    assert "2 request(s) ran through serving_default within the card" in lines[-1]
    shutil.copytree(copy / "1", copy / "2")  # both versions of a model folder, or one version folder alone
    assert card.verify(copy) == [copy / "1", copy / "2"]
    assert card.verify(copy / "2") == [copy / "2"]


def _garbage_warmup(folder):
    path = folder / "1" / "assets.extra" / card.WARMUP_FILE
    data = bytearray(path.read_bytes())
    data[40:60] = b"\xff" * 20  # inside the first record's payload: its CRC no longer matches
    path.write_bytes(bytes(data))


def _request(**inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "serving_default"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)) \
        .SerializeToString()


def _tensors(side, name, **changes):
    return lambda f: _edit_card(f, lambda m: m["network_data_format"][side][name].update(changes))


BROKEN = {
    "dtype": (_tensors("outputs", "labels", dtype="int64"),
              r"metadata.json: outputs\['labels'\] dtype int64, the signature's int32"),
    "shape": (_tensors("inputs", "image", shape=[None, 64, 64, 1]),
              r"metadata.json: inputs\['image'\] shape \[None, 64, 64, 1\], the signature's \[None, None, None, 1\]"),
    "output name": (lambda f: _edit_card(f, lambda m: m["network_data_format"]["outputs"].pop("labels")),
                    r"outputs \['probabilities'\], the signature's \['labels', 'probabilities'\]"),
    "value range": (_tensors("outputs", "probabilities", value_range=[2.0, 3.0]),
                    r"warmup_requests: request 1: output probabilities spans \[.*\], the card says \[2.0, 3.0\]"),
    "no card": (lambda f: (f / "1" / "assets.extra" / card.CARD_FILE).unlink(), r"metadata.json: missing"),
    "unknown format": (lambda f: _edit_card(f, lambda m: m.update(format=0)), r"format 0, this zoo reads format 2"),
    "corrupt warm-up": (_garbage_warmup, r"warmup_requests: record 1: unreadable"),
    "not a log": (lambda f: _write_warmup(f, [b"\x08\x01garbage"]), r"request 1: not a PredictionLog"),
    "input name": (lambda f: _write_warmup(f, [_request(x=tf.zeros((1, 32, 32, 1)))]),
                   r"request 1: inputs \['x'\], the signature's \['image'\]"),
    "bad input": (lambda f: _write_warmup(f, [_request(image=tf.zeros((1, 32, 32, 1), tf.float64))]),
                  r"request 1: does not run"),
    "empty": (lambda f: _write_warmup(f, []), r"warmup_requests: no requests"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_export_fails_naming_the_file(copy, case, logged):
    breaks, message = BROKEN[case]
    breaks(copy)
    with pytest.raises(DataError, match=message):
        card.verify(copy)
    assert any(level == "WARNING" and line.startswith("MISMATCH  ") and str(copy / "1" / "assets.extra") in line
               for level, line in logged())


def test_a_damaged_graph_is_a_mismatch_and_that_version_is_not_loaded(copy, logged):
    (copy / "1" / "saved_model.pb").write_bytes(b"\x08\x01 not a protobuf of a SavedModel")
    with pytest.raises(DataError, match=r"1 mismatch\(es\)\n  .*1/saved_model.pb: not a SavedModel"):
        card.verify(copy)
    assert [line.split()[0] for _, line in logged()] == ["ok", "MISMATCH"]  # no signature, no warm-up: nothing ran


def test_every_mismatch_is_listed_after_every_check(copy, logged):
    _tensors("inputs", "image", dtype="float16")(copy)
    _write_warmup(copy, [])
    with pytest.raises(DataError, match=r"2 mismatch\(es\)") as raised:
        card.verify(copy)
    assert "inputs['image'] dtype float16" in str(raised.value) and "no requests" in str(raised.value)
    assert [(level, line.split()[0]) for level, line in logged()] == [
        ("INFO", "ok"), ("INFO", "ok"), ("WARNING", "MISMATCH"), ("INFO", "ok"), ("WARNING", "MISMATCH")]


def test_a_folder_without_versions_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: not a served model folder"):
        card.verify(tmp_path)


def test_run_facts_per_task():
    pose = card.run_facts("acnn", "pose", {"command": "zoo train-pose d r", "num_stacks": 2})
    assert pose["joint_names"] == list(mpii.MPII_JOINTS) and pose["training_config"] == {"num_stacks": 2}
    assert pose["class_names"] is None and pose["hu_window"] is None and "Newell" in pose["references"][1]
    tiles = card.run_facts("tri_cnn", "tiles", None)
    assert tiles["tissue_classes"] == list(annotations.CLASSES) and tiles["joint_names"] is None
    assert tiles["training_config"] is None and tiles["training_config_left_out"] == {}
    assert tiles["authors"].startswith("Saul Fuster") and len(tiles["references"]) == 2
    unknown = card.run_facts(None, None, None)
    assert (unknown["description"], unknown["authors"], unknown["references"]) == (None, None, [])


def test_training_spacing_is_the_prepared_cohorts_median(tmp_path, logged):
    cases = [{"id": str(i), "shard": f"{i}.tfrecord", "spacing": [s, s + 0.1, 2.5]}
             for i, s in enumerate((0.7, 0.9, 0.8))]
    (tmp_path / shards.MANIFEST).write_text(json.dumps({"cases": cases}), encoding="utf-8")
    facts = card.run_facts("unet", "segmentation", {**CONFIG, "data": str(tmp_path)})
    assert facts["training_spacing"] == pytest.approx([0.8, 0.9])
    assert logged() == []
    moved = card.run_facts("unet", "segmentation", {**CONFIG, "data": str(tmp_path / "moved")})
    assert moved["training_spacing"] is None and moved["class_names"] == CLASSES
    [(level, note)] = logged()
    assert level == "WARNING" and note.startswith("training spacing unknown: ") and str(tmp_path / "moved") in note


# ---- What a card keeps of a run: the rule, on the records the zoo's trainers write ------------------------------

def _segmentation_record(prepared, run) -> dict:
    """config.json as `zoo train` writes it (segmentation.run_record), with a command line naming the folders."""
    config = segmentation.TrainConfig(data=str(prepared), out=str(run), base_filters=2, epochs=1,
                                      model_options={"deep_supervision": False})
    manifest = shards.load_manifest(prepared)
    split = splits.holdout_split([c["id"] for c in manifest["cases"]], config.test_fraction, config.seed)
    record = segmentation.run_record(config, manifest, split, 64, "float32", 1)
    return {**record, "command": f"zoo train {prepared} {run} --base-filters 2 --epochs 1"}


def _pose_record(root) -> dict:
    config = pose_training.PoseTrainConfig(str(root / "pose_data"), str(root / "pose_run"),
                                           init=str(root / "hourglass.keras"), **helpers.TINY_POSE)
    stages = pose_training.registry.get(config.model).stages(config.stage_factor)
    return pose_training.run_record(config, 10, stages)


def test_the_card_keeps_the_recipe_and_names_what_it_leaves_out(tiny_prepared, tmp_path):
    for record in (_segmentation_record(tiny_prepared, tmp_path / "run"), _pose_record(tmp_path)):
        kept, left_out = card.shareable_config(record)
        assert set(kept) | set(left_out) == set(record) and not set(kept) & set(left_out)
        assert not card._holds_path(kept) and "command" in left_out
        assert str(tmp_path) not in json.dumps(kept) and left_out["data"] == left_out["out"] == "a path"
        assert card.schema_problem({**_read_template(), "training_config": kept,
                                    "training_config_left_out": left_out}) is None
    kept, left_out = card.shareable_config({"model": "unet", "model_options": {"weights": "/srv/w.h5"}, "new": 1})
    assert kept == {"model": "unet"}
    assert left_out == {"model_options": "a path",
                        "new": "not on the card's allow-list (common/serve/card_schema.json)"}


def _read_template() -> dict:
    return card.model_card("m", {"image": tf.TensorSpec([None, None, None, 1])},
                           {"probabilities": tf.TensorSpec([None, None, None, 3])}, None)


# ---- The done-when check: an export of a trained run holds no path and no case id ------------------------------

@pytest.fixture(scope="module")
def trained_run(tiny_prepared, tmp_path_factory):
    """A run folder as `zoo train` and `zoo evaluate` leave it: model.keras, config.json, evaluation.json. The model
    is one 8-class softmax convolution: what the card says comes from the run's files, and it exports in a second."""
    run = tmp_path_factory.mktemp("trained") / "run"
    run.mkdir()
    helpers.conv_model(np.zeros((1, 1, 1, 8)), np.zeros(8)).save(run / "model.keras")
    record = _segmentation_record(tiny_prepared, run)
    (run / "config.json").write_text(json.dumps(record), encoding="utf-8")
    scores = {case: {str(label): {"dice": 0.5 + 0.1 * label, "hd95": float("nan") if label == 7 else 2.0}
                     for label in range(1, 8)} for case in record["split"]["test"]}
    (run / "evaluation.json").write_text(json.dumps(scores), encoding="utf-8")
    digest = hashlib.sha256((run / "evaluation.json").read_bytes()).hexdigest()
    options = {"evaluation_sha256": digest, "inference": "whole slices, tta none, own spacing",
               "cohort": "the run's cohort"}  # as zoo evaluate writes it beside
    (run / "evaluation_options.json").write_text(json.dumps(options), encoding="utf-8")
    return run, record


def test_evaluate_options_describe_only_the_evaluation_they_were_written_with(tmp_path):
    from common.cli import serve

    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text('{"case_000": {"1": {"dice": 0.5}}}', encoding="utf-8")
    assert serve._evaluate_command(evaluation) == (
        "zoo evaluate RUN (evaluation.json was written without a record of its options)")
    (tmp_path / "evaluation_options.json").write_text(json.dumps({
        "evaluation_sha256": hashlib.sha256(evaluation.read_bytes()).hexdigest(), "inference": "tta mirror",
        "cohort": "another cohort"}), encoding="utf-8")
    assert serve._evaluate_command(evaluation) == "zoo evaluate RUN (tta mirror; another cohort)"
    evaluation.write_text('{"case_001": {"1": {"dice": 0.7}}}', encoding="utf-8")  # a later evaluate, options lost
    assert "without a record" in serve._evaluate_command(evaluation)


def _texts(folder) -> dict[str, str]:
    """Every file under ``folder`` that decodes as UTF-8 (the card, models.config), by path."""
    found = {}
    for path in sorted(pathlib.Path(folder).rglob("*")):
        try:
            found[str(path)] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError):  # saved_model.pb, variables, warm-up records: binary
            pass
    return found


def _leaks(folder, paths, case_ids) -> list[str]:
    return [f"{name}: {needle}" for name, text in _texts(folder).items() for needle in [*paths, *case_ids]
            if needle in text]


def test_an_exported_card_names_no_folder_and_no_case_id(trained_run, tiny_prepared, tiny_cohort, zoo_here,
                                                         tmp_path, tmp_path_factory):
    run, record = trained_run
    case_ids = [*record["split"]["train"], *record["split"]["test"]]
    paths = [str(run), str(tiny_prepared), str(tiny_cohort), str(tmp_path), str(tmp_path_factory.getbasetemp())]
    serving = tmp_path / "serving"
    done = zoo_here("export", run, serving, "--server-base-path", "/models/run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "model card: left out of the run's config.json: data (a path); out (a path); steps_per_execution (a speed "
        "setting); test_cases (case ids (zoo export --card-include-split adds the split)); verbose (a console "
        "setting); "
        "source (a path); split (case ids (zoo export --card-include-split adds the split)); command (the command "
        "line (it names paths))")
    assert len(_texts(serving)) == 2 and not _leaks(serving, paths, case_ids)  # the card and models.config
    metadata = _read(serving / "run" / "1")
    assert metadata["training_config"]["model_options"] == {"deep_supervision": False}
    assert metadata["eval_metrics"] == [{
        "command": "zoo evaluate RUN (whole slices, tta none, own spacing; the run's cohort)",
        "file": "evaluation.json",
        "cases": len(record["split"]["test"]),
        "metrics": {name: {"dice": pytest.approx(0.5 + 0.1 * label), "hd95": None if label == 7 else 2.0}
                    for label, name in enumerate(record["class_names"]) if label}}]
    done = zoo_here("export", run, serving, "--server-base-path", "/models/run", "--card-include-split")
    assert done.returncode == 0, done.stderr
    assert _read(serving / "run" / "2")["split"] == record["split"]
    assert not _leaks(serving, paths, []) and set(_leaks(serving / "run" / "2", [], case_ids)) == {
        f"{serving / 'run' / '2' / 'assets.extra' / card.CARD_FILE}: {case}" for case in case_ids}
    done = zoo_here("export", "--verify", serving / "run")
    assert done.returncode == 0, done.stdout + done.stderr


# ---- Every kind of card the zoo writes is valid against the schema ------------------------------------------------

def _pose_file(folder):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(16, 1, name="prediction_1")(inputs))  # an hourglass's outputs
    model.save(folder / "pose.keras")
    (folder / "config.json").write_text('{"model": "hourglass"}', encoding="utf-8")  # a plain model: say which
    return folder / "pose.keras"


def _tiles_file(folder):
    inputs = [keras.Input((32, 32, 3), name=name) for name in ("tile_2_5x", "tile_10x", "tile_40x")]
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x) for x in inputs])
    keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(pooled)).save(folder / "tiles.keras")
    (folder / "config.json").write_text('{"model": "tri_cnn"}', encoding="utf-8")  # a plain model: say which
    return folder / "tiles.keras"


SPLIT = {"train": ["case_001", "case_002"], "test": ["case_000"]}


def _cv_folder(folder):
    """A `zoo cv` folder of two one-convolution folds, each config.json with its split."""
    model = helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS)
    return helpers.fake_cv_folder(folder / "cv", [model, model], split=SPLIT)


KINDS = {"pose": (_pose_file, [], "hourglass"), "tiles": (_tiles_file, [], "tri_cnn"),
         "pipeline of cv folds": (_cv_folder, ["--pipeline", "--card-include-split"], "unet")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_card_is_valid_against_the_schema(kind, zoo_here, tmp_path):
    make, flags, model = KINDS[kind]
    done = zoo_here("export", make(tmp_path), tmp_path / "serving", "--name", "m", *flags)
    assert done.returncode == 0, done.stderr
    metadata = _read(tmp_path / "serving" / "m" / "1")
    assert card.schema_problem(metadata) is None and metadata["model"] == model
    assert ("pipeline" in metadata) == ("--pipeline" in flags)
    assert metadata.get("split") == ({"fold_1": SPLIT, "fold_2": SPLIT} if "--card-include-split" in flags else None)


# ---- Faults of the card: one table, each row one line of `zoo export` and the served folder kept ----------------

@dataclasses.dataclass(frozen=True)
class Fault:
    make: object  # make(folder, run) -> zoo's arguments, after making the fault in a copy of the served folder
    line: object  # line(folder, run) -> the stderr lines expected


def _out_of_its_run(run):
    """The run's plain model copied beside a config.json that names its model and no split."""
    (run.parent / "config.json").write_text('{"model": "unet"}', encoding="utf-8")
    return shutil.copy(run / "model.keras", run.parent / "tiny.keras")


CARD = "1/assets.extra/metadata.json"
CARD_FAULTS = {
    "--verify: value_range a string": Fault(
        lambda f, r: (_tensors("outputs", "labels", value_range="0..2")(f), ["export", "--verify", f])[1],
        lambda f, r: [f"zoo export: error: {f}: 1 mismatch(es)",
                      f"  {f}/{CARD}: network_data_format.outputs.labels.value_range: '0..2' is not of type 'array'"]),
    "--verify: a field the schema does not know": Fault(
        lambda f, r: (_edit_card(f, lambda m: m.update(command="zoo train /data run")), ["export", "--verify", f])[1],
        lambda f, r: [f"zoo export: error: {f}: 1 mismatch(es)",
                      f"  {f}/{CARD}: the card: Additional properties are not allowed ('command' was unexpected)"]),
    "--verify: a path in training_config": Fault(
        lambda f, r: (_edit_card(f, lambda m: m["training_config"].update(data="/srv/prepared")),
                      ["export", "--verify", f])[1],
        lambda f, r: [f"zoo export: error: {f}: 1 mismatch(es)",
                      f"  {f}/{CARD}: training_config: Additional properties are not allowed ('data' was unexpected)"]),
    "--verify: a format 1 card": Fault(
        lambda f, r: (_edit_card(f, lambda m: m.update(format=1)), ["export", "--verify", f])[1],
        lambda f, r: [f"zoo export: error: {f}: 1 mismatch(es)",
                      f"  {f}/{CARD}: format 1, an older zoo's card (it may hold paths, the command line and case "
                      "ids); export the model again for a format 2 card"]),
    "--card-include-split of a file": Fault(
        lambda f, r: ["export", _out_of_its_run(r), f.parent, "--card-include-split"],
        lambda f, r: [f"zoo export: error: --card-include-split: {r.parent}/tiny.keras records no split (only a "
                      "`zoo train` run or a `zoo cv` folder does); export without it"]),
    "--card-include-split with --verify": Fault(
        lambda f, r: ["export", "--verify", f, "--card-include-split"],
        lambda f, r: ["zoo export: error: --verify checks DIR only; drop --card-include-split"]),
    "a run's evaluation.json that is not the zoo's": Fault(
        lambda f, r: ((r / "evaluation.json").write_text('["case_000"]', encoding="utf-8"), ["export", r, f.parent])[1],
        lambda f, r: [f"zoo export: error: {r}/evaluation.json: not the result file the zoo writes there "
                      "(AttributeError: 'list' object has no attribute 'values')"]),
}


@pytest.mark.parametrize("case", list(CARD_FAULTS))
def test_a_card_fault_is_one_line_and_the_served_folder_is_kept(case, served, trained_run, zoo_here, tmp_path):
    fault = CARD_FAULTS[case]
    folder, run = tmp_path / "serving" / "liver", tmp_path / "run"
    shutil.copytree(served, folder)
    shutil.copytree(trained_run[0], run)
    argv = fault.make(folder, run)
    before = helpers.checksums(folder.parent)
    done = zoo_here(*argv)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == fault.line(folder, run)
    assert helpers.checksums(folder.parent) == before
