import json

import numpy as np
import openslide
import pytest

from common.slides import annotations, reader
from common.slides import synthetic as synthetic_slides


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    ids = synthetic_slides.write_cohort(root, slides_per_lab=1, seed=3, size=(512, 768))
    return root, ids


def test_openslide_opens_every_level_with_its_magnification(cohort):
    root, ids = cohort
    assert ids == ["labA_000", "labB_000"]
    slide = openslide.OpenSlide(str(root / "labA_000.tiff"))
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert slide.level_dimensions == ((768, 512), (192, 128))
    assert slide.level_downsamples == (1.0, 4.0)
    assert reader.base_magnification(slide, "labA_000.tiff") == 40.0  # from mpp 0.25
    assert "objective-power=40" in slide.properties["tiff.ImageDescription"]
    level0 = np.asarray(slide.read_region((0, 0), 0, (768, 512)))[..., :3].astype(float)
    level1 = np.asarray(slide.read_region((0, 0), 1, (192, 128)))[..., :3].astype(float)
    pooled = level0.reshape(128, 4, 192, 4, 3).mean((1, 3))
    assert np.abs(pooled - level1).mean() < 2.0  # the pyramid level is the downsampled slide


def test_annotations_name_known_classes_inside_the_slide(cohort):
    root, ids = cohort
    manifest = json.loads((root / "slides.json").read_text(encoding="utf-8"))
    assert {s: e["lab"] for s, e in manifest["slides"].items()} == {"labA_000": "A", "labB_000": "B"}
    for slide_id in ids:
        regions, skipped = annotations.read_annotations(root / f"{slide_id}.geojson", (768, 512))
        assert regions and not skipped, slide_id
        assert {a.label for a in regions} <= set(range(len(annotations.CLASSES)))
        raw = json.loads((root / f"{slide_id}.geojson").read_text(encoding="utf-8"))["features"][0]
        assert raw["properties"]["classification"]["name"].lower() in annotations.CLASSES


def test_aperio_and_leica_slides_carry_what_openslide_reports_for_real_scans(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (320, 384, 3), dtype=np.uint8)
    synthetic_slides.write_aperio(tmp_path / "a.svs", rgb, mpp=0.5, magnification=20)
    slide = openslide.OpenSlide(str(tmp_path / "a.svs"))
    props = slide.properties
    assert (props["openslide.vendor"], props["openslide.objective-power"], props["openslide.mpp-x"]) == \
        ("aperio", "20", "0.5")
    np.testing.assert_array_equal(np.asarray(slide.read_region((0, 0), 0, (384, 320)))[..., :3], rgb)
    synthetic_slides.write_leica(tmp_path / "b.scn", rgb, origin=(100, 60), canvas=(640, 512), mpp=0.25,
                                 magnification=40)
    slide = openslide.OpenSlide(str(tmp_path / "b.scn"))
    props = slide.properties
    assert props["openslide.vendor"] == "leica" and slide.dimensions == (640, 512)
    assert [int(props[f"openslide.bounds-{k}"]) for k in ("x", "y", "width", "height")] == [100, 60, 384, 320]
    assert (props["openslide.objective-power"], float(props["openslide.mpp-x"])) == ("40", 0.25)
    region = np.asarray(slide.read_region((0, 0), 0, (640, 512)))
    np.testing.assert_array_equal(region[60:380, 100:484, :3], rgb)  # the scanned area, offset
    assert (region[:60, :, 3] == 0).all() and (region[:, :100, 3] == 0).all()  # transparent around it
    with pytest.raises(ValueError, match="must fit in canvas"):
        synthetic_slides.write_leica(tmp_path / "c.scn", rgb, origin=(300, 0), canvas=(640, 512))


def test_labs_differ_in_stain_colour_only():
    rgb = {lab: synthetic_slides.render_slide(np.random.default_rng(0), (256, 256), lab) for lab in "AB"}
    np.testing.assert_array_equal(rgb["A"][1], rgb["B"][1])  # same tissue layout from the same seed
    tissue = rgb["A"][1] != 255
    means = {lab: rgb[lab][0].reshape(16, 16, 16, 16, 3).mean((1, 3))[tissue].mean(0) for lab in "AB"}
    assert np.abs(means["A"] - means["B"]).max() > 10


def _class_means(rgb, labels):
    cells = rgb.reshape(labels.shape[0], 16, labels.shape[1], 16, 3).mean((1, 3))
    return {c: cells[labels == c].mean(0) for c in range(len(annotations.CLASSES)) if (labels == c).any()}


def test_hard_shift_gives_each_slide_its_own_stains_and_lab_b_its_own_blood_and_muscle(monkeypatch):
    def render(seed, lab):
        return synthetic_slides.render_slide(np.random.default_rng(seed), (512, 512), lab, regions=15, shift="hard")
    (a0, labels0), (a1, labels1) = render(0, "A"), render(1, "A")
    for c in range(len(annotations.CLASSES)):  # dealt in turn: every class is in every slide
        assert (labels0 == c).sum() > 0.05 * (labels0 != 255).sum(), c
    stroma = annotations.CLASSES.index("stroma")
    # two slides of one lab: the same class in different colours (per-slide stains, per-region densities)
    assert np.abs(_class_means(a0, labels0)[stroma] - _class_means(a1, labels1)[stroma]).max() > 3
    assert synthetic_slides.TARGET_TEXTURES["blood"] != synthetic_slides.TEXTURES["blood"]
    assert set(synthetic_slides.TARGET_TEXTURES) == {"blood", "muscle"}  # the other classes keep lab A's textures
    b0, labels_b = render(0, "B")
    np.testing.assert_array_equal(labels0, labels_b)  # same layout, other lab
    assert np.abs(b0.astype(float) - render(0, "B")[0]).max() == 0  # deterministic

    def sharpness(rgb):
        return np.abs(np.diff(rgb.astype(float).mean(-1), axis=1)).mean()
    monkeypatch.setattr(synthetic_slides, "TARGET_NOISE_SD", 0.0)
    blurred = render(0, "B")[0]
    monkeypatch.setattr(synthetic_slides, "TARGET_BLUR_SIGMA", (1e-3, 1e-3))  # a 1-pixel kernel: no blur
    assert sharpness(blurred) < 0.8 * sharpness(render(0, "B")[0])  # lab B is scanned out of focus


def test_hard_cohort_records_label_noise_of_rough_annotations(tmp_path):
    ids = synthetic_slides.write_cohort(tmp_path, slides_per_lab=1, target_slides=2, seed=0, size=(1024, 1024),
                                        shift="hard")
    assert ids == ["labA_000", "labB_000", "labB_001"]
    manifest = json.loads((tmp_path / "slides.json").read_text(encoding="utf-8"))
    assert manifest["shift"] == "hard"
    for slide_id in ids:
        assert 0.01 < manifest["slides"][slide_id]["label_noise"] < 0.12, slide_id
        regions, skipped = annotations.read_annotations(tmp_path / f"{slide_id}.geojson", (1024, 1024))
        assert regions and not skipped  # jittered vertices stay inside the slide
    plain = synthetic_slides.write_cohort(tmp_path / "plain", slides_per_lab=1, seed=0, size=(1024, 1024))
    manifest = json.loads((tmp_path / "plain" / "slides.json").read_text(encoding="utf-8"))
    assert all(manifest["slides"][s]["label_noise"] == 0 for s in plain)  # polygons well inside their regions


def test_label_noise_counts_annotated_cells_of_another_class():
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 1
    ring = (np.array([[0, 0], [5, 0], [5, 7], [0, 7], [0, 0]]) * synthetic_slides.GRID
            + synthetic_slides.GRID / 2).tolist()
    feature = {"geometry": {"coordinates": [ring]}, "properties": {"classification": {"name": "Blood"}}}
    assert synthetic_slides.label_noise([feature], labels) == pytest.approx(2 / 6)  # columns 4, 5 of 0..5


@pytest.mark.parametrize("kwargs, message", [
    (dict(lab="C"), "lab"),
    (dict(size=(100, 256)), "size"),
    (dict(size=(64, 64)), "size"),
    (dict(shift="strong"), "shift"),
])
def test_bad_arguments(kwargs, message):
    arguments = {"size": (256, 256), "lab": "A", **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic_slides.render_slide(np.random.default_rng(0), arguments.pop("size"), arguments.pop("lab"),
                                      **arguments)


def test_target_slides_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="target_slides"):
        synthetic_slides.write_cohort(tmp_path, slides_per_lab=1, target_slides=0, size=(256, 256))


def test_rough_annotations_stay_on_the_slide():
    labels = np.zeros((16, 24), np.uint8)  # one region filling the slide to every edge
    for seed in range(5):
        features = synthetic_slides.annotation_features(np.random.default_rng(seed), labels, jitter=3.0)
        ring = np.asarray(features[0]["geometry"]["coordinates"][0])
        assert (ring >= 0).all() and (ring[:, 0] < 24 * 16).all() and (ring[:, 1] < 16 * 16).all()
