"""Bad slides and annotations: errors that name the file."""

from tests import helpers


def test_cli_reports_an_unreadable_slide_in_one_line(zoo, tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "bad.tiff").write_bytes(b"garbage")
    helpers.qupath_geojson(tmp_path / "slides" / "bad.geojson", "Stroma", [[1, 1], [5, 1], [5, 5], [1, 1]])
    done = zoo("triplets", tmp_path / "slides", tmp_path / "out", "--tile-size", 32)
    assert done.returncode == 2, done.stderr
    assert "bad.tiff" in done.stderr and "cannot be opened" in done.stderr and "Traceback" not in done.stderr
