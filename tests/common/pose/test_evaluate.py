"""PCKh of a pose run: the flip test, Mean@0.1, the PCKh curve, the Table 1 columns, through ``zoo eval-pose``."""

import json

import cv2
import keras
import numpy as np
import pytest

from common.pose import data as pose_data
from common.pose import data as pose_data_module  # the fixture "pose_data" is the data folder
from common.pose import evaluate, mpii


def test_flip_back_mirrors_swaps_the_pairs_and_shifts():
    flipped = np.zeros((1, 4, 8, 16), np.float32)
    flipped[0, 3, 2, 0] = 1.0  # r_ankle's peak at column 2 of the mirrored crop
    flipped[0, 1, 0, 9] = 0.5  # head top (no pair) at the left border
    back = evaluate.flip_back(flipped, shift=0)
    assert back[0, 3, 5, 5] == 1.0 and back[..., 0].max() == 0.0  # column 8 - 1 - 2, now l_ankle (pair (0, 5))
    assert back[0, 1, 7, 9] == 0.5
    shifted = evaluate.flip_back(flipped, shift=1)  # HRNet / mmpose: output[..., 1:] = output[..., :-1]
    assert shifted[0, 3, 6, 5] == 1.0 and shifted[0, 3, 5, 5] == 0.0  # one column to the right
    assert shifted[0, 1, 7, 9] == 0.0  # the last column is pushed out...
    np.testing.assert_array_equal(shifted[:, :, 0], back[:, :, 0])  # ...and the first keeps its own values


def test_flipped_targets_flip_back_onto_the_targets_without_a_shift():
    """Why FLIP_SHIFT is 0 here: the mirrored crop's targets, flipped back, are the crop's targets exactly."""
    record = pose_data.PoseRecord(image="unused.png", center=np.array([40.0, 50.0]), side=70.0,
                                  joints=np.random.default_rng(0).uniform(20, 70, (16, 2)),
                                  visible=np.ones(16, bool))
    image = np.zeros((100, 100, 3), np.uint8)
    mirror = pose_data.Augmentation(scale=0.0, rotation=0.0, flip=1.0)
    crop, targets, _ = pose_data.prepare_sample(record, 64, image=image)
    crop_m, targets_m, _ = pose_data.prepare_sample(record, 64, augmentation=mirror, rng=np.random.default_rng(0),
                                                    image=image)
    np.testing.assert_array_equal(crop_m, crop[:, ::-1])  # the training flip is the test's mirror
    np.testing.assert_allclose(evaluate.flip_back(targets_m[None], shift=0)[0], targets, atol=1e-6)
    assert np.abs(evaluate.flip_back(targets_m[None], shift=1)[0] - targets).max() > 0.1


def _identity_pose_model(size=8):
    inputs = keras.Input((size, size, 16))
    return keras.Model(inputs, keras.layers.Identity(name="prediction_1")(inputs))


def test_flip_test_averages_with_the_flipped_back_prediction():
    model = _identity_pose_model()
    x = np.random.default_rng(1).random((2, 8, 8, 16), dtype=np.float32)
    np.testing.assert_array_equal(evaluate.predict_heatmaps(model, x, flip_test=False), x)
    # The identity model's mirrored output, flipped back, is x with the left/right channels swapped.
    expected = 0.5 * (x + x[..., mpii.FLIP_PERMUTATION])
    np.testing.assert_allclose(evaluate.predict_heatmaps(model, x, flip_test=True, shift=0), expected, rtol=1e-6)


def test_mean_at_0_1_and_the_curve(monkeypatch):
    rng = np.random.default_rng(2)
    gt = rng.uniform(0, 100, (20, 16, 2))
    pred = gt + rng.normal(0, 4, gt.shape)
    visible = rng.random((20, 16)) > 0.2
    boxes = np.tile(np.array([[0.0, 0.0], [30.0, 40.0]]), (20, 1, 1))  # head size 30 px
    records = [pose_data.PoseRecord("x.png", np.zeros(2), 1.0, g, v, b) for g, v, b in zip(gt, visible, boxes)]
    monkeypatch.setattr(evaluate, "predict_records", lambda *args, **kwargs: (pred, None))
    result = evaluate.evaluate(None, records, 64)
    assert result["Total"] == mpii.pckh(pred, gt, visible, boxes, 0.5)["Total"]
    assert result["Mean@0.1"] == mpii.pckh(pred, gt, visible, boxes, 0.1)["Total"]  # pooled, as Total
    curve = result["curve"]
    assert curve["thresholds"][0] == 0.0 and curve["thresholds"][-1] == 0.5 and len(curve["thresholds"]) == 51
    assert curve["Total"][10] == result["Mean@0.1"] and curve["Total"][-1] == result["Total"]
    assert np.all(np.diff(curve["Total"]) >= 0) and curve["Total"][0] < result["Mean@0.1"] < result["Total"]


def test_unannotated_joints_print_a_dash_and_save_null():
    result = {c: 50.0 for c in evaluate.TABLE_COLUMNS}
    result.update({"Kne.": float("nan"), "l_knee": float("nan")})
    row = evaluate.format_table({"run": result}).splitlines()[-1]
    assert row == "| run | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | – | 50.0 | 50.0 | 50.0 |"
    assert "nan" not in row.lower()
    assert json.loads(json.dumps(evaluate.json_ready(result), allow_nan=False))["Kne."] is None


def test_eval_pose_prints_the_table_1_columns_and_writes_the_curve(zoo_here, pose_data, pose_run):
    out, _ = pose_run
    done = zoo_here("eval-pose", out, pose_data, "--name", "tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    header, rule, row = done.stdout.strip().splitlines()
    assert header == "| Method | Head | Sho. | Elb. | Wri. | Hip | Kne. | Ank. | Total | Mean@0.1 |"
    assert row.startswith("| tiny | ") and len(row.split("|")) == 12
    saved = json.loads((out / "pckh_valid.json").read_text(encoding="utf-8"))
    assert 0.0 <= saved["Total"] <= 100.0 and len(saved) == 16 + 9 + 1  # joints, columns, curve
    assert len(saved["curve"]["Total"]) == 51
    picture = cv2.imread(str(out / "pckh_valid.png"))
    assert picture is not None and picture.shape == (480, 640, 3) and picture.min() < 255


@pytest.mark.parametrize("flags, stem", [(["--no-flip-test"], "pckh_valid_noflip"),
                                         (["--flip-shift", "1"], "pckh_valid_shift1")])
def test_flip_flags_write_their_own_files(zoo_here, pose_data, pose_run, monkeypatch, flags, stem):
    calls = []
    original = evaluate.predict_heatmaps
    monkeypatch.setattr(evaluate, "predict_heatmaps", lambda *a, **k: calls.append(a[2:]) or original(*a, **k))
    out, _ = pose_run
    done = zoo_here("eval-pose", out, pose_data, *flags)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / f"{stem}.json").exists() and (out / f"{stem}.png").exists()
    assert calls and all(call == ((False, 0) if "--no-flip-test" in flags else (True, 1)) for call in calls)


def _with_mat_head_boxes(data, out, layout):
    """``data`` (HRNet layout, head boxes in its entries) in ``layout``, the boxes in the toolkit's .mat instead."""
    import scipy.io

    json_dir, names = {"hrnet": ("annot", ("train", "valid", "gt_valid")),
                       "mmpose": ("annotations", ("mpii_train", "mpii_val", "mpii_gt_val"))}[layout]
    (out / json_dir).mkdir(parents=True)
    (out / "images").symlink_to(data / "images", target_is_directory=True)
    for split, name in zip(("train", "valid"), names):
        entries = json.loads((data / "annot" / f"{split}.json").read_text(encoding="utf-8"))
        if split == "valid":
            boxes = np.array([entry.pop("head_box") for entry in entries], np.float64)  # (N, 2 corners, xy)
            scipy.io.savemat(out / json_dir / f"{names[2]}.mat", {"headboxes_src": np.transpose(boxes, (1, 2, 0))})
        (out / json_dir / f"{name}.json").write_text(json.dumps(entries), encoding="utf-8")
    return out


def test_mmposes_mpii_layout_gives_hrnets_table(zoo_here, pose_data, pose_run, tmp_path):
    """mmpose ships HRNet's JSON and the toolkit's .mat as annotations/mpii_{train,val}.json, mpii_gt_val.mat."""
    out, _ = pose_run
    tables = {}
    for layout in ("hrnet", "mmpose"):
        data = _with_mat_head_boxes(pose_data, tmp_path / layout, layout)
        assert pose_data_module.layout_of(data) == layout
        done = zoo_here("eval-pose", out / "model.keras", data, "--name", "run", "--input-size", "64", "--no-flip-test")
        assert done.returncode == 0, done.stderr[-2000:]
        tables[layout] = done.stdout
    assert tables["hrnet"] == tables["mmpose"] and "| run | " in tables["hrnet"]
    records = {layout: pose_data_module.load_split(tmp_path / layout, "valid") for layout in tables}
    assert [r.head_box.tolist() for r in records["hrnet"]] == [r.head_box.tolist() for r in records["mmpose"]]
    # What zoo train-pose trains on (common.train.pose reads the train split through these two calls, nothing
    # else): the same augmented batches from either layout, so the same training.
    batches = {layout: next(iter(pose_data_module.pose_dataset(pose_data_module.load_split(tmp_path / layout, "train"),
                                                                4, 64, training=True, seed=0))) for layout in tables}
    for mine, theirs in zip(batches["hrnet"], batches["mmpose"]):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
