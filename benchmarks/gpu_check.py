"""``python -m benchmarks gpu-check``: every model trains under mixed_float16 on Keras' JAX backend.

Written for the lent GPU machine, which has JAX but no TensorFlow: it imports
only ``keras``, the model packages and ``common.nn.losses`` (all keras-only), and
sets ``KERAS_BACKEND=jax`` unless a backend is chosen already. For each model
it prints one JSON line: the device, a few training steps' losses (all must
be finite), the output dtype (float32 whatever the policy) and images/s.
Exit status 1 when any model fails a check. On the lent H100::

    KERAS_BACKEND=jax python -m benchmarks gpu-check --precision mixed_float16 --base 64 --size 256 \
        --batch 16 --steps 20 --warmup 3 --steps-per-execution 1
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _segmentation(build):
    """A segmentation case: image batch in, (B, H, W) labels as targets for every output."""
    def case(size: int, batch: int, base: int):
        model = build(base)
        rng = np.random.default_rng(0)
        x = rng.random((batch, size, size, 1), dtype=np.float32)
        y = rng.integers(0, 8, (batch, size, size))
        return model, x, [y] * len(model.outputs), "segmentation"
    return case


def _regression(build, inputs: int, channels: int = 3, stride: int = 1):
    """Heatmaps, masks or class probabilities: random targets of each output's shape, mean squared error."""
    def case(size: int, batch: int, base: int):
        size = -(-size // stride) * stride
        model = build(size, base)
        rng = np.random.default_rng(0)
        x = [rng.random((batch, size, size, channels), dtype=np.float32) for _ in range(inputs)]
        targets = [rng.random((batch, *o.shape[1:]), dtype=np.float32) for o in model.outputs]
        return model, x if inputs > 1 else x[0], targets, "mse"
    return case


def _cases():
    import acnn_pose
    import eas_unet
    import tri_al
    import unet_transformer.model

    cases = {}
    for variant in unet_transformer.model.VARIANTS:
        cases[variant] = _segmentation(
            lambda base, v=variant: unet_transformer.build_model(v, num_classes=8, base_filters=base))
    cases["eas_unet"] = _segmentation(lambda base: eas_unet.build_model(num_classes=8, base_filters=base))
    # ACNN and the hourglass at --size rounded up to their stride 64, 4 stacks of 4 x base features
    # (256 at base 64, the paper's)
    for name, attention in (("hourglass", False), ("acnn", True)):
        cases[name] = _regression(lambda size, base, a=attention: acnn_pose.build_model(
            input_shape=(size, size, 3), features=4 * base, attention=a), inputs=1, stride=64)
    # TRI-CNN: three tiles of --size pixels, VGG16 width base / 64 (1.0, the exact VGG16, at base 64)
    cases["tri_cnn"] = _regression(lambda size, base: tri_al.build_model(tile_size=size, width=base / 64),
                                   inputs=3)
    return cases


def gpu_check(args) -> int:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from common.nn.losses import CEDiceLoss

    keras.config.set_dtype_policy(args.precision)
    devices = _devices()
    failures = 0
    for name, make in _cases().items():
        if args.only and name not in args.only:
            continue
        keras.backend.clear_session()
        model, x, targets, kind = make(args.size, args.batch, args.base)
        classes = model.outputs[0].shape[-1]
        loss = [CEDiceLoss(classes) if kind == "segmentation" else "mse" for _ in targets]
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, steps_per_execution=args.steps_per_execution)
        losses = [float(np.ravel(model.train_on_batch(x, targets))[0])]  # also compiles the step

        def tile(a, steps):
            return np.tile(a, (steps,) + (1,) * (a.ndim - 1))

        def fit(steps):  # model.fit, so that steps_per_execution takes effect
            inputs = [tile(a, steps) for a in x] if isinstance(x, list) else tile(x, steps)
            history = model.fit(inputs, [tile(t, steps) for t in targets],
                                batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            return float(history.history["loss"][-1])

        losses.append(fit(args.warmup * args.steps_per_execution))
        start = time.perf_counter()
        losses.append(fit(args.steps))
        seconds = time.perf_counter() - start
        output = model([a[:1] for a in x] if isinstance(x, list) else x[:1])
        dtype = str((output[0] if isinstance(output, (list, tuple)) else output).dtype)
        ok = bool(np.all(np.isfinite(losses))) and dtype == "float32"
        failures += not ok
        print(json.dumps({"benchmark": "gpu-check", "model": name, "backend": keras.backend.backend(),
                          "devices": devices, "precision": args.precision, "base": args.base, "size": args.size,
                          "batch": args.batch, "losses": [round(v, 4) for v in losses], "output_dtype": dtype,
                          "images_per_s": round(args.steps * args.batch / seconds, 2), "ok": ok,
                          "tensorflow_imported": "tensorflow" in sys.modules,
                          "date": time.strftime("%Y-%m-%d")}), flush=True)
    return 1 if failures else 0


def _devices() -> list[str]:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]
    return [keras.backend.backend()]
