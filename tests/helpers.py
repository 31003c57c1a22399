"""What several test modules share: tiny settings, reloading in a fresh process, precision and serving checks."""

from __future__ import annotations

import numpy as np

# A 2-stack hourglass of 16 features on 64 px crops, stages of one epoch (conftest's pose_run trains it once).
TINY_POSE = dict(num_stacks=2, features=16, input_size=64, batch_size=4, stage_factor=0.001, run_eagerly=True,
                 verbose=0)


def lits_pair(folder, number, label: np.ndarray, spacing=(1.0, 1.0, 2.0), label_spacing=None):
    """Writes volume-N.nii (HU ramp) and segmentation-N.nii (``label``) into ``folder``, as LiTS ships them."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    ct = sitk.GetImageFromArray(np.linspace(-300, 300, label.size, dtype=np.float32).reshape(label.shape))
    seg = sitk.GetImageFromArray(label.astype(np.uint8))
    ct.SetSpacing(spacing)
    seg.SetSpacing(label_spacing or spacing)
    sitk.WriteImage(ct, str(folder / f"volume-{number}.nii"))
    sitk.WriteImage(seg, str(folder / f"segmentation-{number}.nii"))


def qupath_geojson(path, name, ring):
    """Writes one polygon of class ``name`` as QuPath exports it (a FeatureCollection)."""
    import json

    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "annotation", "classification": {"name": name}}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def fake_cv_run(root, name, dice_values):
    """A cross-validation folder with one finished fold per Dice value (classes 1 and 2)."""
    import json

    from common.train import crossval

    out = root / name
    units = [{"name": f"fold_{i + 1}", "test_cases": [f"c{i}"], "seed": 0} for i in range(len(dice_values))]
    crossval._plan_units(out, units)
    for unit, dice in zip(units, dice_values):
        (out / unit["name"]).mkdir()
        (out / unit["name"] / "metrics.json").write_text(json.dumps(
            {"name": unit["name"], "test_cases": unit["test_cases"],
             "per_class": {"1": {"dice": dice}, "2": {"dice": dice - 0.1}}}))
    return out
