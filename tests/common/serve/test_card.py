"""The model card of an export and `verify`: one export, copied and broken per case."""

import datetime
import importlib.metadata
import json
import shutil

import keras
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from common.ct import shards
from common.errors import DataError
from common.pose import mpii
from common.serve import card, export
from common.slides import annotations

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
def copy(served, tmp_path):
    """A copy of the export for a test to break."""
    shutil.copytree(served, tmp_path / "liver")
    return tmp_path / "liver"


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
    metadata = json.loads((served / "1" / "assets.extra" / card.CARD_FILE).read_text(encoding="utf-8"))
    assert metadata["format"] == card.FORMAT and (metadata["name"], metadata["model"]) == ("liver", "unet")
    assert metadata["class_names"] == CLASSES and metadata["hu_window"] == [-200.0, 250.0]
    assert metadata["command"] == "zoo train data run" and metadata["training_config"]["epochs"] == 3
    assert metadata["inputs"] == {"image": {"dtype": "float32", "shape": [None, None, None, 1], "range": [0.0, 1.0]}}
    assert metadata["outputs"]["probabilities"] == {"dtype": "float32", "shape": [None, None, None, 3],
                                                    "range": [0.0, 1.0]}
    assert metadata["outputs"]["labels"] == {"dtype": "int32", "shape": [None, None, None], "range": [0, 2]}
    assert metadata["zoo_version"] == importlib.metadata.version("medzoo")
    assert (metadata["tensorflow_version"], metadata["keras_version"]) == (tf.__version__, keras.__version__)
    exported = datetime.datetime.fromisoformat(metadata["exported_at"])
    assert exported.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - exported) < datetime.timedelta(hours=1)


def test_a_good_export_verifies_with_one_ok_line_per_check(served, copy):
    lines = []
    assert card.verify(served, log=lines.append) == [served / "1"]
    assert len(lines) == 5 and all(line.startswith("ok  ") for line in lines), lines
    assert "op types, each among the zoo's exports' (nothing else runs)" in lines[1]
    assert "2 request(s) ran through serving_default within the card" in lines[-1]
    shutil.copytree(copy / "1", copy / "2")  # both versions of a model folder, or one version folder alone
    assert card.verify(copy, log=lambda _: None) == [copy / "1", copy / "2"]
    assert card.verify(copy / "2", log=lambda _: None) == [copy / "2"]


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


BROKEN = {
    "dtype": (lambda f: _edit_card(f, lambda m: m["outputs"]["labels"].update(dtype="int64")),
              r"metadata.json: outputs\['labels'\] dtype int64, the signature's int32"),
    "shape": (lambda f: _edit_card(f, lambda m: m["inputs"]["image"].update(shape=[None, 64, 64, 1])),
              r"metadata.json: inputs\['image'\] shape \[None, 64, 64, 1\], the signature's \[None, None, None, 1\]"),
    "output name": (lambda f: _edit_card(f, lambda m: m["outputs"].pop("labels")),
                    r"outputs \['probabilities'\], the signature's \['labels', 'probabilities'\]"),
    "range": (lambda f: _edit_card(f, lambda m: m["outputs"]["probabilities"].update(range=[2.0, 3.0])),
              r"warmup_requests: request 1: output probabilities spans \[.*\], the card says \[2.0, 3.0\]"),
    "no card": (lambda f: (f / "1" / "assets.extra" / card.CARD_FILE).unlink(), r"metadata.json: missing"),
    "old card": (lambda f: _edit_card(f, lambda m: m.update(format=0)), r"format 0, this zoo reads format 1"),
    "corrupt warm-up": (_garbage_warmup, r"warmup_requests: record 1: unreadable"),
    "not a log": (lambda f: _write_warmup(f, [b"\x08\x01garbage"]), r"request 1: not a PredictionLog"),
    "input name": (lambda f: _write_warmup(f, [_request(x=tf.zeros((1, 32, 32, 1)))]),
                   r"request 1: inputs \['x'\], the signature's \['image'\]"),
    "bad input": (lambda f: _write_warmup(f, [_request(image=tf.zeros((1, 32, 32, 1), tf.float64))]),
                  r"request 1: does not run"),
    "empty": (lambda f: _write_warmup(f, []), r"warmup_requests: no requests"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_export_fails_naming_the_file(copy, case):
    breaks, message = BROKEN[case]
    breaks(copy)
    lines = []
    with pytest.raises(DataError, match=message):
        card.verify(copy, log=lines.append)
    assert any(line.startswith("MISMATCH  ") and str(copy / "1" / "assets.extra") in line for line in lines)


def test_a_damaged_graph_is_a_mismatch_and_that_version_is_not_loaded(copy):
    (copy / "1" / "saved_model.pb").write_bytes(b"\x08\x01 not a protobuf of a SavedModel")
    lines = []
    with pytest.raises(DataError, match=r"1 mismatch\(es\)\n  .*1/saved_model.pb: not a SavedModel"):
        card.verify(copy, log=lines.append)
    assert [line.split()[0] for line in lines] == ["ok", "MISMATCH"]  # no signature, no warm-up: nothing ran


def test_every_mismatch_is_listed_after_every_check(copy):
    _edit_card(copy, lambda m: m["inputs"]["image"].update(dtype="float16"))
    _write_warmup(copy, [])
    lines = []
    with pytest.raises(DataError, match=r"2 mismatch\(es\)") as raised:
        card.verify(copy, log=lines.append)
    assert "inputs['image'] dtype float16" in str(raised.value) and "no requests" in str(raised.value)
    assert [line.split()[0] for line in lines] == ["ok", "ok", "MISMATCH", "ok", "MISMATCH"]


def test_a_folder_without_versions_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: not a served model folder"):
        card.verify(tmp_path)


def test_run_facts_per_task():
    pose = card.run_facts("acnn", "pose", {"command": "zoo train-pose d r"})
    assert pose["joint_names"] == list(mpii.MPII_JOINTS) and pose["command"] == "zoo train-pose d r"
    assert pose["class_names"] is None and pose["hu_window"] is None
    tiles = card.run_facts("tri_cnn", "tiles", None)
    assert tiles["tissue_classes"] == list(annotations.CLASSES) and tiles["joint_names"] is None
    assert tiles["command"] is None and tiles["training_config"] is None


def test_training_spacing_is_the_prepared_cohorts_median(tmp_path):
    cases = [{"id": str(i), "shard": f"{i}.tfrecord", "spacing": [s, s + 0.1, 2.5]}
             for i, s in enumerate((0.7, 0.9, 0.8))]
    (tmp_path / shards.MANIFEST).write_text(json.dumps({"cases": cases}), encoding="utf-8")
    facts = card.run_facts("unet", "segmentation", {**CONFIG, "data": str(tmp_path)})
    assert facts["training_spacing"] == pytest.approx([0.8, 0.9])
    notes = []
    moved = card.run_facts("unet", "segmentation", {**CONFIG, "data": str(tmp_path / "moved")}, log=notes.append)
    assert moved["training_spacing"] is None and moved["class_names"] == CLASSES
    assert len(notes) == 1 and "training spacing unknown" in notes[0] and str(tmp_path / "moved") in notes[0]
