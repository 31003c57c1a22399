"""Bad slides and annotations: errors that name the file; `zoo tri-al`'s defaults."""

import json
import pathlib

import numpy as np
import pytest

from common.slides import synthetic as synthetic_slides
from tests import helpers


def test_cli_reports_an_unreadable_slide_in_one_line(zoo_here, tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "bad.tiff").write_bytes(b"garbage")
    helpers.qupath_geojson(tmp_path / "slides" / "bad.geojson", "Stroma", [[1, 1], [5, 1], [5, 5], [1, 1]])
    done = zoo_here("triplets", tmp_path / "slides", tmp_path / "out", "--tile-size", 32)
    assert done.returncode == 2, done.stderr
    assert "bad.tiff" in done.stderr and "cannot be opened" in done.stderr and "Traceback" not in done.stderr


def test_tri_al_defaults_are_the_originals_and_the_help_names_the_cpu_deviations(capsys):
    from common import cli

    args = cli.build_parser().parse_args(["tri-al", "data", "out"])
    assert (args.learning_rate, args.patience) == (1.5e-4, 5)  # paper III
    assert (args.momentum, args.nesterov, args.decay, args.batch_size) == (0.9, True, 1e-6, 128)  # the original
    assert args.base_filters is None and args.head_units is None  # VGG16 and 4096, or those of --source-model
    assert cli.build_parser().parse_args(["tri-al", "data", "out", "--no-nesterov"]).nesterov is False
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["tri-al", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--base-filters", "--head-units", "--batch-size"):
        assert "CPU deviation" in text.split(flag)[-1].split(" --")[0], flag
    assert "4096, the original's" in text and "momentum (the original's 0.9)" in text


def test_stain_augment_before_the_folders_says_where_to_put_it(capsys):
    from common import cli

    parser = cli.build_parser()
    assert parser.parse_args(["tri-al", "data", "out", "--stain-augment"]).stain_augment == 0.05
    assert parser.parse_args(["tri-al", "--stain-augment", "0.1", "data", "out"]).stain_augment == 0.1
    with pytest.raises(SystemExit):
        parser.parse_args(["tri-al", "--stain-augment", "data", "out"])
    assert "put --stain-augment after DATA and OUT" in capsys.readouterr().err


def test_lr_scale_multiplies_every_trainings_rate_and_study_json_records_the_product(tmp_path):
    from common import cli
    from common.cli import slides
    from common.studies import tri_al as tri_al_study

    parser = cli.build_parser()

    def config(*flags):
        return slides._study_config(parser.parse_args(["tri-al", "data", str(tmp_path), *flags]))

    assert parser.parse_args(["tri-al", "data", "out"]).lr_scale == 1.0 and config().train.learning_rate == 1.5e-4
    assert config("--lr-scale", "3").train.learning_rate == pytest.approx(4.5e-4)
    assert config("--learning-rate", "2e-4", "--lr-scale", "0.5").train.learning_rate == 1e-4
    manifest = {"slides": {name: {"lab": name[0].upper()} for name in ("a0", "a1", "b0", "b1", "b2")}}
    tri_al_study._plan(config("--lr-scale", "0.5"), manifest)  # the train settings serve source, TRI-SL and TRI-AL
    assert json.loads((tmp_path / "study.json").read_text())["settings"]["train"]["learning_rate"] == 7.5e-5
    tri_al_study._plan(config("--learning-rate", "7.5e-5"), manifest)  # the same rate: the same study, resumed
    for flags in (("--lr-scale", "2"), ("--learning-rate", "3e-4")):  # another rate, however given: refused alike
        with pytest.raises(ValueError, match="holds a study with other settings"):
            tri_al_study._plan(config(*flags), manifest)


@pytest.mark.parametrize("command, flag", [("tri-al", "--lr-scale"), ("tri-al-report", "--margin")])
def test_lr_scale_and_margin_must_be_positive(capsys, command, flag):
    from common import cli

    parser = cli.build_parser()
    folders = ["data", "out"] if command == "tri-al" else ["study"]
    assert getattr(parser.parse_args([command, *folders]), flag[2:].replace("-", "_")) == 1.0
    assert getattr(parser.parse_args([command, *folders, flag, "0.25"]), flag[2:].replace("-", "_")) == 0.25
    for value in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, *folders, flag, value])
        assert capsys.readouterr().err.splitlines()[-1] == \
            f"zoo {command}: error: argument {flag}: expected a number > 0, got {value!r}"


def _slide(folder, name, writer=synthetic_slides.write_pyramid, features=(), **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    writer(folder / f"{name}", np.full((256, 256, 3), 180, np.uint8), **kwargs)
    collection = {"type": "FeatureCollection", "features": list(features)}
    (folder / f"{pathlib.Path(name).stem}.geojson").write_text(json.dumps(collection))


def _feature(name):
    ring = [[40, 40], [200, 40], [200, 200], [40, 200], [40, 40]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", **({"classification": {"name": name}} if name else {})}}


def test_triplets_of_lab_folders_with_a_class_mapping_skip_and_count_the_rest(zoo_here, tmp_path):
    slides = tmp_path / "SLIDES"
    _slide(slides / "labA", "a1.tiff", features=[_feature("Tumor"), _feature(None), _feature(None),
                                                  _feature("Necrosis")])
    _slide(slides / "labB", "b1.tiff", features=[_feature("stroma")])
    done = zoo_here("triplets", slides, tmp_path / "out", "--tile-size", 32, "--max-per-slide", 4,
                    "--classes", "tumor = Urothelium")
    assert done.returncode == 0, done.stderr
    assert f"skipped 2 unclassified and 1 'Necrosis' annotations in {slides / 'labA' / 'a1.geojson'}" in done.stdout
    manifest = json.loads((tmp_path / "out" / "triplets.json").read_text(encoding="utf-8"))
    assert {s: (e["lab"], e["counts"]) for s, e in manifest["slides"].items()} == \
        {"a1": ("A", [0, 0, 0, 0, 4]), "b1": ("B", [0, 0, 0, 4, 0])}


def test_triplets_refuse_what_they_cannot_read_faithfully_naming_file_values_and_flag(zoo_here, tmp_path):
    _slide(tmp_path / "low" / "labA", "scan20.svs", synthetic_slides.write_aperio, [_feature("Stroma")],
           mpp=0.5, magnification=20)
    done = zoo_here("triplets", tmp_path / "low", tmp_path / "out", "--tile-size", 32, "--no-upsample")
    assert done.returncode == 2 and "scan20.svs: scanned at 20x" in done.stderr and "--no-upsample" in done.stderr
    _slide(tmp_path / "odd" / "labA", "odd.svs", synthetic_slides.write_aperio, [_feature("Stroma")],
           mpp=0.25, magnification=20)
    done = zoo_here("triplets", tmp_path / "odd", tmp_path / "out2", "--tile-size", 32)
    assert done.returncode == 2, done.stderr
    assert "odd.svs: objective power 20x and 0.25 um/px disagree" in done.stderr and "--magnification" in done.stderr
    done = zoo_here("triplets", tmp_path / "odd", tmp_path / "out2", "--tile-size", 32, "--magnification", 40)
    assert done.returncode == 0 and "wrote" in done.stdout, done.stderr
    done = zoo_here("triplets", tmp_path / "odd", tmp_path / "out3", "--classes", "Tumor=tumour")
    assert done.returncode == 2 and "--classes: class mapping tumor=tumour" in done.stderr
    assert not (tmp_path / "out3").exists()


PALETTE = np.array([synthetic_slides.QUPATH_COLOURS[name] for name in
                    ("blood", "damaged", "muscle", "stroma", "urothelium")], np.uint8)


def test_tri_al_predict_writes_qupath_geojson_and_the_colour_map_and_overwrites_nothing(zoo_here, tmp_path):
    labels = np.full((8, 8), 255, np.uint8)
    labels[1:7, 1:7], labels[2:5, 2:5] = 3, 4  # urothelium in stroma, glass around
    helpers.flat_slide(tmp_path / "slide.tiff", labels, PALETTE, 32)
    helpers.palette_classifier(PALETTE, tile_size=32).save(tmp_path / "model.keras")
    out, png = tmp_path / "pred.geojson", tmp_path / "fig3.png"
    args = ("tri-al-predict", tmp_path / "model.keras", tmp_path / "slide.tiff", out)
    done = zoo_here(*args, "--png", png, "--classes", "Tumor=urothelium", "--batch-size", 8)
    assert done.returncode == 0, done.stderr
    assert f"wrote 2 annotations to {out}: Stroma 27 tiles, Tumor 9 tiles" in done.stdout
    assert "36 of 64 tiles in tissue (32 px apart at 40x" in done.stdout
    features = json.loads(out.read_text(encoding="utf-8"))["features"]
    assert sorted(f["properties"]["classification"]["name"] for f in features) == ["Stroma", "Tumor"]
    tumour = next(f for f in features if f["properties"]["classification"]["name"] == "Tumor")
    assert tumour["geometry"] == {"type": "Polygon", "coordinates": [[[64, 64], [160, 64], [160, 160], [64, 160],
                                                                      [64, 64]]]}
    import cv2

    assert cv2.imread(str(png)).shape == (512, 2 * 512 + 150, 3)
    stamp = out.stat().st_mtime_ns
    done = zoo_here(*args)
    assert done.returncode == 2 and f"{out} exists; nothing is overwritten" in done.stderr
    assert out.stat().st_mtime_ns == stamp
    done = zoo_here(*args[:3], tmp_path / "cells.geojson", "--object-type", "detection")
    assert done.returncode == 0, done.stderr
    features = json.loads((tmp_path / "cells.geojson").read_text(encoding="utf-8"))["features"]
    kinds = {f["properties"]["objectType"] for f in features}
    assert kinds == {"detection"}


@pytest.mark.parametrize("extra, message", [
    (("--stride", "0"), "--stride must be positive, got 0"),
    (("--png", "fig.jpg"), "--png: fig.jpg needs the suffix .png"),
    (("--classes", "Tumor=tumour"), "--classes: class mapping tumor=tumour"),
])
def test_tri_al_predict_refuses_bad_flags_naming_them(zoo_here, tmp_path, extra, message):
    done = zoo_here("tri-al-predict", tmp_path / "model.keras", tmp_path / "slide.tiff", tmp_path / "p.geojson",
                    *extra)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    done = zoo_here("tri-al-predict", tmp_path / "model.keras", tmp_path / "slide.tiff", tmp_path / "p.txt")
    assert done.returncode == 2 and "p.txt needs the suffix .geojson" in done.stderr


def test_tri_al_predict_names_a_model_file_that_is_not_a_tri_cnn(zoo_here, tmp_path):
    import keras

    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Dense(5)]).save(tmp_path / "single.keras")
    done = zoo_here("tri-al-predict", tmp_path / "single.keras", tmp_path / "slide.tiff", tmp_path / "p.geojson")
    assert done.returncode == 2 and f"{tmp_path / 'single.keras'}: not a TRI-CNN" in done.stderr
    done = zoo_here("tri-al-predict", tmp_path / "gone.keras", tmp_path / "slide.tiff", tmp_path / "p.geojson")
    assert done.returncode == 2 and "gone.keras: no such model" in done.stderr
    assert not (tmp_path / "p.geojson").exists()
