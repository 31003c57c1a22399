"""Bad slides and annotations: errors that name the file; `zoo tri-al`'s defaults."""

import pytest

from tests import helpers


def test_cli_reports_an_unreadable_slide_in_one_line(zoo, tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "bad.tiff").write_bytes(b"garbage")
    helpers.qupath_geojson(tmp_path / "slides" / "bad.geojson", "Stroma", [[1, 1], [5, 1], [5, 5], [1, 1]])
    done = zoo("triplets", tmp_path / "slides", tmp_path / "out", "--tile-size", 32)
    assert done.returncode == 2, done.stderr
    assert "bad.tiff" in done.stderr and "cannot be opened" in done.stderr and "Traceback" not in done.stderr


def test_tri_al_defaults_are_the_originals_and_the_help_names_the_cpu_deviations(capsys):
    from common import cli

    args = cli.build_parser().parse_args(["tri-al", "data", "out"])
    assert (args.learning_rate, args.patience) == (1.5e-4, 5)  # paper III
    assert (args.momentum, args.nesterov, args.decay, args.batch_size) == (0.9, True, 1e-6, 128)  # the original
    assert args.width is None and args.head_units is None  # VGG16 and 4096, or those of --source-model
    assert cli.build_parser().parse_args(["tri-al", "data", "out", "--no-nesterov"]).nesterov is False
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["tri-al", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--width", "--head-units", "--batch-size"):
        assert "CPU deviation" in text.split(flag)[-1].split(" --")[0], flag
    assert "4096, the original's" in text and "momentum (the original's 0.9)" in text
