"""The zoo command line: prepare, train, cross-validate, evaluate, predict, export, serve.

Bad input ends the command with a one-line message naming the file or the
argument and exit status 2, never a traceback.

One module per wing (``ct``, ``train``, ``serve``, ``slides``, ``pose``,
``studies``, ``convert``), each subcommand's parser beside its action; ``options`` holds
the argument types they share. ``-q``/``-v``, before or after the subcommand, set how
much it says (``verbosity``). The CLI may import every wing, inside the
actions, so that ``zoo --help`` and argument errors never wait for TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from common import errors

logger = logging.getLogger(__name__)

# Before TensorFlow is imported anywhere: oneDNN is faster on AVX2 CPUs (SPEC,
# "speed defaults") and TensorFlow's start-up chatter hides our own output (``quiet`` drops what this misses).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    """``zoo``'s parser: every wing's subcommands, each parser set to run its action."""
    from common.cli import convert, ct, pose, serve, slides, studies, train, verbosity

    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    verbosity.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for wing in (studies, ct, train, serve, slides, pose, convert):
        for add in wing.PARSERS:
            add(sub)
    verbosity.add_to_subcommands(parser)
    return parser


def _negative_values_attached(argv: list[str]) -> list[str]:
    """``--window -160,240`` as ``--window=-160,240``: argparse takes a value starting with "-" for an option.

    (It accepts plain negative numbers, not "-160,240".) No zoo option name starts with a digit, so a
    token "-<digit>..." after an option is always that option's value.
    """
    joined = []
    for token in argv:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and re.match(r"-\d", token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def parse_args(argv=None) -> argparse.Namespace:
    """``zoo``'s arguments as the command line gives them (``sys.argv[1:]`` by default)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return build_parser().parse_args(_negative_values_attached(argv))


def _utf8_output() -> None:
    """UTF-8 on an ASCII stdout/stderr (a C or POSIX locale without Python's UTF-8 mode), as that mode would.

    The tables print ``±``; without this a CI job's ASCII locale turned a finished command into a
    UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "encoding", "utf-8").lower() in ("ascii", "ansi_x3.4-1968") and \
                hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")


def _data_error_inside_tensorflow(error: Exception) -> str | None:
    """The one line of a DataError that tf.data raised inside a ``numpy_function`` (wrapped with its traceback).

    Records are checked before training starts; this catches what broke after (a file deleted mid-run).
    """
    text = str(error)
    if type(error).__module__.startswith("tensorflow") and " DataError: " in text:
        return text.split(" DataError: ", 1)[1].splitlines()[0]
    return None


def main(argv=None) -> int:
    _utf8_output()
    from common.cli import quiet, verbosity

    with quiet.tensorflow_noise_filtered():  # checking some values imports TensorFlow (zoo tri-al --strategy)
        args = parse_args(argv)

    try:
        with verbosity.configured(args.log_level), quiet.tensorflow_noise_filtered():
            logger.debug("zoo %s options: %s", args.command, ", ".join(
                f"{name}={value}" for name, value in vars(args).items()
                if name not in ("handler", "log_level", "command")))
            return args.handler(args) or 0
    except (errors.DataError, ValueError, OSError) as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        line = _data_error_inside_tensorflow(error)
        if line is None:
            raise
        print(f"zoo {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
