"""``python -m benchmarks vs-torch``: the zoo's training against PyTorch eager on the same network.

Each round trains the Keras model the zoo's way (``common.train.segmentation``: the
model ``zoo train`` builds, its compile, ``model.fit`` on a prefetched
tf.data stream) and the same network in PyTorch (``benchmarks.torch_reference``)
on identical random data, keras first, then torch, each in a fresh process so
neither framework's thread pools compete with the other's. One JSON line per
round, then the median ratio (Keras images/s over PyTorch images/s).

``attention="none"`` (``--without-attention``) is a diagnostic: both frameworks
then compute O = V in place of eq. 1's softmax(QK^T / sqrt(d)) V (projections,
gates and everything around attention unchanged), so the two rounds time the
network around attention, and the difference from a normal run is what
attention itself costs in each framework. (Q and K then feed nothing: neither
framework computes their projections' gradients, and TensorFlow's graph may
also drop their forward products, PyTorch's eager mode not; both are 1x1 maps.)

PyTorch is a bench-only extra: ``pip install torch==2.13.0`` (the CPU build)
then ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.timing import (
    compiled_zoo_model,
    in_fresh_process,
    peak_rss_mib,
    random_batch,
    repeated_stream,
    timed_fit,
)


def _without_attention_keras() -> None:
    """This process's U-Transformer layers compute O = V instead of eq. 1 (the ``attention="none"`` diagnostic)."""
    from unet_transformer import layers

    layers.scaled_attention = lambda q, k, v, *_args: (v, None)  # layers call it by this module-level name


def _without_attention_torch() -> None:
    """This process's PyTorch reference computes O = V instead of ``F.scaled_dot_product_attention``."""
    from benchmarks import torch_reference

    torch_reference.F.scaled_dot_product_attention = lambda q, k, v, *_args, **_kwargs: v


def keras_images_per_s(model_name: str, base: int, size: int, batch: int, classes: int, steps: int,
                       warmup: int, attention: str) -> tuple[float, int, float]:
    """Training images/s of ``common.train.segmentation`` on one repeated batch; trainable parameters; peak MiB.

    ``attention``: "none" for the diagnostic without attention (module docstring); any other value is
    the PyTorch runner's (both runners take the same arguments).
    """

    if attention == "none":
        _without_attention_keras()

    model = compiled_zoo_model(model_name, base, batch, classes, steps)
    images, labels = random_batch(batch, size, classes)
    data = repeated_stream(images, labels)
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0, shuffle=False)  # traces the step
    seconds = timed_fit(model, data, steps)
    parameters = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return steps * batch / seconds, parameters, peak_rss_mib()


def torch_images_per_s(model_name: str, base: int, size: int, batch: int, classes: int, steps: int,
                       warmup: int, torch_attention: str) -> tuple[float, int, float]:
    """Training images/s of the PyTorch reference in eager mode on the same batch; parameters; peak MiB.

    ``torch_attention``: "fused" (``F.scaled_dot_product_attention``, what a
    PyTorch user writes), "plain" (softmax(QK^T)V op by op, as Keras runs it)
    or "none" (the fused path computing O = V: the diagnostic in the module docstring).
    """
    import torch

    from benchmarks import torch_reference

    if torch_attention == "none":
        _without_attention_torch()

    torch.manual_seed(0)
    module = torch_reference.build(model_name, base, num_classes=classes,
                                   fused_attention=torch_attention in ("fused", "none"))
    optimizer = torch_reference.make_optimizer(module)
    images, labels = random_batch(batch, size, classes)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW, PyTorch's layout
    labels = torch.from_numpy(labels).long()
    for _ in range(warmup):
        torch_reference.train_step(module, optimizer, images, labels, classes)
    start = time.perf_counter()
    for _ in range(steps):
        torch_reference.train_step(module, optimizer, images, labels, classes)
    seconds = time.perf_counter() - start
    return steps * batch / seconds, torch_reference.parameter_count(module), peak_rss_mib()


RUNNERS = {"keras": keras_images_per_s, "torch": torch_images_per_s}


def vs_torch(model_name: str, base: int, size: int, batch: int, classes: int, steps: int, warmup: int,
             rounds: int, emit, torch_attention: str = "fused") -> float:
    """Runs ``rounds`` alternating keras/torch rounds; emits one line per round and the median; returns it.

    ``torch_attention``: "fused", "plain", or "none" (both frameworks without attention, module docstring).
    """
    if model_name not in ("unet", "u_transformer"):
        raise ValueError(f"--model must be unet or u_transformer for vs-torch, got {model_name!r}")
    if torch_attention not in ("fused", "plain", "none"):
        raise ValueError(f"--torch-attention must be fused, plain or none, got {torch_attention!r}")
    if torch_attention == "none" and model_name != "u_transformer":
        raise ValueError("--without-attention applies to --model u_transformer only")
    ratios = []
    for round_index in range(rounds):
        figures = {}
        for framework in RUNNERS:
            figures[framework] = in_fresh_process(RUNNERS[framework], model_name, base, size, batch, classes,
                                                  steps, warmup, torch_attention)
        (keras_speed, keras_params, keras_peak), (torch_speed, torch_params, torch_peak) = (figures["keras"],
                                                                                          figures["torch"])
        if abs(torch_params - keras_params) > 0.005 * keras_params:
            raise RuntimeError(f"the PyTorch reference has {torch_params:,} parameters, the Keras model "
                               f"{keras_params:,}: not the same network")
        ratios.append(keras_speed / torch_speed)
        emit(benchmark="vs-torch", peak_rss_mib=None, round=round_index + 1, model=model_name, base=base, size=size,
             batch=batch, keras_images_per_s=round(keras_speed, 2), torch_images_per_s=round(torch_speed, 2),
             ratio=round(ratios[-1], 3), keras_parameters=keras_params, torch_parameters=torch_params,
             torch_attention=torch_attention, keras_peak_rss_mib=round(keras_peak),
             torch_peak_rss_mib=round(torch_peak))
    median = statistics.median(ratios)
    emit(benchmark="vs-torch", peak_rss_mib=None, model=model_name, base=base, size=size, batch=batch, rounds=rounds,
         torch_attention=torch_attention, median_ratio=round(median, 3))
    return median
