"""Faults in pose data, one table: each is one line naming the file and the record, and nothing written is touched.

Every row breaks a copy of the synthetic data folder (``pose_data``: images
00000-00007 train, 00008-00009 valid), runs `zoo` in this process, and checks
the whole error line, exit 2, and the checksums of the data folder and of a
run folder written before. The data is checked when the annotation file is
read, before a model loads or a dataset is built, so the run folder need not
hold a trained model (``pose_run`` would cost 50 s): a check that let the
fault through would fail on it with another message.
"""

import json
import shutil

import numpy as np
import pytest
import scipy.io

from tests import helpers


def _edit(split, index, **changes):
    """Sets (or, with None, removes) keys of one entry of annot/<split>.json."""
    def apply(data):
        path = data / "annot" / f"{split}.json"
        entries = json.loads(path.read_text(encoding="utf-8"))
        for key, value in changes.items():
            if value is None:
                entries[index].pop(key)
            else:
                entries[index][key] = value
        path.write_text(json.dumps(entries), encoding="utf-8")  # NaN and Infinity, as Python's json writes them
    return apply


def _nan_joint(data):
    path = data / "annot" / "valid.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    entries[1]["joints"][3][0] = float("nan")
    path.write_text(json.dumps(entries), encoding="utf-8")


def _truncate(name, keep=0.5):
    def apply(data):
        image = data / "images" / name
        image.write_bytes(image.read_bytes()[:int(image.stat().st_size * keep)])
    return apply


def _outside_image(data):
    shutil.copy(data / "images" / "00000.jpg", data.parent / "elsewhere.jpg")  # a whole image, outside the folder
    _edit("valid", 0, image="../../elsewhere.jpg")(data)


def _zero_box_in_mat(data):
    for index in (0, 1):
        _edit("valid", index, head_box=None)(data)
    boxes = np.array([[[10, 20], [30, 50]], [[5, 5], [5, 5]]], float)  # (N, corner, xy): the second of zero size
    scipy.io.savemat(data / "annot" / "gt_valid.mat", {"headboxes_src": np.transpose(boxes, (1, 2, 0))})


VALID, TRAIN = "{data}/annot/valid.json", "{data}/annot/train.json"
# (case, fault, command, the whole stderr line)
FAULTS = [
    ("nan joint", _nan_joint, "eval-pose",
     f"{VALID}: entry 1 (00009.jpg): 'joints' holds NaN or Inf (joint 3, l_hip)"),
    ("inf centre", _edit("train", 0, center=[float("inf"), 50.0]), "train-pose",
     f"{TRAIN}: entry 0 (00000.jpg): 'center' holds NaN or Inf (value [inf, 50.0])"),
    ("nan scale", _edit("train", 1, scale=float("nan")), "train-pose",
     f"{TRAIN}: entry 1 (00001.jpg): scale must be > 0 and finite, got nan"),
    ("zero-byte jpeg", _truncate("00002.jpg", keep=0), "train-pose",
     f"{TRAIN}: entry 2 (00002.jpg): image {{data}}/images/00002.jpg: empty (0 bytes)"),
    ("truncated jpeg", _truncate("00008.jpg"), "eval-pose",
     f"{VALID}: entry 0 (00008.jpg): image {{data}}/images/00008.jpg: truncated (a JPEG without its end-of-image "
     "marker)"),
    ("truncated jpeg in training", _truncate("00005.jpg", keep=0.9), "train-pose",
     f"{TRAIN}: entry 5 (00005.jpg): image {{data}}/images/00005.jpg: truncated (a JPEG without its end-of-image "
     "marker)"),
    ("path out of the folder", _edit("valid", 0, image="../../../../etc/passwd"), "eval-pose",
     f"{VALID}: entry 0 (../../../../etc/passwd): image path '../../../../etc/passwd' leads outside the image "
     "folder {data}/images; refused (image names are relative to it)"),
    ("absolute path", _edit("train", 3, image="/etc/passwd"), "train-pose",
     f"{TRAIN}: entry 3 (/etc/passwd): image path '/etc/passwd' leads outside the image folder {{data}}/images; "
     "refused (image names are relative to it)"),
    ("an existing image outside", _outside_image, "eval-pose",
     f"{VALID}: entry 0 (../../elsewhere.jpg): image path '../../elsewhere.jpg' leads outside the image folder "
     "{data}/images; refused (image names are relative to it)"),
    ("zero-size head box", _edit("valid", 1, head_box=[[10, 10], [10, 10]]), "eval-pose",
     f"{VALID}: entry 1 (00009.jpg): 'head_box' [[10, 10], [10, 10]] has zero size (PCKh divides by it)"),
    ("zero-size head box in gt_valid.mat", _zero_box_in_mat, "eval-pose",
     "{data}/annot/gt_valid.mat: head box 1 (of {data}/annot/valid.json entry 1 (00009.jpg)) is "
     "[[5.0, 5.0], [5.0, 5.0]]: zero size, NaN or Inf (PCKh divides by its size)"),
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as an earlier `zoo train-pose` and `zoo eval-pose` left it (what a failure must not touch)."""
    run = tmp_path_factory.mktemp("pose_faults") / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "acnn", "input_size": 64}), encoding="utf-8")
    (run / "pckh_valid.json").write_text(json.dumps({"Total": 12.5}), encoding="utf-8")
    return run


@pytest.mark.parametrize("case, fault, command, expected", FAULTS, ids=[row[0] for row in FAULTS])
def test_a_fault_is_one_line_naming_file_and_record_and_changes_nothing(zoo_here, pose_data, run_folder, tmp_path,
                                                                        case, fault, command, expected):
    data = tmp_path / "data"
    shutil.copytree(pose_data, data)
    fault(data)
    before = {"data": helpers.checksums(data), "run": helpers.checksums(run_folder)}
    args = [data, run_folder] if command == "train-pose" else [run_folder, data]
    done = zoo_here(command, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [f"zoo {command}: error: " + expected.format(data=data)]
    assert {"data": helpers.checksums(data), "run": helpers.checksums(run_folder)} == before
