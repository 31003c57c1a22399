"""What the benchmarks share: identical random batches, fresh processes, and timing ``fit`` by its steps."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import time

import numpy as np


def random_batch(batch: int, size: int, classes: int, seed: int = 0):
    """Images (B, S, S, 1) float32 and labels (B, S, S) uint8; the same for every framework."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 1), dtype=np.float32)
    labels = rng.integers(0, classes, (batch, size, size)).astype(np.uint8)
    return images, labels


def repeated_stream(inputs, targets):
    """The same batch over and over as a prefetched tf.data stream: ``fit`` then times the step, not the input."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((inputs, targets)).repeat().prefetch(tf.data.AUTOTUNE)


def in_fresh_process(function, *args):
    """``function(*args)`` in a new Python process (importable function, picklable arguments and result)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def peak_rss_mib() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def compiled_zoo_model(model_name: str, base: int, batch: int, classes: int, steps_per_epoch: int,
                       precision: str = "float32", model_options: dict | None = None):
    """The segmentation model ``zoo train`` builds, compiled as it compiles it (``common.train.segmentation``)."""
    from common.train import recipe
    from common.train import segmentation as training
    config = training.TrainConfig(data="", out="", model=model_name, base_filters=base, batch_size=batch,
                                  precision=precision, model_options=model_options or {})
    recipe.configure_precision(config.precision)
    model = training.build_segmentation_model(config, classes)
    training.compile_model(model, config, classes, steps_per_epoch=steps_per_epoch)
    return model


def timed_fit(model, data, steps: int) -> float:
    """Seconds from the start of the first training step to the end of the last, in one ``model.fit``.

    Not the whole call: with tf.data's autotuning on, ``fit`` returning waited
    here up to ~2 s for the input iterator to shut down (a fixed 5.1 s for any
    short fit), which is no part of a training step.
    """
    import keras

    class Steps(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    timer = Steps()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer])
    return timer.end - timer.start
