"""TensorFlow's C++ start-up lines kept out of what ``zoo`` prints.

TensorFlow 2.21 logs through absl before ``absl::InitializeLog`` runs, and those
lines ignore ``TF_CPP_MIN_LOG_LEVEL`` (abseil/abseil-cpp#1957): "oneDNN custom
operations are on", "Could not find cuda drivers", "failed call to cuInit" reach
stderr at every level. Neither library has a switch for them, so while a command
runs, file descriptor 2 goes through a pipe whose reader drops absl's INFO and
WARNING lines, its "before InitializeLog" notice and the no-GPU CUDA errors, and
passes every other line on. ``TF_CPP_MIN_LOG_LEVEL`` 0 or 1 turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ (cuda_\w+|cudart_stub)\.cc:\d+\] "
)


def _wanted() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("0", "1")


@contextlib.contextmanager
def tensorflow_noise_filtered():
    """Within the block, stderr lines matching ``NOISE`` are dropped; the rest pass unchanged."""
    if not _wanted():
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    reader, writer = os.pipe()
    os.dup2(writer, 2)
    os.close(writer)

    def pump():
        with os.fdopen(reader, "rb") as pipe:
            for line in pipe:
                if not NOISE.match(line):
                    os.write(stderr, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # closes the pipe's last writer: the reader drains it and stops
        thread.join(timeout=5)
        os.close(stderr)
