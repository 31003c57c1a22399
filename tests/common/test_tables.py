"""The one table builder of the reports."""

from common import tables


def test_markdown_table_with_an_empty_corner_cell():
    text = tables.markdown(["", "A", "B"], [["Dice", "1.00", "2.00"], ["Runs", "5", "3"]])
    assert text.splitlines() == ["| | A | B |", "|---|---|---|", "| Dice | 1.00 | 2.00 |", "| Runs | 5 | 3 |"]


def test_mean_std_cells_scale_both_numbers():
    assert tables.mean_std(0.8765, 0.0123, scale=100) == "87.65 (± 1.23)"
    assert tables.mean_std(3.0, 0.5) == "3.00 (± 0.50)"


def test_a_std_that_does_not_exist_prints_as_a_dash():
    assert tables.mean_std(0.8765, float("nan"), scale=100) == "87.65 (-)"
