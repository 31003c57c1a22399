"""``zoo train-pose``'s flags (issue 37): ``--model`` (the registry's pose models) and ``--base-filters``, defaults
from the model's recipe; the old ``--attention`` / ``--no-attention`` and ``--features`` for one release, each with
its line; and a rerun of other options in a run folder written before the rename (``features``, ``attention``),
refused as any run's is, nothing written. (That such a folder resumes: tests/common/train/test_pose.py.)

In this process (``zoo_here``): the flag rows stop at the config the command would train with; the fault rows
fail before anything is trained.
"""

from __future__ import annotations

import json

import pytest

from common import registry
from common.train import pose as pose_training
from tests import helpers

ACNN, PLAIN = registry.names("pose")[:2]  # the model with attention masks, the plain network it builds on
TINY = ["--stacks", "2", "--input-size", "64", "--batch-size", "4", "--stage-factor", "0.001"]


def _deprecated(old: str, new: str) -> str:
    return f"zoo train-pose: {old} is deprecated and goes in the next release; use {new}"


def _recipe(model: str, **given) -> dict:
    recipe = registry.get(model).recipe
    return {"model": model, **{field: getattr(recipe, field) for field in pose_training.RECIPE_FIELDS}, **given}


FLAG_CASES = [
    # (flags, stderr lines, the config's model and recipe fields)
    ([], [], _recipe(ACNN)),
    (["--model", PLAIN], [], _recipe(PLAIN)),
    (["--attention"], [_deprecated("--attention", f"--model {ACNN}")], _recipe(ACNN)),
    (["--no-attention"], [_deprecated("--no-attention", f"--model {PLAIN}")], _recipe(PLAIN)),
    (["--features", "24", "--no-attention"],
     [_deprecated("--features", "--base-filters"), _deprecated("--no-attention", f"--model {PLAIN}")],
     _recipe(PLAIN, base_filters=24)),
    (["--base-filters", "24", "--stacks", "2", "--batch-size", "3"], [],
     _recipe(ACNN, base_filters=24, num_stacks=2, batch_size=3)),
]


@pytest.mark.parametrize("flags, lines, expected", FLAG_CASES)
def test_old_and_new_flags_give_the_same_config(zoo_here, monkeypatch, flags, lines, expected):
    given = []
    monkeypatch.setattr(pose_training, "train_pose", lambda config, overwrite=False: given.append(config))
    done = zoo_here("train-pose", "DATA", "RUN", *flags)
    assert (done.returncode, done.stderr.splitlines()) == (0, lines)
    assert {field: getattr(given[0], field) for field in expected} == expected


def _old_keys(record: dict) -> dict:
    """config.json as ``zoo train-pose`` wrote it before issue 37: ``attention`` and ``features``."""
    old = {("features" if key == "base_filters" else key): value for key, value in record.items()}
    return {**old, "attention": record["model"] == ACNN}


@pytest.fixture
def run_folder(pose_data, tmp_path):
    """A run folder's config.json for ``TINY`` at base_filters 16 on ``pose_data``, new keys or old."""

    def write(keys) -> str:
        config = pose_training.PoseTrainConfig(str(pose_data), str(tmp_path / "run"), model=ACNN, num_stacks=2,
                                               base_filters=16, input_size=64, batch_size=4, stage_factor=0.001)
        stages = registry.get(ACNN).stages(config.stage_factor)
        record = pose_training.run_record(config, len(pose_training.pose_data.load_split(pose_data, "train")), stages)
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.json").write_text(json.dumps(keys(record), indent=2), encoding="utf-8")
        return str(tmp_path / "run")

    return write


REFUSED = "zoo train-pose: error: {run}: holds a run with other options ({changes}); give a new folder or --overwrite"
FAULT_CASES = [
    # (name, config.json keys, flags, stderr lines)
    ("unknown model", None, ["--model", "vgg"],
     [f"zoo train-pose: error: model must be one of {registry.names('pose')}, got 'vgg'"]),
    ("old and new spelling at odds", None, ["--attention", "--model", PLAIN],
     [_deprecated("--attention", f"--model {ACNN}"),
      f"zoo train-pose: error: --attention: the old spelling of --model {ACNN}, which --model {PLAIN} contradicts; "
      "give --model only"]),
    ("input size off the stride", None, ["--input-size", "100"],
     [f"zoo train-pose: error: input_size must be a positive multiple of {registry.get(ACNN).stride} ({ACNN}'s "
      "stride), got 100"]),
    ("zero width", None, ["--base-filters", "0"],
     ["zoo train-pose: error: base_filters must be an integer >= 1, got 0"]),
    ("new folder, other width", dict, [*TINY, "--base-filters", "24"],
     [REFUSED.format(run="{run}", changes="base_filters 16 -> 24")]),
    ("old folder, other width, old spelling", _old_keys, [*TINY, "--features", "24", "--attention"],
     [_deprecated("--features", "--base-filters"), _deprecated("--attention", f"--model {ACNN}"),
      REFUSED.format(run="{run}", changes="features 16 -> 24")]),
    ("old folder, other width, new spelling", _old_keys, [*TINY, "--base-filters", "24"],
     [REFUSED.format(run="{run}", changes="features 16 -> 24")]),
    ("old folder, other model", _old_keys, [*TINY, "--base-filters", "16", "--no-attention"],
     [_deprecated("--no-attention", f"--model {PLAIN}"),
      REFUSED.format(run="{run}", changes=f"model {ACNN} -> {PLAIN}, stages differs")]),
]


@pytest.mark.parametrize("name, keys, flags, lines", FAULT_CASES, ids=[case[0] for case in FAULT_CASES])
def test_a_refused_command_is_one_line_and_writes_nothing(zoo_here, pose_data, run_folder, tmp_path, name, keys,
                                                         flags, lines):
    run = run_folder(keys) if keys else str(tmp_path / "run")
    before = helpers.checksums(tmp_path)
    done = zoo_here("train-pose", pose_data, run, *flags)
    assert (done.returncode, done.stderr.splitlines()) == (2, [line.format(run=run) for line in lines])
    assert helpers.checksums(tmp_path) == before
