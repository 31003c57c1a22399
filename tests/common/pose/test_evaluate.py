"""PCKh of a pose run with the paper Table 1 columns, through ``zoo eval-pose``."""

import json


def test_eval_pose_prints_the_table_1_columns(zoo_here, pose_data, pose_run):
    out, _ = pose_run
    done = zoo_here("eval-pose", out, pose_data, "--name", "tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    header, rule, row = done.stdout.strip().splitlines()
    assert header == "| Method | Head | Sho. | Elb. | Wri. | Hip | Kne. | Ank. | Total |"
    assert row.startswith("| tiny | ") and len(row.split("|")) == 11
    saved = json.loads((out / "pckh_valid.json").read_text())
    assert 0.0 <= saved["Total"] <= 100.0 and len(saved) == 16 + 8
