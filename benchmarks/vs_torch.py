"""``python -m benchmarks vs-torch``: the zoo's training against PyTorch eager on the same network.

Each round trains the Keras model the zoo's way (``common.training``: the
model ``zoo train`` builds, its compile, ``model.fit`` on a prefetched
tf.data stream) and the same network in PyTorch (``benchmarks.torch_reference``)
on identical random data, keras first, then torch, each in a fresh process so
neither framework's thread pools compete with the other's. One JSON line per
round, then the median ratio (Keras images/s over PyTorch images/s).

PyTorch is a bench-only extra: ``pip install torch==2.13.0`` (the CPU build)
then ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time

import numpy as np


def random_batch(batch: int, size: int, classes: int, seed: int = 0):
    """The images (B, S, S, 1) float32 and labels (B, S, S) uint8 both frameworks train on."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    labels = rng.integers(0, classes, (batch, size, size)).astype(np.uint8)
    return images, labels


def keras_images_per_s(model_name: str, base: int, size: int, batch: int, classes: int, steps: int,
                       warmup: int) -> tuple[float, int]:
    """Training images/s of ``common.training`` on one repeated batch; and the trainable parameter count."""
    import tensorflow as tf

    from common import training

    config = training.TrainConfig(data="", out="", model=model_name, base_filters=base, batch_size=batch,
                                  precision="float32")
    training.configure_precision(config.precision)
    model = training.build_segmentation_model(config, classes)
    training.compile_model(model, config, classes, steps_per_epoch=steps)
    images, labels = random_batch(batch, size, classes)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(tf.data.AUTOTUNE)
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0, shuffle=False)  # traces the step
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    parameters = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return steps * batch / seconds, parameters


def torch_images_per_s(model_name: str, base: int, size: int, batch: int, classes: int, steps: int,
                       warmup: int) -> tuple[float, int]:
    """Training images/s of the PyTorch reference in eager mode on the same batch; and its parameter count."""
    import torch

    from benchmarks import torch_reference

    torch.manual_seed(0)
    module = torch_reference.build(model_name, base, num_classes=classes)
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
    return steps * batch / seconds, torch_reference.parameter_count(module)


RUNNERS = {"keras": keras_images_per_s, "torch": torch_images_per_s}


def _in_fresh_process(framework: str, *args) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(RUNNERS[framework], *args).result()


def vs_torch(model_name: str, base: int, size: int, batch: int, classes: int, steps: int, warmup: int,
             rounds: int, emit) -> float:
    """Runs ``rounds`` alternating keras/torch rounds; emits one line per round and the median; returns it."""
    if model_name not in ("unet", "u_transformer"):
        raise ValueError(f"--model must be unet or u_transformer for vs-torch, got {model_name!r}")
    ratios = []
    for round_index in range(rounds):
        figures = {}
        for framework in RUNNERS:
            images_per_s, parameters = _in_fresh_process(framework, model_name, base, size, batch, classes,
                                                         steps, warmup)
            figures[framework] = (images_per_s, parameters)
        (keras_speed, keras_params), (torch_speed, torch_params) = figures["keras"], figures["torch"]
        if abs(torch_params - keras_params) > 0.005 * keras_params:
            raise RuntimeError(f"the PyTorch reference has {torch_params:,} parameters, the Keras model "
                               f"{keras_params:,}: not the same network")
        ratios.append(keras_speed / torch_speed)
        emit(benchmark="vs-torch", round=round_index + 1, model=model_name, base=base, size=size, batch=batch,
             keras_images_per_s=round(keras_speed, 2), torch_images_per_s=round(torch_speed, 2),
             ratio=round(ratios[-1], 3), keras_parameters=keras_params, torch_parameters=torch_params)
    median = statistics.median(ratios)
    emit(benchmark="vs-torch", model=model_name, base=base, size=size, batch=batch, rounds=rounds,
         median_ratio=round(median, 3))
    return median
