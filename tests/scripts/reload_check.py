"""Reloads saved models in a fresh process that imports keras and one model package only, and compares outputs.

Run by ``tests.helpers.reload_in_fresh_process`` as ``python -m tests.scripts.reload_check PACKAGE FOLDER
NAMES_JSON ATOL``: FOLDER holds ``inputs.npz`` and, per name, ``NAME.keras`` and ``NAME.outputs.npz``. Prints
``REPORT {name: {"outputs": [...], "inputs": [...]}}``; an assertion fails on any difference above ATOL.
"""

import importlib
import json
import sys

import keras
import numpy as np


def main(package: str, folder: str, names: str, atol: str) -> None:
    importlib.import_module(package)  # the package alone registers its layers
    x = list(np.load(f"{folder}/inputs.npz").values())
    x = x if len(x) > 1 else x[0]
    report = {}
    for name in json.loads(names):
        model = keras.models.load_model(f"{folder}/{name}.keras")
        outputs = model(x)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        expected = np.load(f"{folder}/{name}.outputs.npz")
        assert len(outputs) == len(expected.files), name
        for i, output in enumerate(outputs):
            np.testing.assert_allclose(np.asarray(output), expected[f"arr_{i}"], rtol=0, atol=float(atol),
                                       err_msg=name)
        report[name] = {"outputs": model.output_names, "inputs": [t.name for t in model.inputs]}
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
