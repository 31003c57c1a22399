import json

import cv2
import numpy as np
import pytest

from common.slides import synthetic as synthetic_slides
from common.slides import triplets
from common.studies import tri_al as tri_al_study

TINY = ["--width", "0.0625", "--runs", "2", "--iterations", "2", "--budget", "6", "--candidates", "9",
        "--initial-per-class", "2", "--epochs", "1", "--source-epochs", "1", "--learning-rate", "1e-3",
        "--momentum", "0.9", "--batch-size", "16"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two labs of three slides, their triplets, and the folder a `zoo tri-al` run writes into."""
    root = tmp_path_factory.mktemp("tri_al_study")
    synthetic_slides.write_cohort(root / "slides", slides_per_lab=3, seed=2, size=(512, 512))
    triplets.prepare_triplets(root / "slides", root / "triplets", tile_size=32, max_per_slide=15, log=lambda _: None)
    return root


def test_study_runs_resumes_and_reports_table_ii_and_figures(zoo, study):
    args = ["tri-al", study / "triplets", study / "out", "--strategy", "supervised", "ITER", "--fractions",
            "0.5,1", *TINY]
    done = zoo(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Total (macro) |" in done.stdout and "TRI-AL_ITER" in done.stdout and "TRI-SL(50%)" in done.stdout
    plan = json.loads((study / "out" / "study.json").read_text())
    target = sum(plan["target"].values(), [])
    assert all(s.startswith("labB") for s in target) and all(s.startswith("labA") for s in plan["source"]["train"])
    assert not set(plan["target"]["train"]) & set(plan["target"]["test"])
    for run in (0, 1):
        assert (study / "out" / "ITER" / f"run_{run}" / "iteration_1.json").exists()
    stamp = (study / "out" / "ITER" / "run_0" / "iteration_1.json").stat().st_mtime_ns
    again = zoo(*args, timeout=600)  # everything is finished: the rerun only reads the states
    assert again.returncode == 0, again.stderr[-3000:]
    assert (study / "out" / "ITER" / "run_0" / "iteration_1.json").stat().st_mtime_ns == stamp
    assert again.stdout.splitlines()[-12:] == done.stdout.splitlines()[-12:]

    report = zoo("tri-al-report", study / "out", timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (study / "out" / "table_ii.md").read_text()
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]]
    assert rows == ["Blood", "Damaged", "Muscle", "Stroma", "Urothelium", "Total (micro)", "Total (macro)", "Runs",
                    "Training triplets"]
    assert table.splitlines()[0].split(" | ")[1:] == ["TRI-CNN", "TRI-SL(50%)", "TRI-SL(100%)", "TRI-AL_ITER |"]
    fig2 = cv2.imread(str(study / "out" / "fig2_class_shares.png"))
    fig3 = cv2.imread(str(study / "out" / "fig3_slide_map.png"))
    assert fig2 is not None and fig2.shape[2] == 3 and fig3 is not None and fig3.shape[1] > fig3.shape[0]


def test_rerun_with_other_settings_is_refused(study, tmp_path):
    config = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), width=0.0625, runs=1)
    tri_al_study._plan(config, json.loads((study / "triplets" / triplets.MANIFEST).read_text()))
    other = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), width=0.125, runs=1)
    with pytest.raises(ValueError, match="other settings"):
        tri_al_study.run_study(other)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(strategies=("RANDOM",)), "strategy"), (dict(runs=0), "runs"), (dict(fractions=(0.0,)), "fractions"),
])
def test_bad_study_configuration(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tri_al_study.StudyConfig(data="d", out="o", **kwargs)


def test_a_lab_with_too_few_slides_is_named(study, tmp_path):
    config = tri_al_study.StudyConfig(data=str(study / "triplets"), out=str(tmp_path), target_lab="C")
    with pytest.raises(ValueError, match="lab 'C' has 0 slides"):
        tri_al_study.run_study(config)
    assert np.isin(["labA_000"], list(json.loads((study / "triplets" / triplets.MANIFEST).read_text())["slides"])).all()
