import hashlib
import json

import cv2
import numpy as np
import pytest

from common.pose import data as pose_data
from common.pose import synthetic as synthetic_pose
from common.pose.mpii import LIMBS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    counts = synthetic_pose.write_dataset(root, num_images=10, seed=3, size=128)
    return root, counts


def test_written_in_the_mpii_json_form_the_loader_reads(data):
    root, counts = data
    assert counts == {"train": 8, "valid": 2}
    assert len(list((root / "images").glob("*.jpg"))) == 10
    entry = json.loads((root / "annot" / "train.json").read_text(encoding="utf-8"))[0]
    assert set(entry) == {"image", "center", "scale", "joints", "joints_vis", "head_box"}
    records = pose_data.load_split(root, "train") + pose_data.load_split(root, "valid")
    assert len(records) == 10
    for record in records:
        assert record.joints.shape == (16, 2) and record.visible.sum() >= 12
        inside = record.joints[record.visible]
        assert np.all((inside >= 0) & (inside <= 127))
        # The crop square (after the loader's corrections) holds the figure.
        assert np.all(np.abs(inside - record.center) <= record.side / 2)
        # The head box is around the head: upper neck and head top lie inside it.
        (x1, y1), (x2, y2) = record.head_box
        for x, y in record.joints[[8, 9]]:
            assert x1 - 1e-6 <= x <= x2 + 1e-6 and y1 - 1e-6 <= y <= y2 + 1e-6


def test_same_seed_same_data(data, tmp_path):
    root, _ = data
    synthetic_pose.write_dataset(tmp_path, num_images=10, seed=3, size=128)
    valid = (root / "annot" / "valid.json").read_text(encoding="utf-8")
    assert (tmp_path / "annot" / "valid.json").read_text(encoding="utf-8") == valid
    other = synthetic_pose.write_dataset(tmp_path / "other", num_images=10, seed=4, size=128)
    assert other == {"train": 8, "valid": 2}
    assert (tmp_path / "other" / "annot" / "valid.json").read_text(encoding="utf-8") != valid


def test_figures_face_the_camera():
    # Right joints sit on the image's left of their left partners along the shoulder and hip lines.
    rng = np.random.default_rng(0)
    for _ in range(20):
        joints = synthetic_pose.random_pose(rng, 40.0, np.array([100.0, 120.0]))
        assert joints[12, 0] < joints[13, 0] and joints[2, 0] < joints[3, 0]


def test_the_image_is_cluttered_and_shows_the_figure(data):
    root, _ = data
    (record,) = pose_data.load_split(root, "train")[:1]
    image = pose_data.read_image(record.image).astype(float)
    assert image.shape == (128, 128, 3) and image.std() > 20
    head = np.round((record.joints[8] + record.joints[9]) / 2).astype(int)
    np.testing.assert_allclose(image[head[1], head[0]], synthetic_pose.HEAD_COLOUR, atol=40)


@pytest.mark.parametrize("kwargs, message", [(dict(num_images=1), "images"), (dict(size=32), "size"),
                                             (dict(clutter="crowd"), "clutter must be one of none, shapes, figures")])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_pose.write_dataset(tmp_path, **kwargs)


def _todays_render_example(rng, size):
    """``render_example`` as it was before ``clutter`` (commit af0ab75), transcribed: the default must not move."""
    image = synthetic_pose.background(rng, size, size)
    for _ in range(int(rng.integers(1, 4))):
        torso = rng.uniform(0.1, 0.2) * size
        joints = synthetic_pose.random_pose(rng, torso, rng.uniform(0, size, size=2))
        keep = rng.random(len(LIMBS)) < 0.5
        synthetic_pose.draw_figure(image, joints, torso, rng, [limb for limb, k in zip(LIMBS, keep) if k],
                                   head=rng.random() < 0.5)
    torso = rng.uniform(0.15, 0.22) * size
    pelvis = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size + [0, 0.05 * size]
    joints = synthetic_pose.random_pose(rng, torso, pelvis)
    synthetic_pose.draw_figure(image, joints, torso, rng)
    low, high = joints.min(axis=0), joints.max(axis=0)
    scale = float(max(high - low) / 200.0)
    center = (low + high) / 2
    visible = np.all((joints >= 0) & (joints <= size - 1), axis=1)
    half = 0.5 * np.linalg.norm(joints[9] - joints[8])
    mid = (joints[8] + joints[9]) / 2
    return image, {"center": [float(center[0] + 1), float(center[1] + 1 - 15 * scale)], "scale": scale,
                   "joints": (joints + 1).round(2).tolist(), "joints_vis": visible.astype(int).tolist(),
                   "head_box": (np.stack([mid - half, mid + half]) + 1).round(2).tolist()}


def _digest(root) -> str:
    """One checksum over a data folder's images and annotations (not dataset.json, which is new)."""
    digest = hashlib.sha256()
    annotations = [root / "annot" / "train.json", root / "annot" / "valid.json"]
    for path in sorted((root / "images").glob("*.jpg")) + annotations:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_default_is_todays_output_byte_for_byte(tmp_path):
    synthetic_pose.write_dataset(tmp_path / "default", num_images=6, seed=5, size=96)
    synthetic_pose.write_dataset(tmp_path / "none", num_images=6, seed=5, size=96, clutter="none")
    rng, digest, entries = np.random.default_rng(5), hashlib.sha256(), []
    for index in range(6):
        image, entry = _todays_render_example(rng, 96)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        digest.update(f"{index:05d}.jpg".encode() + jpeg.tobytes())
        entries.append({"image": f"{index:05d}.jpg", **entry})
    for split, items in (("train.json", entries[:5]), ("valid.json", entries[5:])):
        digest.update(split.encode() + json.dumps(items, indent=2).encode())
    assert _digest(tmp_path / "default") == _digest(tmp_path / "none") == digest.hexdigest()
    assert json.loads((tmp_path / "default" / "dataset.json").read_text(encoding="utf-8")) == {
        "name": "synthetic stick figures", "generator": "common.pose.synthetic", "images": 6, "seed": 5, "size": 96,
        "clutter": "none"}


def _stray_limb_pixels(image, joints, torso) -> int:
    """Pixels of a limb colour inside the figure's crop and away from its skeleton (beyond 1.5 limb widths)."""
    palette = np.array(synthetic_pose.PALETTE[:6])  # the limbs' colours, the neck's white aside
    limb = (np.abs(image[:, :, None, :].astype(int) - palette).max(axis=-1) <= 30).any(axis=-1)
    width = max(2, int(round(0.13 * torso)))  # draw_figure's limb width
    near = np.zeros(image.shape[:2], np.uint8)
    for a, b, _ in LIMBS:
        ends = [tuple(int(round(v)) for v in joints[j]) for j in (a, b)]
        cv2.line(near, *ends, 1, 3 * width + 6)
    centre, side = synthetic_pose.crop_square(joints)
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    crop = np.maximum(np.abs(x - centre[0]), np.abs(y - centre[1])) <= side / 2
    return int((limb & (near == 0) & crop).sum())


def _cluttered_canvas(clutter, seed):
    """A figure drawn over ``clutter`` on a black canvas, so every limb-coloured pixel is the figure's or clutter's."""
    rng = np.random.default_rng(seed)
    torso = 25.0
    joints = synthetic_pose.random_pose(rng, torso, np.array([64.0, 72.0]))
    image = np.zeros((128, 128, 3), np.uint8)
    others = synthetic_pose.add_clutter(image, clutter, np.random.default_rng(seed + 100), joints, torso)
    synthetic_pose.draw_figure(image, joints, torso, rng)
    return image, joints, torso, others


def test_shapes_and_figures_put_limb_coloured_pixels_away_from_the_figure():
    counts = {clutter: [_stray_limb_pixels(*_cluttered_canvas(clutter, seed)[:3]) for seed in range(4)]
              for clutter in synthetic_pose.CLUTTER}
    assert counts["none"] == [0, 0, 0, 0]  # the figure's own pixels all lie near its skeleton
    limb_area = 0.6 * 25 * max(2, round(0.13 * 25))  # one limb: ~0.6 torso long, draw_figure's width
    assert all(count > 2 * limb_area for count in counts["shapes"]), counts  # at least two limbs' worth each
    # Second figures add to the same loose limbs (their own random stream).
    assert all(f > s for f, s in zip(counts["figures"], counts["shapes"])), counts


def test_second_figures_are_cut_by_the_crop_and_only_in_figures():
    cut = []
    for seed in range(6):
        image, joints, torso, others = _cluttered_canvas("figures", seed)
        assert 1 <= len(others) <= 2 and all(o.shape == (16, 2) for o in others)
        assert _cluttered_canvas("shapes", seed)[3] == [] and _cluttered_canvas("none", seed)[3] == []
        centre, side = synthetic_pose.crop_square(joints)
        for other in others:
            inside = np.all(np.abs(other - centre) <= side / 2, axis=1)
            cut.append(0 < inside.sum() < 16)
            # The size of the annotated person, not a small background figure.
            assert 0.8 * torso <= np.linalg.norm(other[7] - other[6]) <= 1.2 * torso
    assert np.mean(cut) >= 0.8, cut


@pytest.fixture(scope="module")
def cluttered(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluttered")
    for clutter in synthetic_pose.CLUTTER:
        synthetic_pose.write_dataset(root / clutter, num_images=5, seed=2, size=96, clutter=clutter)
    return root


def test_clutter_changes_every_image_but_no_annotation(cluttered):
    annotations = {c: [(cluttered / c / "annot" / f"{s}.json").read_bytes() for s in ("train", "valid")]
                   for c in synthetic_pose.CLUTTER}
    # Second figures and loose limbs add no person and move no joint: the annotated one is at center/scale.
    assert annotations["none"] == annotations["shapes"] == annotations["figures"]
    for name in sorted(p.name for p in (cluttered / "none" / "images").iterdir()):
        images = {c: pose_data.read_image(cluttered / c / "images" / name).astype(int) for c in synthetic_pose.CLUTTER}
        assert np.abs(images["none"] - images["shapes"]).max() > 100
        assert np.abs(images["shapes"] - images["figures"]).max() > 100
    settings = json.loads((cluttered / "figures" / "dataset.json").read_text(encoding="utf-8"))
    assert settings["clutter"] == "figures" and settings["seed"] == 2


@pytest.mark.parametrize("clutter", ["shapes", "figures"])
def test_same_seed_same_cluttered_images(cluttered, tmp_path, clutter):
    synthetic_pose.write_dataset(tmp_path, num_images=5, seed=2, size=96, clutter=clutter)
    assert _digest(tmp_path) == _digest(cluttered / clutter)
    synthetic_pose.write_dataset(tmp_path / "other", num_images=5, seed=3, size=96, clutter=clutter)
    assert _digest(tmp_path / "other") != _digest(cluttered / clutter)
