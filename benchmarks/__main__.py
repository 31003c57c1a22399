"""``python -m benchmarks NAME [options]``: train, infer, input, serving, predict-volume, predict-options, vs-torch,
speed-settings, profile, gpu-check, triplet-stream, attention-gradient, first-step, pipeline-memory.

Each prints one JSON line per figure. Peak memory is the process's peak
resident set size (``ru_maxrss``), so run one benchmark per process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

# Same speed defaults as the CLI (SPEC, "speed defaults"): set before TensorFlow loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.timing import compiled_zoo_model, peak_rss_mib, random_batch, timed_fit  # noqa: E402


def _emit(**figures) -> None:
    print(json.dumps({"peak_rss_mib": round(peak_rss_mib(), 1), **figures, "machine": platform.machine(),
                      "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}), flush=True)


def _model(args):
    import unet_transformer

    return unet_transformer.build_model(args.model, input_shape=(None, None, 1), num_classes=args.classes,
                                        base_filters=args.base, **args.model_options)


def _random_batch(args):
    return random_batch(args.batch, args.size, args.classes)


def bench_train(args) -> None:
    """Training images/s of the zoo's way of training (common.train.segmentation.compile_model + fit)."""
    import tensorflow as tf

    from common.train import recipe
    model = compiled_zoo_model(args.model, args.base, args.batch, args.classes, args.steps, args.precision,
                               args.model_options)
    images, labels = _random_batch(args)
    names = list(recipe.output_weights(model, recipe.Recipe.side_weight))
    data = tf.data.Dataset.from_tensors((images, labels if len(names) == 1 else {n: labels for n in names}))
    data = data.repeat().prefetch(tf.data.AUTOTUNE)
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0, shuffle=False)  # traces and compiles the step
    seconds = timed_fit(model, data, args.steps)
    _emit(benchmark="train", model=args.model, base=args.base, size=args.size, batch=args.batch,
          model_options=args.model_options,
          precision=args.precision, parameters=model.count_params(),
          images_per_s=round(args.steps * args.batch / seconds, 2))


def bench_infer(args) -> None:
    """Inference images/s of ``predict_on_batch`` (what ``zoo predict`` calls)."""
    model = _model(args)
    x, _ = _random_batch(args)
    for _ in range(args.warmup):
        model.predict_on_batch(x)
    start = time.perf_counter()
    for _ in range(args.steps):
        model.predict_on_batch(x)
    seconds = time.perf_counter() - start
    _emit(benchmark="infer", model=args.model, base=args.base, size=args.size, batch=args.batch,
          model_options=args.model_options, seconds_per_batch=round(seconds / args.steps, 3),
          images_per_s=round(args.steps * args.batch / seconds, 2))


def _prepared_folder(args, num_cases: int = 8) -> str:
    """``--data``, or a prepared synthetic cohort of ``num_cases`` 128x128x32 cases in a temporary folder."""
    from common.ct import shards
    from common.ct import synthetic as synthetic_ct

    if args.data is not None:
        return args.data
    workdir = tempfile.mkdtemp(prefix="zoo-bench-")
    synthetic_ct.write_cohort(f"{workdir}/cohort", num_cases=num_cases, seed=0)
    shards.prepare(f"{workdir}/cohort", f"{workdir}/prepared")
    return f"{workdir}/prepared"


def _time_batches(iterator, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return time.perf_counter() - start


PIPELINE_BATCHES = 200


def bench_input(args) -> None:
    """Slices/s the tf.data pipeline delivers against the images/s training consumes from it, in one process."""
    from common.ct import pipeline, shards
    from common.train import recipe

    prepared = _prepared_folder(args)
    manifest = shards.load_manifest(prepared)
    files = [c["shard"] for c in manifest["cases"]]
    classes = manifest["num_classes"]
    dataset = pipeline.slice_dataset(files, args.batch, args.size, training=True, seed=0)
    batches = max(args.steps, PIPELINE_BATCHES)  # well past what prefetching holds
    delivered = batches * args.batch / _time_batches(iter(dataset), args.warmup, batches)

    model = compiled_zoo_model(args.model, args.base, args.batch, classes, args.steps, args.precision,
                               args.model_options)
    data = pipeline.slice_dataset(files, args.batch, args.size, training=True, seed=0,
                                  outputs=list(recipe.output_weights(model, recipe.Recipe.side_weight)))
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0, shuffle=False)
    consumed = args.steps * args.batch / timed_fit(model, data, args.steps)
    _emit(benchmark="input", model=args.model, base=args.base, size=args.size, batch=args.batch,
          pipeline_slices_per_s=round(delivered, 1), training_images_per_s=round(consumed, 2),
          ratio=round(delivered / consumed, 1))


def bench_serving(args) -> None:
    """The exported SavedModel's serving_default against ``model.predict`` on the same batches, alternating."""
    import statistics

    import numpy as np
    import tensorflow as tf

    from common.serve import export

    model = _model(args)
    x, _ = _random_batch(args)
    folder = export.export_saved_model(model, tempfile.mkdtemp(prefix="zoo-bench-"), "bench",
                                       warmup_sizes=((args.size, args.size),))
    serve = tf.saved_model.load(str(folder)).signatures[export.SIGNATURE]
    image = tf.constant(x)
    np.testing.assert_allclose(serve(image=image)["probabilities"].numpy(), model.predict(x, verbose=0),
                               atol=1e-4)  # the same computation, or the comparison means nothing
    ways = {"saved_model": lambda: serve(image=image)["labels"].numpy(),
            "predict": lambda: model.predict(x, batch_size=args.batch, verbose=0)}
    for run in ways.values():
        for _ in range(args.warmup):
            run()
    ratios = []
    for round_index in range(args.rounds):
        speed = {}
        for way, run in ways.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                run()
            speed[way] = args.steps * args.batch / (time.perf_counter() - start)
        ratios.append(speed["saved_model"] / speed["predict"])
        _emit(benchmark="serving", round=round_index + 1, model=args.model, base=args.base, size=args.size,
              batch=args.batch, saved_model_images_per_s=round(speed["saved_model"], 2),
              predict_images_per_s=round(speed["predict"], 2), ratio=round(ratios[-1], 3))
    _emit(benchmark="serving", model=args.model, rounds=args.rounds, median_ratio=round(statistics.median(ratios), 3))


def bench_predict_volume(args) -> None:
    """``zoo predict`` on a synthetic CT of --size x --size x --depth voxels, timed end to end (read to write)."""
    import SimpleITK as sitk

    from common import cli
    from common.ct import synthetic as synthetic_ct
    from common.train import callbacks

    workdir = tempfile.mkdtemp(prefix="zoo-bench-")
    image, _ = synthetic_ct.make_phantom(0, size=(args.size, args.size, args.depth),
                                         spacing=(350.0 / args.size, 350.0 / args.size, 2.5))
    sitk.WriteImage(image, f"{workdir}/ct.nii.gz")
    run = pathlib.Path(workdir, "run")
    run.mkdir()
    callbacks.save_model_atomic(_model(args), run / "model.keras")
    start = time.perf_counter()
    status = cli.main(["predict", str(run), f"{workdir}/ct.nii.gz", f"{workdir}/labels.nii.gz",
                       "--batch-size", str(args.batch)])
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(status)
    _emit(benchmark="predict-volume", model=args.model, base=args.base, volume=[args.size, args.size, args.depth],
          batch=args.batch, seconds=round(seconds, 1), slices_per_s=round(args.depth / seconds, 2))


def bench_predict_options(args) -> None:
    """``zoo predict`` with each inference option and the pipeline SavedModel (benchmarks.predict_options)."""
    from benchmarks.predict_options import predict_options

    predict_options(args, _emit)


def bench_vs_torch(args) -> int:
    """Training images/s of the zoo against PyTorch eager on the same network (benchmarks.vs_torch)."""
    from benchmarks.vs_torch import vs_torch

    vs_torch(args.model, args.base, args.size, args.batch, args.classes, args.steps, args.warmup, args.rounds,
             _emit, "none" if args.without_attention else args.torch_attention)
    return 0


def bench_speed_settings(args) -> None:
    """Training images/s of the zoo's defaults against each speed setting changed (benchmarks.speed_settings)."""
    from benchmarks.speed_settings import speed_settings

    speed_settings(args, _emit)


def bench_profile(args) -> None:
    """Op time of a training step by layer and op type (benchmarks.step_profile)."""
    from benchmarks.step_profile import profile

    profile(args, _emit)


def bench_gpu_check(args) -> int:
    """Every model: mixed-precision training steps on Keras' JAX backend (no TensorFlow needed)."""
    from benchmarks.gpu_check import gpu_check

    return gpu_check(args)


def bench_triplet_stream(args) -> None:
    """Peak RSS of TRI-AL's streamed triplets, one epoch and one scoring pass per pool size (triplet_stream)."""
    from benchmarks.triplet_stream import triplet_stream

    triplet_stream(args, _emit)


def bench_first_step(args) -> None:
    """Seconds to the end of fit's first step, optimizer built at compile or inside the step (first_step)."""
    from benchmarks.first_step import first_step

    first_step(args, _emit)


def bench_attention_gradient(args) -> None:
    """Attention's low-rank and dense TensorFlow backward passes, per head width (attention_gradient)."""
    from benchmarks.attention_gradient import attention_gradient

    attention_gradient(args, _emit)


def bench_pipeline_memory(args) -> None:
    """Peak RSS of the pipeline SavedModel at each of --depths slices of 512x512 (pipeline_memory)."""
    from benchmarks.pipeline_memory import pipeline_memory

    pipeline_memory(args, _emit)


BENCHMARKS = {"train": bench_train, "infer": bench_infer, "input": bench_input,
              "serving": bench_serving, "predict-volume": bench_predict_volume,
              "predict-options": bench_predict_options, "vs-torch": bench_vs_torch,
              "speed-settings": bench_speed_settings, "profile": bench_profile,
              "gpu-check": bench_gpu_check, "triplet-stream": bench_triplet_stream,
              "attention-gradient": bench_attention_gradient, "first-step": bench_first_step,
              "pipeline-memory": bench_pipeline_memory}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--model", default="unet", help="a segmentation model of the zoo (registry name)")
    parser.add_argument("--base", type=int, default=None, help="base_filters (default 16; pipeline-memory: 2)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--model-options", type=json.loads, default={},
                        help='more build_model arguments as JSON, e.g. \'{"token_stride": [1, 2, 1, 1]}\'')
    parser.add_argument("--data", help="prepared folder for `input` (default: a synthetic one)")
    parser.add_argument("--rounds", type=int, default=3, help="vs-torch, serving, first-step: alternating rounds")
    parser.add_argument("--torch-attention", default="fused", choices=("fused", "plain"),
                        help="vs-torch: PyTorch's attention, F.scaled_dot_product_attention or op by op")
    parser.add_argument("--without-attention", action="store_true",
                        help="vs-torch diagnostic: both frameworks compute O = V in place of softmax(QK^T/sqrt(d)) V, "
                             "timing the network around attention")
    parser.add_argument("--top", type=int, default=12, help="profile: lines per table")
    parser.add_argument("--depth", type=int, default=100, help="predict-volume, predict-options: slices")
    parser.add_argument("--folds", type=int, default=5, help="predict-options: models of the ensemble")
    parser.add_argument("--tile", type=int, default=256, help="predict-options: sliding window side")
    parser.add_argument("--steps-per-execution", type=int, default=0,
                        help="gpu-check: steps per compiled call (default 0: the zoo's, 10 on a GPU, 1 on a CPU)")
    parser.add_argument("--only", nargs="*", help="gpu-check: only these models; speed-settings: only these "
                        "settings, the first the reference (default: all)")
    parser.add_argument("--sizes", default="10000,50000,200000",
                        help="triplet-stream: pool sizes (--size: the tile side, --batch: the batch)")
    parser.add_argument("--widths", default="2,4,6,8",
                        help="attention-gradient: head widths (--size: the tokens, --batch: the images)")
    parser.add_argument("--depths", default="100,600",
                        help="pipeline-memory: slices of the volumes (512x512 each; --batch: slices a chunk)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    if args.base is None:  # pipeline-memory measures the volume and the pipeline, not a model's width, by default
        args.base = 2 if args.name == "pipeline-memory" else 16
    return BENCHMARKS[args.name](args) or 0


if __name__ == "__main__":
    sys.exit(main())
