"""Markdown tables of results, the one way every report of the zoo prints them.

Every ± the zoo prints is the sample standard deviation (ddof 1, ``common.stats``), and every table with one
says so in its caption (``spread``):

>>> print(markdown(["class", "dice"], [["liver", mean_std(0.9512, 0.0123, scale=100)]], caption=spread("cases")))
| class | dice |
|---|---|
| liver | 95.12 (± 1.23) |
<BLANKLINE>
mean (± sample std, ddof 1) over cases
"""

from __future__ import annotations

import math


def mean_std(mean: float, std: float, scale: float = 1.0) -> str:
    """The papers' cell: ``mean (± std)`` with two decimals, both multiplied by ``scale`` (100 for percent).

    A NaN std (one value: no sample std) prints as ``mean (-)``.
    """
    if math.isnan(std):
        return f"{scale * mean:.2f} (-)"
    return f"{scale * mean:.2f} (± {scale * std:.2f})"


def spread(over: str) -> str:
    """The caption of a table of ``mean_std`` cells: what the ± is, over what."""
    return f"mean (± sample std, ddof 1) over {over}"


def markdown(header, rows, caption: str | None = None) -> str:
    """A Markdown table: a header row, the separator, one line per row (cells are strings), then the caption."""

    def line(cells) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    table = "\n".join([line(header), "|---" * len(header) + "|", *map(line, rows)])
    return f"{table}\n\n{caption}" if caption else table
