"""TRI-AL reports: Table II (F1 per class, micro, macro), Fig. 2 (class shares per iteration), Fig. 3 (slide map).

Figures are drawn with OpenCV into PNGs, so no plotting library is needed.
"""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np

from common import atomic, stats, tables
from common.slides import annotations, predict

# BGR colours of the five classes (blood, damaged, muscle, stroma, urothelium) in the figures.
COLOURS = ((40, 40, 220), (40, 90, 140), (180, 120, 240), (190, 215, 250), (160, 40, 110))
QUPATH_COLOURS = tuple(tuple(reversed(bgr)) for bgr in COLOURS)  # the same, RGB, for the GeoJSON of predictions
REFERENCE = "TRI-SL(100%)"  # the equivalence tests' column: the paper's "as good as all the target data"


def table_ii(results: dict, classes=annotations.CLASSES) -> str:
    """Markdown Table II: F1 (%) per class and micro / macro, mean (std) over runs, one column per model."""
    names = list(results)

    def cell(runs, values):
        values = np.asarray(values) * 100
        return f"{values.mean():.2f}({values.std(ddof=1):.2f})" if len(runs) > 1 else f"{values.mean():.2f}(-)"

    rows = []
    for index, name in enumerate(classes):
        rows.append([name.capitalize()] + [cell(results[n], [r["f1"][index] for r in results[n]]) for n in names])
    rows.append(["Total (micro)"] + [cell(results[n], [r["micro_f1"] for r in results[n]]) for n in names])
    rows.append(["Total (macro)"] + [cell(results[n], [r["macro_f1"] for r in results[n]]) for n in names])
    rows.append(["Runs"] + [str(len(results[n])) for n in names])
    rows.append(["Training triplets"] + [str(round(np.mean([r.get("samples", 0) for r in results[n]])))
                                         if "samples" in results[n][0] else "source" for n in names])
    return tables.markdown(["", *names], rows, caption="F1 %: mean (sample std, ddof 1) over runs") + "\n"


def _by_run(results: dict, a: str, b: str, metric: str) -> tuple[list, list] | None:
    """``metric`` of columns ``a`` and ``b`` on the runs both finished (a run's seed is its unit), or None under 2."""
    by_run = [{r["run"]: r[metric] for r in results[n]} for n in (a, b)]
    runs = sorted(set(by_run[0]) & set(by_run[1]))
    return ([by_run[0][r] for r in runs], [by_run[1][r] for r in runs]) if len(runs) >= 2 else None


def paired_tests(results: dict, metric: str = "micro_f1") -> str:
    """The study's paired t-tests over runs (Markdown list): the positive control and the paper's comparisons.

    TRI-SL at the largest share against the smallest (more target data must
    win), then each TRI-AL strategy against the TRI-SL column nearest in
    training triplets (chosen against random samples) and against the
    largest TRI-SL column (the paper's "as good with less data").
    """
    supervised = [n for n in results if n.startswith("TRI-SL(")]
    pairs = [(supervised[0], supervised[-1])] if len(supervised) > 1 else []
    for name in (n for n in results if n.startswith("TRI-AL_")):
        samples = np.mean([r["samples"] for r in results[name]])
        nearest = min(supervised, key=lambda n: abs(np.mean([r["samples"] for r in results[n]]) - samples),
                      default=None)
        pairs += [(nearest, name), (supervised[-1], name)] if nearest else []
    lines = []
    for a, b in dict.fromkeys(pairs):
        values = _by_run(results, a, b, metric)
        if values:
            lines.append(f"- {b} - {a}, {metric} (%): {stats.format_paired(stats.paired(*values), scale=100)}")
    return "\n".join(lines) + ("\n" if lines else "")


def equivalence_tests(results: dict, margin: float = 1.0) -> str:
    """The paper's claim in its own form (Markdown list): each TRI-AL column as good as ``REFERENCE``, the paired
    TOST over runs within ±``margin`` F1 points (``stats.equivalence``), micro and macro F1."""
    if REFERENCE not in results:
        return ""
    lines = []
    for name in (n for n in results if n.startswith("TRI-AL_")):
        for metric in ("micro_f1", "macro_f1"):
            values = _by_run(results, REFERENCE, name, metric)
            if values:
                result = stats.equivalence(*values, margin=margin / 100)
                lines.append(f"- {name} - {REFERENCE}, {metric} (%): {stats.format_equivalence(result, scale=100)}")
    return "\n".join(lines) + ("\n" if lines else "")


def allocation_tests(results: dict) -> str:
    """ITER against the study's RANDOM (Markdown list): the FNR allocation against uniform draws on the same
    schedule, paired t-tests over runs, micro and macro F1; nothing without both columns."""
    if not {"TRI-AL_ITER", "TRI-AL_RANDOM"} <= set(results):
        return ""
    lines = []
    for metric in ("micro_f1", "macro_f1"):
        values = _by_run(results, "TRI-AL_RANDOM", "TRI-AL_ITER", metric)
        if values:
            lines.append(f"- TRI-AL_ITER - TRI-AL_RANDOM, {metric} (%): "
                         f"{stats.format_paired(stats.paired(*values), scale=100)}")
    return "\n".join(lines) + ("\n" if lines else "")


def report_text(results: dict, margin: float = 1.0) -> str:
    """What ``zoo tri-al-report`` prints and writes to ``table_ii.md``: Table II, then the tests over runs."""
    sections = [table_ii(results), "Paired over runs:\n\n" + paired_tests(results) + paired_tests(results, "macro_f1")]
    equivalence = equivalence_tests(results, margin)
    if equivalence:
        sections.append(f"Equivalence to {REFERENCE} within ±{margin:.2f} F1 points (paired TOST, 90% CI):\n\n"
                        + equivalence)
    allocation = allocation_tests(results)
    if allocation:
        sections.append("The FNR allocation against uniform draws (ITER - RANDOM), paired over runs:\n\n"
                        + allocation)
    return "\n".join(sections)


def iteration_shares(out, strategy: str = "ITER") -> np.ndarray:
    """delta per iteration (rows) and class (columns), mean over the strategy's runs."""
    runs = []
    for run in sorted((pathlib.Path(out) / strategy).glob("run_*")):
        states = sorted(run.glob("iteration_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        runs.append([json.loads(p.read_text(encoding="utf-8"))["delta"] for p in states])
    if not runs:
        raise ValueError(f"{out}: no {strategy} runs to plot")
    length = min(len(r) for r in runs)
    return np.mean([r[:length] for r in runs], axis=0)


def _legend(canvas, x: int, y: int, classes) -> None:
    for i, name in enumerate(classes):
        cv2.rectangle(canvas, (x, y + 22 * i), (x + 14, y + 14 + 22 * i), COLOURS[i], -1)
        cv2.putText(canvas, name, (x + 20, y + 12 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)


def plot_shares(path, shares: np.ndarray, reference=None, classes=annotations.CLASSES) -> None:
    """Fig. 2: delta_i per iteration as lines (and, dashed, the class shares of the full training set)."""
    width, height, margin = 640, 400, 50
    canvas = np.full((height, width + 140, 3), 255, np.uint8)
    top = max(0.05, float(np.max(shares)) * 1.15, float(np.max(reference)) * 1.15 if reference is not None else 0)

    def xy(i, value):
        x = margin + i * (width - 2 * margin) / max(1, len(shares) - 1)
        return int(x), int(height - margin - value / top * (height - 2 * margin))

    cv2.line(canvas, (margin, height - margin), (width - margin, height - margin), (0, 0, 0), 1)
    cv2.line(canvas, (margin, margin), (margin, height - margin), (0, 0, 0), 1)
    for i in range(len(shares)):
        cv2.putText(canvas, str(i), (xy(i, 0)[0] - 4, height - margin + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for tick in np.linspace(0, top, 5):
        cv2.putText(canvas, f"{tick:.2f}", (4, xy(0, tick)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for c in range(shares.shape[1]):
        points = [xy(i, v) for i, v in enumerate(shares[:, c])]
        for a, b in zip(points, points[1:]):
            cv2.line(canvas, a, b, COLOURS[c], 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(canvas, p, 4, COLOURS[c], -1, cv2.LINE_AA)
        if reference is not None:
            y = xy(0, reference[c])[1]
            for x in range(margin, width - margin, 12):
                cv2.line(canvas, (x, y), (x + 6, y), COLOURS[c], 1)
    cv2.putText(canvas, "class share delta_i per iteration (dashed: full training set)", (margin, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    _legend(canvas, width, margin, classes)
    _write_png(path, canvas)


def _write_png(path, image) -> None:
    if pathlib.Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are PNG files; name it .png")
    atomic.write_image(path, image)


def predict_slide(model, slide_path, stride: int | None = None, magnification: float | None = None,
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 3's tile predictions (``common.slides.predict``): (grid of class indices, -1 on glass; thumbnail)."""
    prediction = predict.predict_slide(model, slide_path, stride, magnification, batch_size)
    return prediction.grid, prediction.thumbnail


def plot_slide_map(path, grid: np.ndarray, thumb: np.ndarray, classes=annotations.CLASSES, side: int = 512) -> None:
    """Fig. 3: the slide beside its colour map of tile predictions."""
    scale = side / max(thumb.shape[:2])
    size = (int(thumb.shape[1] * scale), int(thumb.shape[0] * scale))
    colours = np.array(COLOURS + ((255, 255, 255),), np.uint8)
    colour_map = cv2.resize(colours[grid], size, interpolation=cv2.INTER_NEAREST)
    slide = cv2.resize(np.ascontiguousarray(thumb[..., ::-1]), size, interpolation=cv2.INTER_AREA)
    canvas = np.full((max(size[1], 130), 2 * size[0] + 150, 3), 255, np.uint8)
    canvas[:size[1], :size[0]] = slide
    canvas[:size[1], size[0] + 10:2 * size[0] + 10] = colour_map
    _legend(canvas, 2 * size[0] + 20, 10, classes)
    _write_png(path, canvas)
