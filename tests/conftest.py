"""Shared fixtures: a tiny synthetic cohort, its prepared shards, and a `zoo` runner."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# 64 px slices at twice the default spacing keep the phantom's anatomy in view.
TINY_SIZE = (64, 64, 12)
TINY_SPACING = (5.4, 5.4, 8.0)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> pathlib.Path:
    from common.ct import synthetic as synthetic_ct

    root = tmp_path_factory.mktemp("cohort")
    synthetic_ct.write_cohort(root, num_cases=4, seed=1, size=TINY_SIZE, spacing=TINY_SPACING)
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_cohort, tmp_path_factory) -> pathlib.Path:
    from common.ct import shards

    out = tmp_path_factory.mktemp("prepared")
    shards.prepare(tiny_cohort, out, log=lambda _: None)
    return out


def run_zoo(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Runs the `zoo` CLI in a fresh process and returns its completed process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "common.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)


@pytest.fixture
def zoo():
    return run_zoo
