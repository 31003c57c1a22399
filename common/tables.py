"""Markdown tables of results, the one way every report of the zoo prints them.

>>> print(markdown(["class", "dice"], [["liver", mean_std(0.9512, 0.0123, scale=100)]]))
| class | dice |
|---|---|
| liver | 95.12 (± 1.23) |
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


def markdown(header, rows) -> str:
    """A Markdown table: a header row, the separator, then one line per row (cells are strings)."""

    def line(cells) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    return "\n".join([line(header), "|---" * len(header) + "|", *map(line, rows)])
