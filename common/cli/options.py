"""Argument types and help shared by the subcommands' parsers."""

from __future__ import annotations

import argparse
import json
import sys


def numbers(cast, names: str):
    """An argparse type for comma-separated numbers, e.g. ``numbers(int, "ROW,COL")``."""
    count = len(names.split(","))

    def parse(text: str) -> tuple:
        try:
            values = tuple(cast(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {names}, got {text!r}")
        return values

    return parse


hu_window = numbers(float, "LOW,HIGH")


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated integers, e.g. ``0,10,20``."""
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def positive(cast):
    """An argparse type for a number > 0, e.g. ``positive(float)``."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value

    return parse


def case_list(text: str) -> list[str]:
    return [c for c in text.split(",") if c]


def metric_names(text: str) -> tuple[str, ...]:
    from common.ct.metrics import METRIC_NAMES

    names = tuple(n for n in text.split(",") if n)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"metrics must be among {', '.join(METRIC_NAMES)}, got {text!r}")
    return names


METRICS_HELP = ("table columns, comma-separated (default dice,hd95,assd; the EAS U-Net paper's Table 1, its ASD "
                 "as the LiTS evaluation computes it: dice,voe,assd_lits,precision,recall,hd)")


def fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """Adds ``new`` (with ``kwargs``) and keeps ``old`` working for one release, with a line naming ``new``.

    One flag has one meaning across the subcommands (``--size`` was voxels X,Y,Z in one, pixels H,W in
    another); the old spelling sets the same value and says what to type instead.
    """
    parser.add_argument(new, **kwargs)

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: {old} is deprecated and goes in the next release; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, type=kwargs.get("type"), action=Deprecated, help=argparse.SUPPRESS)
