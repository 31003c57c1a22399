import logging

import cv2
import numpy as np
import pytest

import tri_al
from common.slides import synthetic as synthetic_slides
from common.studies import tri_al_report


def _run(f1, micro, samples=None):
    result = {"f1": f1, "micro_f1": micro, "macro_f1": float(np.mean(f1))}
    return result if samples is None else {**result, "samples": samples}


def test_table_ii_gives_mean_and_sample_std_in_percent():
    results = {
        "TRI-CNN": [_run([0.5, 0.6, 0.7, 0.8, 0.9], 0.75)],
        "TRI-AL_ITER": [_run([0.9, 0.9, 0.9, 0.9, 0.9], 0.9, 100), _run([0.8, 1.0, 0.9, 0.9, 0.9], 0.8, 120)],
    }
    lines = tri_al_report.table_ii(results).splitlines()
    assert lines[0] == "| | TRI-CNN | TRI-AL_ITER |"
    assert lines[2] == f"| Blood | 50.00(-) | 85.00({np.std([90, 80], ddof=1):.2f}) |"
    assert lines[7] == f"| Total (micro) | 75.00(-) | 85.00({np.std([90, 80], ddof=1):.2f}) |"
    assert lines[8] == "| Total (macro) | 70.00(-) | 90.00(0.00) |"
    assert lines[9:] == ["| Runs | 1 | 2 |", "| Training triplets | source | 110 |", "",
                         "F1 %: mean (sample std, ddof 1) over runs"]


def test_paired_tests_pair_runs_by_index_control_first():
    def runs(micros, samples, skip=()):
        return [{**_run([0.9] * 5, m, samples), "run": r} for r, m in enumerate(micros) if r not in skip]
    results = {
        "TRI-SL(20%)": runs([0.80, 0.82, 0.81], 100),
        "TRI-SL(40%)": runs([0.84, 0.85, 0.86], 200),
        "TRI-SL(100%)": runs([0.90, 0.91, 0.92], 500),
        "TRI-AL_ITER": runs([0.88, 0.99, 0.91], 210, skip=(1,)),  # run 1 unfinished: pairs runs 0 and 2
    }
    lines = tri_al_report.paired_tests(results).splitlines()
    assert lines[0].startswith("- TRI-SL(100%) - TRI-SL(20%), micro_f1 (%): difference +10.00")
    assert lines[1].startswith("- TRI-AL_ITER - TRI-SL(40%), micro_f1 (%): difference +4.50")  # nearest in samples
    assert lines[2].startswith("- TRI-AL_ITER - TRI-SL(100%), micro_f1 (%): difference -1.50")
    assert all("n = 3" in line for line in lines[:1]) and all("n = 2" in line for line in lines[1:])
    assert len(lines) == 3


def _runs(micros, macros, samples):
    return [{"f1": [m] * 5, "micro_f1": mi, "macro_f1": m, "samples": samples, "run": r}
            for r, (mi, m) in enumerate(zip(micros, macros))]


STUDY = {  # five runs of each column; ITER within 1 point of TRI-SL(100%), ENT and RANDOM below
    "TRI-SL(20%)": _runs([0.80, 0.82, 0.81, 0.80, 0.83], [0.78, 0.80, 0.79, 0.78, 0.81], 100),
    "TRI-SL(100%)": _runs([0.90, 0.91, 0.92, 0.90, 0.91], [0.88, 0.89, 0.90, 0.88, 0.89], 500),
    "TRI-AL_ITER": _runs([0.901, 0.908, 0.921, 0.902, 0.909], [0.881, 0.888, 0.901, 0.882, 0.889], 200),
    "TRI-AL_ENT": _runs([0.875, 0.88, 0.89, 0.87, 0.885], [0.85, 0.865, 0.87, 0.85, 0.86], 200),
    "TRI-AL_RANDOM": _runs([0.89, 0.90, 0.90, 0.88, 0.90], [0.86, 0.88, 0.88, 0.86, 0.87], 200),
}


def test_equivalence_tests_are_a_tost_of_each_tri_al_column_against_all_the_data():
    lines = tri_al_report.equivalence_tests(STUDY, margin=1.0).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"- TRI-AL_{s} - TRI-SL(100%), {m} (%)" for s in ("ITER", "ENT", "RANDOM") for m in ("micro_f1", "macro_f1")]
    assert all("), margin ±1.00: TOST p = " in line and line.endswith(", n = 5: " + verdict)
               for line, verdict in zip(lines, ["equivalent"] * 2 + ["not equivalent"] * 4))
    assert lines[0].startswith("- TRI-AL_ITER - TRI-SL(100%), micro_f1 (%): difference +0.02 (90% CI ")
    assert "margin ±5.00" in tri_al_report.equivalence_tests(STUDY, margin=5.0)
    assert tri_al_report.equivalence_tests({k: v for k, v in STUDY.items() if k != "TRI-SL(100%)"}) == ""


def test_iter_against_random_is_paired_over_runs_when_both_ran():
    lines = tri_al_report.allocation_tests(STUDY).splitlines()
    assert [line.split(": difference ")[0] for line in lines] == [
        "- TRI-AL_ITER - TRI-AL_RANDOM, micro_f1 (%)", "- TRI-AL_ITER - TRI-AL_RANDOM, macro_f1 (%)"]
    assert lines[0].startswith("- TRI-AL_ITER - TRI-AL_RANDOM, micro_f1 (%): difference +1.42 (95% CI ")
    assert lines[1].startswith("- TRI-AL_ITER - TRI-AL_RANDOM, macro_f1 (%): difference +1.82 (95% CI ")
    assert tri_al_report.allocation_tests({k: v for k, v in STUDY.items() if k != "TRI-AL_RANDOM"}) == ""


def test_the_report_is_table_ii_and_its_tests_with_the_margin_given():
    text = tri_al_report.report_text(STUDY, margin=2.5)
    assert text.startswith(tri_al_report.table_ii(STUDY) + "\nPaired over runs:\n\n"
                           + tri_al_report.paired_tests(STUDY))
    assert "\nEquivalence to TRI-SL(100%) within ±2.50 F1 points (paired TOST, 90% CI):\n\n" in text
    assert text.endswith("\nThe FNR allocation against uniform draws (ITER - RANDOM), paired over runs:\n\n"
                         + tri_al_report.allocation_tests(STUDY))
    assert tri_al_report.equivalence_tests(STUDY, 2.5) in text and "margin ±2.50" in text
    assert "- TRI-AL_RANDOM - TRI-SL(100%), micro_f1 (%): difference -1.40 (95% CI" in text  # paired_tests' pairs
    plain = tri_al_report.report_text({k: v for k, v in STUDY.items() if k in ("TRI-SL(20%)", "TRI-AL_ITER")})
    assert "Equivalence" not in plain and "RANDOM" not in plain


def test_class_share_figure(tmp_path):
    shares = np.array([[0.2] * 5, [0.1, 0.15, 0.2, 0.3, 0.25], [0.05, 0.15, 0.2, 0.35, 0.25]])
    tri_al_report.plot_shares(tmp_path / "fig2.png", shares, reference=[0.1, 0.2, 0.2, 0.3, 0.2])
    image = cv2.imread(str(tmp_path / "fig2.png"))
    assert image.shape == (400, 780, 3)
    stroma = np.all(image == tri_al_report.COLOURS[3], axis=-1)
    assert stroma.sum() > 100  # the stroma line and its legend are drawn in its colour


def test_slide_map_predicts_tissue_and_leaves_glass_white(tmp_path, caplog):
    rgb, labels = synthetic_slides.render_slide(np.random.default_rng(1), (512, 512), "B")
    synthetic_slides.write_pyramid(tmp_path / "slide.tiff", rgb)
    model = tri_al.build_model(tile_size=32, base_filters=4, head_units=16)
    caplog.set_level(logging.INFO, logger="common")
    grid, thumb = tri_al_report.predict_slide(model, tmp_path / "slide.tiff", stride=64)
    assert grid.shape == (8, 8) and thumb.shape == (512, 512, 3)  # the slide whole, at most 1024 px a side
    share = cv2.resize((labels != 255).astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA)  # tissue per cell
    assert (grid[share == 1] >= 0).all() and (grid[share == 0] == -1).all()
    assert set(np.unique(grid[grid >= 0])) <= set(range(5))
    assert caplog.messages[-1].startswith(f"predicted {(grid >= 0).sum()}/{(grid >= 0).sum()} tiles")
    tri_al_report.plot_slide_map(tmp_path / "fig3.png", grid, thumb)
    image = cv2.imread(str(tmp_path / "fig3.png"))
    assert image.shape == (512, 2 * 512 + 150, 3)


def test_unwritable_figure_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="fig.txt"):
        tri_al_report._write_png(tmp_path / "fig.txt", np.zeros((4, 4, 3), np.uint8))
