"""``python -m benchmarks gpu-check``: every model trains on Keras' JAX backend the zoo's way; U-Nets against PyTorch.

Written for the lent GPU machine, which has JAX and PyTorch but no
TensorFlow: the Keras side imports only ``keras``, the model packages,
``common.registry`` and ``common.train.recipe`` (all keras-only), and
``KERAS_BACKEND`` is set to ``jax`` unless a backend is chosen already.
Each (model, framework) runs in a fresh process, so its peak of GPU memory is
its own and no framework's allocator or threads compete with another's; this
process imports neither JAX nor PyTorch.

- Keras, segmentation models (the U-Net family and the EAS U-Net): built by
  the registry as ``zoo train`` builds them, the precision set by
  ``recipe.configure_precision`` and compiled by ``recipe.compile_model``,
  the one function ``zoo train`` and ``zoo cv`` compile with (optimizer and
  its decay, CE + Dice on every supervised output, mean IoU, steps per
  execution, jit "auto"); then ``model.fit`` on one in-memory batch handed
  over as NumPy every step (float32 images, uint8 labels: what tf.data hands
  Keras in ``zoo train`` on JAX) with no per-batch callback, as ``zoo
  train``'s callbacks are async-safe. Pose and tile models: Adam and mean
  squared error against random targets, a check that they train in mixed
  precision (their own trainings are not this path).
- Timing: a first ``fit`` of ``--warmup`` steps compiles; a second ``fit``
  of ``--steps`` is timed from its epoch's start to its end, after Keras has
  waited for the device.
- PyTorch (``unet`` and ``u_transformer``, ``benchmarks.torch_reference``):
  eager, AMP (float16 autocast, GradScaler) on a GPU and float32 on a CPU;
  the same batch copied from pinned host memory every step, the same loss,
  Adam; ``cudnn.benchmark`` on (XLA picks its convolutions by measuring too).

One JSON line per figure: each (model, framework) with images/s, peak GPU
memory in MiB (JAX's ``peak_bytes_in_use``, PyTorch's
``max_memory_allocated``; null on a CPU), losses and parameters; then, per
raced model, Keras' images/s over PyTorch's. Exit status 1 when any check
fails: a loss not finite, an output not float32, TensorFlow imported,
parameter counts apart, a run that crashed.

``--steps-per-execution 0`` is the zoo's default (10 on a GPU, 1 on a CPU,
``recipe.resolve_steps_per_execution``). The issue's figures on the lent
H100 (U-Net and U-Transformer, base 64, 256², batch 16, mixed_float16)::

    KERAS_BACKEND=jax python3 -m benchmarks gpu-check --precision mixed_float16 --base 64 --size 256 --batch 16 --steps 50 --warmup 5 --steps-per-execution 0 --only unet u_transformer

and a CPU smoke test: ``KERAS_BACKEND=jax python -m benchmarks gpu-check
--base 8 --size 64 --batch 2 --steps 2 --warmup 1``.
"""

# ruff: noqa: E501  (the docstring's command is one line, to be pasted whole)
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from benchmarks.timing import in_fresh_process, random_batch

RACED = ("unet", "u_transformer")  # the networks benchmarks.torch_reference has
POSE = {"hourglass": False, "acnn": True}  # name -> attention
SETTINGS = ("size", "batch", "base", "classes", "precision", "steps", "warmup", "steps_per_execution")


def _segmentation_case(name: str, s: dict):
    """The registry's model as ``zoo train`` builds it, compiled by ``recipe.compile_model``; images, labels."""
    import dataclasses

    from common import registry
    from common.train import recipe

    model = registry.build(name, input_shape=(None, None, 1), num_classes=s["classes"], base_filters=s["base"])
    steps_per_execution = s["steps_per_execution"] or None  # 0: the zoo's default
    paper = dataclasses.replace(registry.get(name).recipe, precision=s["precision"],
                                steps_per_execution=steps_per_execution)  # the model's paper's optimizer and loss
    recipe.compile_model(model, paper, s["classes"], steps_per_epoch=s["steps"])
    images, labels = random_batch(s["batch"], s["size"], s["classes"])
    names = list(recipe.output_weights(model, paper.side_weight))
    return model, images, labels if len(names) == 1 else {n: labels for n in names}  # as common.ct.pipeline.slice_dataset(outputs=)


def _regression_case(name: str, s: dict):
    """Pose (--size rounded up to stride 64, 4 stacks of 4 x base features) or TRI-CNN (VGG16 base_filters = base)."""
    import keras

    import acnn_pose
    import tri_al
    from common.train import recipe

    if name in POSE:
        size = -(-s["size"] // 64) * 64
        model = acnn_pose.build_model(input_shape=(size, size, 3), base_filters=4 * s["base"], attention=POSE[name])
        inputs = 1
    else:
        size = s["size"]
        model = tri_al.build_model(tile_size=size, base_filters=s["base"])
        inputs = 3
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=["mse"] * len(model.outputs),
                  steps_per_execution=recipe.resolve_steps_per_execution(s["steps_per_execution"] or None,
                                                                        s["steps"]))
    rng = np.random.default_rng(0)
    x = [rng.random((s["batch"], size, size, 3), dtype=np.float32) for _ in range(inputs)]
    targets = tuple(rng.random((s["batch"], *o.shape[1:]), dtype=np.float32) for o in model.outputs)
    return model, x if inputs > 1 else x[0], targets


def _peak_gpu_mib() -> float | None:
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}  # None on a CPU
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def keras_figures(name: str, s: dict) -> dict:
    """Trains ``name`` the zoo's way in this (fresh) process; its figures as a dict."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from common.train import recipe

    precision = recipe.configure_precision(s["precision"])
    # (No keras.utils.set_random_seed: it imports TensorFlow wherever it is installed. Speed needs no seed.)
    model, x, y = (_regression_case if name in POSE or name == "tri_cnn" else _segmentation_case)(name, s)

    def batches():  # the same host batch every step: Keras copies it to the device each time
        while True:
            yield x, y

    class EpochTimer(keras.callbacks.Callback):  # epoch hooks only: Keras keeps dispatching asynchronously
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = EpochTimer()
    warm = model.fit(batches(), steps_per_epoch=s["warmup"], epochs=1, verbose=0, shuffle=False)  # compiles
    timed = model.fit(batches(), steps_per_epoch=s["steps"], epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    losses = [float(warm.history["loss"][-1]), float(timed.history["loss"][-1])]
    output = model([a[:1] for a in x] if isinstance(x, list) else x[:1])
    dtype = str((output[0] if isinstance(output, (list, tuple)) else output).dtype)
    return {"framework": "keras", "backend": keras.backend.backend(), "devices": _devices(), "precision": precision,
            "steps_per_execution": model.steps_per_execution, "jit_compile": model.jit_compile,
            "images_per_s": round(s["steps"] * s["batch"] / timer.seconds, 2), "peak_gpu_mib": _peak_gpu_mib(),
            "losses": [round(v, 4) for v in losses], "output_dtype": dtype,
            "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "tensorflow_imported": "tensorflow" in sys.modules,
            "ok": bool(np.all(np.isfinite(losses))) and dtype == "float32" and "tensorflow" not in sys.modules}


def torch_figures(name: str, s: dict) -> dict:
    """PyTorch eager on the same network and batch in this (fresh) process: AMP on a GPU, float32 on a CPU."""
    import torch

    from benchmarks import torch_reference

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    module = torch_reference.build(name, s["base"], num_classes=s["classes"]).to(device)
    optimizer = torch_reference.make_optimizer(module)
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    images, labels = random_batch(s["batch"], s["size"], s["classes"])
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW, PyTorch's layout
    labels = torch.from_numpy(labels)
    if cuda:
        images, labels = images.pin_memory(), labels.pin_memory()

    def step() -> float:
        return torch_reference.train_step(module, optimizer, images.to(device, non_blocking=True),
                                          labels.to(device, non_blocking=True), s["classes"], scaler)

    losses = [step() for _ in range(s["warmup"])]
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses += [step() for _ in range(s["steps"])]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
    return {"framework": "torch", "devices": [torch.cuda.get_device_name() if cuda else "cpu"],
            "precision": "amp_float16" if cuda else "float32", "torch": torch.__version__,
            "images_per_s": round(s["steps"] * s["batch"] / seconds, 2), "peak_gpu_mib": peak,
            "losses": [round(losses[0], 4), round(losses[-1], 4)],
            "parameters": torch_reference.parameter_count(module), "ok": bool(np.all(np.isfinite(losses)))}


def _run(function, name: str, s: dict) -> dict:
    try:
        return in_fresh_process(function, name, s)
    except Exception as error:  # noqa: BLE001  (out of memory, a crashed process: a failed figure, not a lost run)
        return {"framework": "keras" if function is keras_figures else "torch", "ok": False,
                "error": f"{type(error).__name__}: {error}"[-1000:]}


def gpu_check(args) -> int:
    os.environ.setdefault("KERAS_BACKEND", "jax")  # the children inherit it
    s = {key: getattr(args, key) for key in SETTINGS}
    if s["steps_per_execution"] < 0:
        raise SystemExit("--steps-per-execution must be >= 0 (0: the zoo's default)")
    common = {"benchmark": "gpu-check", **{k: s[k] for k in ("base", "size", "batch", "classes", "steps")},
              "date": time.strftime("%Y-%m-%d")}
    failures = 0
    for name in in_fresh_process(registry_names):  # JAX started here would hold the GPU memory the runs need
        if args.only and name not in args.only:
            continue
        figures = {"keras": _run(keras_figures, name, s)}
        if name in RACED:
            figures["torch"] = _run(torch_figures, name, s)
        for result in figures.values():
            failures += not result["ok"]
            print(json.dumps({**common, "model": name, **result}), flush=True)
        if len(figures) == 2 and all("images_per_s" in r for r in figures.values()):
            keras_run, torch_run = figures["keras"], figures["torch"]
            same = abs(keras_run["parameters"] - torch_run["parameters"]) <= 0.005 * keras_run["parameters"]
            failures += not same
            print(json.dumps({**common, "model": name, "keras_precision": keras_run["precision"],
                              "torch_precision": torch_run["precision"],
                              "keras_images_per_s": keras_run["images_per_s"],
                              "torch_images_per_s": torch_run["images_per_s"],
                              "ratio": round(keras_run["images_per_s"] / torch_run["images_per_s"], 3),
                              "keras_peak_gpu_mib": keras_run["peak_gpu_mib"],
                              "torch_peak_gpu_mib": torch_run["peak_gpu_mib"], "same_parameters": same}),
                  flush=True)
    return 1 if failures else 0


def registry_names() -> list[str]:
    """Every model of the registry's three tasks, in its order (the registry is keras-only)."""
    from common import registry

    return [*registry.names("segmentation"), *POSE, "tri_cnn"]


def _devices() -> list[str]:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]
    return [keras.backend.backend()]
