"""``python -m benchmarks predict-options``: ``zoo predict`` with each inference option, and the pipeline SavedModel.

On one synthetic CT (``--size`` x ``--size`` x ``--depth`` voxels, NIfTI) and
``--folds`` U-Nets of ``--base`` filters (untrained, made decided and nearly
agreeing as ``LOGIT_SCALE`` says, saved as a
``zoo cv`` folder whose ``fold_1`` also serves as a run folder), each
configuration runs ``zoo predict`` (``common.cli.main``: loading the models,
reading, inference, writing; TensorFlow imported before the clock starts) in
its own fresh process, so each peak resident memory is
that configuration's: plain slices, the sliding window at ``--tile``,
mirroring, and the ``--folds`` ensemble. Then, for plain slices and the
ensemble, ``zoo export --pipeline`` with the same options, and a client in a
fresh process that imports TensorFlow, NumPy and SimpleITK only (never the
zoo): read the volume, reorient it to LPS, call ``serving_default``, reorient
the labels back, write them; its labels are compared with ``zoo predict``'s.
One JSON line per figure, with the machine's one-minute load average at its end
(the machine is shared).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time

CONFIGS = {  # name -> (model: "run" or "cv", zoo predict's options); "{tile}" is --tile
    "plain": ("run", ["--tile", "whole", "--tta", "none"]),
    "sliding_window": ("run", ["--tile", "{tile}", "--step", "0.5", "--tta", "none"]),
    "mirroring": ("run", ["--tile", "whole", "--tta", "mirror"]),
    "ensemble": ("cv", ["--tile", "whole", "--tta", "none"]),
}
PIPELINES = ("plain", "ensemble")
# An untrained U-Net's softmax is nearly uniform (0.118-0.134 over 8 classes here), and five untrained ones disagree
# everywhere: their mean's top two classes tie to the last bit at ~1% of the voxels, where any rounding difference
# flips the label and the labels' comparison means nothing. So, as trained folds would be, the folds are decided and
# nearly agree: one U-Net whose final 1x1 convolution is scaled by LOGIT_SCALE, with class biases drawn, and each
# fold's convolution kernels perturbed by FOLD_SPREAD (relative). The work is the same.
LOGIT_SCALE, LOGIT_BIAS, FOLD_SPREAD = 20.0, 2.0, 0.1


def _workdir(size: int, depth: int, base: int, classes: int, folds: int) -> pathlib.Path:
    """The volume and the folds, written once (in a fresh process: the parent stays small)."""
    import keras
    import numpy as np
    import SimpleITK as sitk

    import unet_transformer
    from common.ct import synthetic as synthetic_ct

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    image, _ = synthetic_ct.make_phantom(0, size=(size, size, depth), spacing=(350.0 / size, 350.0 / size, 2.5))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(workdir / "ct.nii.gz"))
    units = [{"name": f"fold_{i + 1}", "test_cases": [], "seed": i} for i in range(folds)]
    (workdir / "cv").mkdir()
    (workdir / "cv" / "plan.json").write_text(json.dumps({"units": units}), encoding="utf-8")
    config = {"model": "unet", "num_classes": classes, "hu_window": [-160.0, 240.0], "augment": "flip",
              "class_names": [f"class_{i}" for i in range(classes)]}
    keras.utils.set_random_seed(0)
    model = unet_transformer.build_model("unet", num_classes=classes, base_filters=base)
    kernel, _ = model.get_layer("logits").get_weights()
    rng = np.random.default_rng(0)
    model.get_layer("logits").set_weights([kernel * LOGIT_SCALE, rng.normal(0.0, LOGIT_BIAS, classes)])
    trained = {layer.name: layer.get_weights() for layer in model.layers if hasattr(layer, "kernel")}
    for unit in units:
        folder = workdir / "cv" / unit["name"]
        folder.mkdir()
        for name, weights in trained.items():  # each fold near the others, as folds of one training are
            spread = 1.0 + FOLD_SPREAD * rng.normal(size=weights[0].shape)
            model.get_layer(name).set_weights([weights[0] * spread, *weights[1:]])
        model.save(folder / "model.keras")
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return workdir


def _zoo(argv) -> dict:
    """``zoo ARGV`` in this (fresh) process: seconds of the command and the process's peak memory.

    The modules the command imports inside its action are imported first: the seconds are the
    command's work (loading the models, reading, inference, writing), not TensorFlow's start-up.
    """
    from benchmarks.timing import peak_rss_mib
    from common import cli
    from common.ct import ensemble, inference  # noqa: F401
    from common.serve import pipeline  # noqa: F401

    start = time.perf_counter()
    status = cli.main([str(a) for a in argv])
    seconds = time.perf_counter() - start
    if status:
        raise RuntimeError(f"zoo {' '.join(map(str, argv))}: exit status {status}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}


def _client(version_dir: str, volume: str, output: str, expected: str) -> dict:
    """A TF Serving-like client of a pipeline export: TensorFlow, NumPy and SimpleITK only; labels compared."""
    import sys

    import numpy as np
    import SimpleITK as sitk
    import tensorflow as tf

    from benchmarks.timing import peak_rss_mib

    start = time.perf_counter()
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    loaded = time.perf_counter()
    image = sitk.ReadImage(volume)
    canonical = sitk.DICOMOrient(image, "LPS")
    labels = serve(volume=tf.constant(sitk.GetArrayFromImage(canonical).astype(np.float32)),
                   spacing=tf.constant(canonical.GetSpacing(), tf.float64))["labels"].numpy()
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(canonical)
    result = sitk.DICOMOrient(result, sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        image.GetDirection()))
    result.CopyInformation(image)
    sitk.WriteImage(result, output, useCompression=True)
    seconds = time.perf_counter() - loaded
    differ = int((sitk.GetArrayFromImage(sitk.ReadImage(expected)) != sitk.GetArrayFromImage(result)).sum())
    zoo_imported = sorted({"common", "unet_transformer"} & set(sys.modules))
    return {"load_seconds": round(loaded - start, 1), "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1), "labels_differing_from_zoo_predict": differ,
            "zoo_imported": zoo_imported}


def predict_options(args, emit) -> None:
    """Each configuration in a fresh process; then the pipelines of ``PIPELINES`` against the same volume."""
    from benchmarks.timing import in_fresh_process

    workdir = in_fresh_process(_workdir, args.size, args.depth, args.base, args.classes, args.folds)
    models = {"run": workdir / "cv" / "fold_1", "cv": workdir / "cv"}
    common = dict(base=args.base, volume=[args.size, args.size, args.depth], batch=args.batch, folds=args.folds,
                  classes=args.classes)
    for name, (model, options) in CONFIGS.items():
        options = [o.format(tile=args.tile) for o in options] + ["--batch-size", str(args.batch)]
        figures = in_fresh_process(_zoo, ["predict", models[model], workdir / "ct.nii.gz",
                                          workdir / f"{name}.nii.gz", *options])
        emit(benchmark="predict-options", way="zoo predict", config=name, options=" ".join(options), **common,
             **figures, load_average=os.getloadavg()[0])
        if name not in PIPELINES:
            continue
        exported = in_fresh_process(_zoo, ["export", models[model], workdir / "serving", "--name", name,
                                           "--pipeline", *options])
        served = in_fresh_process(_client, str(workdir / "serving" / name / "1"), str(workdir / "ct.nii.gz"),
                                  str(workdir / f"{name}_pipeline.nii.gz"), str(workdir / f"{name}.nii.gz"))
        emit(benchmark="predict-options", way="pipeline SavedModel", config=name, options=" ".join(options),
             export_seconds=exported["seconds"], **common, **served, load_average=os.getloadavg()[0])
