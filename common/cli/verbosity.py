"""How much ``zoo`` says: the zoo's log lines on stdout, INFO by default, ``-q`` WARNING, ``-v`` DEBUG.

Library code logs through ``logging.getLogger(__name__)`` and adds no handler, so
importing the zoo into a ``model.fit`` script prints nothing it did not ask for
(Python's last-resort handler still shows warnings on stderr). Only the CLI
configures logging, and only for the zoo's own packages (``PACKAGES``), never the
root logger: TensorFlow's and absl's loggers stay as they are (``quiet`` keeps
their C++ lines out, a separate matter). Each line is its bare message on
stdout, as ``print`` wrote it before, so the default output did not change.

Under ``-q`` Keras' progress (``progress``) is off as well; what a command exists to
print (``zoo evaluate``'s table, ``zoo compare``'s test) still goes to stdout, and an
error is still its one line on stderr (``common.cli.main``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

PACKAGES = ("common", "acnn_pose", "eas_unet", "tri_al", "unet_transformer")


def add_arguments(parser: argparse.ArgumentParser, default=logging.INFO) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` on ``parser``, setting ``log_level`` (``argparse.SUPPRESS``: unset)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                       default=default, help="warnings and errors only: no progress lines or bars (a table a command "
                                             "prints as its result still prints)")
    group.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                       default=default, help="also debug lines (the options as resolved)")


def add_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """The flags on every subcommand's parser too, nested ones included (``zoo convert hourglass``), so they work
    after the subcommand as well as before it.

    Their default there is ``SUPPRESS``: argparse copies a subparser's defaults over what the parser before it
    parsed, so any other default would undo ``zoo -q prepare``.
    """
    for action in parser._actions:  # argparse lists subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                add_arguments(sub, default=argparse.SUPPRESS)
                add_to_subcommands(sub)


@contextlib.contextmanager
def configured(level: int = logging.INFO):
    """Within the block the zoo's loggers write ``%(message)s`` at ``level`` and above to stdout; then as before.

    They stop propagating meanwhile, so a handler on the root logger (absl's, once something installs it) does
    not print each line a second time. Restoring them afterwards keeps ``main`` called in-process (tests) from
    piling up handlers.
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in PACKAGES]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, (old_level, propagate) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = propagate


def progress() -> int:
    """``fit``'s ``verbose``: a progress bar on a terminal, a line per epoch otherwise, nothing under ``-q``."""
    if not logging.getLogger(PACKAGES[0]).isEnabledFor(logging.INFO):
        return 0
    return 1 if sys.stdout.isatty() else 2
