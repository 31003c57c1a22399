"""``python -m benchmarks NAME [options]``: train, infer, data, gpu-check.

Each prints one JSON line per figure. Peak memory is the process's peak
resident set size (``ru_maxrss``), so run one benchmark per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

# Same speed defaults as the CLI (SPEC, "speed defaults"): set before TensorFlow loads.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _emit(**figures) -> None:
    print(json.dumps({**figures, "peak_rss_mib": round(_peak_rss_mib(), 1), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}), flush=True)


def _model(args):
    import unet_transformer

    return unet_transformer.build_model(args.model, input_shape=(None, None, 1), num_classes=args.classes,
                                        base_filters=args.base, **args.model_options)


def _random_batch(args):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 1), dtype=np.float32)
    y = rng.integers(0, args.classes, (args.batch, args.size, args.size)).astype(np.uint8)
    return x, y


def bench_train(args) -> None:
    """Training images/s of the zoo's way of training (common.training.compile_model + fit)."""
    import tensorflow as tf

    from common import training

    training.configure_precision(args.precision)
    model = _model(args)
    config = training.TrainConfig(data="", out="", model=args.model, base_filters=args.base,
                                  batch_size=args.batch)
    training.compile_model(model, config, args.classes, steps_per_epoch=args.steps)
    x, y = _random_batch(args)
    data = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(tf.data.AUTOTUNE)
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0, shuffle=False)  # traces and compiles the step
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
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


def bench_data(args) -> None:
    """Slices/s the tf.data pipeline delivers from prepared shards (training mode, augmented)."""
    from common import pipeline, shards, synthetic_ct

    prepared = args.data
    if prepared is None:
        workdir = tempfile.mkdtemp(prefix="zoo-bench-")
        synthetic_ct.write_cohort(f"{workdir}/cohort", num_cases=8, seed=0)
        shards.prepare(f"{workdir}/cohort", f"{workdir}/prepared", log=lambda _: None)
        prepared = f"{workdir}/prepared"
    files = [c["shard"] for c in shards.load_manifest(prepared)["cases"]]
    dataset = pipeline.slice_dataset(files, args.batch, args.size, training=True)
    iterator = iter(dataset)
    for _ in range(args.warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(iterator)
    seconds = time.perf_counter() - start
    _emit(benchmark="data", size=args.size, batch=args.batch,
          slices_per_s=round(args.steps * args.batch / seconds, 1))


def bench_gpu_check(args) -> int:
    """Every model: mixed-precision training steps on Keras' JAX backend (no TensorFlow needed)."""
    from benchmarks.gpu_check import gpu_check

    return gpu_check(args)


BENCHMARKS = {"train": bench_train, "infer": bench_infer, "data": bench_data, "gpu-check": bench_gpu_check}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--model", default="unet")
    parser.add_argument("--base", type=int, default=16, help="base_filters")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--model-options", type=json.loads, default={},
                        help='more build_model arguments as JSON, e.g. \'{"token_stride": [1, 2, 1, 1]}\'')
    parser.add_argument("--data", help="prepared folder for `data` (default: a synthetic one)")
    parser.add_argument("--steps-per-execution", type=int, default=1, help="gpu-check: steps per compiled call")
    parser.add_argument("--only", nargs="*", help="gpu-check: only these models")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    return BENCHMARKS[args.name](args) or 0


if __name__ == "__main__":
    sys.exit(main())
