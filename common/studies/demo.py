"""``zoo demo``: the whole path on a synthetic cohort, in minutes on a CPU.

Generate abdominal CT phantoms -> prepare shards -> train a small U-Net ->
evaluate the held-out volumes -> per-organ Dice table and an overlay PNG.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import cv2
import numpy as np

from common import atomic
from common.ct import inference, shards, volumes
from common.ct import synthetic as synthetic_ct
from common.train import segmentation as training

logger = logging.getLogger(__name__)

# BGR colours of classes 1..7 (liver, spleen, kidneys, stomach, gallbladder, pancreas).
PALETTE = np.array([(0, 0, 0), (60, 76, 231), (182, 89, 155), (219, 152, 52), (156, 188, 26),
                    (15, 196, 241), (34, 126, 230), (255, 0, 255)], np.uint8)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colours a label slice over a windowed [0, 1] image slice (BGR uint8)."""
    gray = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    colours = PALETTE[np.minimum(label, len(PALETTE) - 1)]
    mixed = np.where(label[..., None] > 0, (1 - alpha) * gray + alpha * colours, gray)
    return mixed.astype(np.uint8)


def save_overlay_png(path, image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, scale: int = 3):
    """Writes [CT | reference | prediction] side by side for one slice."""
    panels = [overlay(image, np.zeros_like(reference)), overlay(image, reference), overlay(image, predicted)]
    for panel, title in zip(panels, ("CT", "reference", "prediction")):
        cv2.putText(panel, title, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    strip = np.concatenate(panels, axis=1)
    strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    atomic.write_image(path, strip)


def _overlay_of_case(model, case: volumes.Case, hu_window, path) -> None:
    arrays = volumes.load_case(case, len(synthetic_ct.CLASS_NAMES), hu_window)
    z = int(np.argmax([len(np.unique(s)) * 10**6 + np.count_nonzero(s) for s in arrays.label]))
    predicted = inference.predict_slices(model, arrays.image[z:z + 1])[0]
    save_overlay_png(path, arrays.image[z], arrays.label[z], predicted)


def run(out: pathlib.Path, num_cases: int = 14, epochs: int = 12, base_filters: int = 16, seed: int = 0,
        verbose: int = 2) -> dict:
    """Runs the demo in ``out`` and returns {case: metrics} of the held-out cases (``verbose``: ``fit``'s)."""
    start = time.monotonic()
    cohort, prepared, run_dir = out / "cohort", out / "prepared", out / "run"
    synthetic_ct.write_cohort(cohort, num_cases=num_cases, seed=seed)
    logger.info(f"[{time.monotonic() - start:5.0f}s] wrote {num_cases} synthetic CT cases to {cohort}")
    manifest = shards.prepare(cohort, prepared)
    logger.info(f"[{time.monotonic() - start:5.0f}s] prepared {sum(c['slices'] for c in manifest['cases'])} slices")
    config = training.TrainConfig(data=str(prepared), out=str(run_dir), base_filters=base_filters,
                                  epochs=epochs, batch_size=8, learning_rate=1e-3, lr_decay=0.9, augment="flip-rot",
                                  test_fraction=0.2, seed=seed, verbose=verbose)
    model = training.train(config)
    logger.info(f"[{time.monotonic() - start:5.0f}s] trained")
    split = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["split"]
    cases = {c.case_id: c for c in volumes.find_cases(cohort)}
    held_out = [cases[c] for c in split["test"]]
    results = inference.evaluate_cases(model, held_out, manifest["num_classes"], manifest["hu_window"])
    atomic.write_json(run_dir / "evaluation.json",
                             {case: {str(k): v for k, v in m.items()} for case, m in results.items()})
    _overlay_of_case(model, held_out[0], manifest["hu_window"], out / "overlay.png")
    logger.info(f"[{time.monotonic() - start:5.0f}s] held-out cases {', '.join(split['test'])}: Dice per organ (%)")
    logger.info(inference.format_table(results, manifest["class_names"]))
    logger.info(f"overlay of a held-out slice: {out / 'overlay.png'}; model: {run_dir / 'model.keras'}")
    return results
