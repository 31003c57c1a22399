"""Peak memory of the ``zoo export --pipeline`` SavedModel against the volume's depth.

A segmentation model of the zoo (``--model``, ``--base`` filters; by default
a U-Net of 2, whose activations stay small, so the volume, the labels and the
pipeline's own work are what is measured; ``--model eas_unet --base 32`` is a
paper's own width, whose chunk's forward pass dominates) is exported as a
pipeline (whole slices, no mirroring, ``--batch`` slices a chunk) in a fresh
process. Then each volume, ``--depths`` slices of ``SIDE`` x ``SIDE`` random HU
as float32 (``serving_default``) and as int16 (``serving_int16``, a CT's own
dtype), goes through the SavedModel in a fresh process that imports
TensorFlow and NumPy only. Each line reports that process's peak resident
memory, what the loaded SavedModel alone took (``loaded_rss_mib``), the
volume's and the labels' sizes, and what is left, the pipeline's own work
(``pipeline_mib``: one chunk, the same at any depth when memory is bounded).
One line per dtype holds the goal of issue 39: the deepest volume under
``GOAL_GIB`` GiB and under ``GOAL_RATIO`` times the shallowest one's peak, and
beside it the ratio the loaded SavedModel, the volume and the labels give alone
(``ratio_without_the_pipeline``: a pipeline of no memory of its own).
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time

SIDE = 512  # a CT slice
GOAL_GIB, GOAL_RATIO = 3.0, 1.5
SIGNATURES = {"float32": "serving_default", "int16": "serving_int16"}


def _export(workdir: str, name: str, base: int, batch: int, classes: int) -> tuple[str, int]:
    """The model's pipeline, exported in this (fresh) process: its version folder and the model's parameters."""
    from common import registry
    from common.ct import inference
    from common.serve import pipeline

    if name not in registry.names("segmentation"):
        raise SystemExit(f"--model {name}: pipeline-memory serves CT volumes; choose one of "
                         f"{', '.join(registry.names('segmentation'))}")
    model = registry.build(name, num_classes=classes, base_filters=base)
    options = inference.InferenceOptions(tile=None, tta="none")
    version = pipeline.export_pipeline([model], pathlib.Path(workdir) / "serving", "memory", options,
                                       batch_size=batch)
    return str(version), model.count_params()


def _aligned_volume(depth: int, dtype: str):
    """Random HU in [-1000, 1000), made slice by slice (no whole-volume temporary) and 64-byte aligned as
    TensorFlow's own buffers are, so TensorFlow can use the memory as it is."""
    import numpy as np

    size = depth * SIDE * SIDE * np.dtype(dtype).itemsize
    buffer = np.empty(size + 64, np.uint8)
    offset = -buffer.ctypes.data % 64
    volume = buffer[offset:offset + size].view(dtype).reshape(depth, SIDE, SIDE)
    rng = np.random.default_rng(0)
    for z in range(depth):
        volume[z] = rng.uniform(-1000.0, 1000.0, (SIDE, SIDE)).astype(dtype)
    return volume


def _serve(version_dir: str, depth: int, dtype: str) -> dict:
    """One volume through the signature of its dtype in this (fresh) process: TensorFlow and NumPy only.

    The volume and the labels cross into and out of TensorFlow through DLPack, without a copy, as a
    server holds a decoded request once (``tf.constant`` copies a NumPy array twice, ``.numpy()`` once).
    """
    import sys

    import numpy as np
    import tensorflow as tf

    from benchmarks.timing import peak_rss_mib

    serve = tf.saved_model.load(version_dir).signatures[SIGNATURES[dtype]]
    loaded = peak_rss_mib()
    volume = _aligned_volume(depth, dtype)
    start = time.perf_counter()
    labels = serve(volume=tf.experimental.dlpack.from_dlpack(volume.__dlpack__()),
                   spacing=tf.constant([0.8, 0.8, 2.5], tf.float64))["labels"]
    labels = np.from_dlpack(labels)
    seconds = time.perf_counter() - start
    assert labels.shape == volume.shape and labels.dtype == np.uint8, (labels.shape, labels.dtype)
    peak = peak_rss_mib()
    return {"peak_rss_mib": round(peak, 1), "loaded_rss_mib": round(loaded, 1),
            "volume_mib": round(volume.nbytes / 2**20, 1), "labels_mib": round(labels.nbytes / 2**20, 1),
            "pipeline_mib": round(peak - loaded - (volume.nbytes + labels.nbytes) / 2**20, 1),
            "seconds": round(seconds, 1), "zoo_imported": sorted({"common", "unet_transformer"} & set(sys.modules))}


def pipeline_memory(args, emit) -> None:
    """The export in a fresh process, then ``_measure``; the temporary folder is removed after."""
    from benchmarks.timing import in_fresh_process

    depths = sorted(int(d) for d in str(args.depths).split(","))
    workdir = tempfile.mkdtemp(prefix="zoo-bench-")
    try:
        version, parameters = in_fresh_process(_export, workdir, args.model, args.base, args.batch, args.classes)
        _measure(version, depths, dict(model=args.model, base=args.base, parameters=parameters,
                                       classes=args.classes, batch=args.batch), emit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(version_dir: str, depths, exported: dict, emit) -> None:
    """Each volume dtype and depth through the export in its own process; a line each, and the goal per dtype."""
    from benchmarks.timing import in_fresh_process

    for dtype, signature in SIGNATURES.items():
        peaks, floors = {}, {}
        for depth in depths:
            served = in_fresh_process(_serve, version_dir, depth, dtype)
            peaks[depth] = served["peak_rss_mib"]
            floors[depth] = served["loaded_rss_mib"] + served["volume_mib"] + served["labels_mib"]
            emit(benchmark="pipeline-memory", signature=signature, slices=depth, side=SIDE, **exported, **served)
        low, high = depths[0], depths[-1]
        ratio = peaks[high] / peaks[low]
        # What the loaded SavedModel, the request's volume and its labels alone give: the ratio of a pipeline that
        # took no memory of its own; a goal under it is out of any pipeline's reach.
        # peak_rss_mib None: the peaks are the served processes' (above), not this one's.
        emit(benchmark="pipeline-memory", peak_rss_mib=None, signature=signature, model=exported["model"],
             base=exported["base"], batch=exported["batch"],
             goal=f"{high} slices under {GOAL_GIB:g} GiB and under {GOAL_RATIO:g}x the {low}-slice peak",
             peak_gib={str(d): round(p / 1024, 2) for d, p in peaks.items()}, ratio=round(ratio, 2),
             ratio_without_the_pipeline=round(floors[high] / floors[low], 2),
             met=bool(peaks[high] / 1024 < GOAL_GIB and ratio < GOAL_RATIO))
