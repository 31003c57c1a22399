"""``python -m benchmarks first-step``: seconds from ``fit``'s call to the end of its first training step.

That time is the tracing of the training step (TensorFlow runs one small
step in well under a second). ``prebuilt``: the zoo's ``compile_model``,
which creates the optimizer's variables before ``fit``
(``common.nn.optimizers.build_compiled``); ``lazy``: the same model and
compile with the optimizer left for Keras to build inside the first traced
step, as before, which makes TensorFlow trace the step twice. Each process
then trains ``--warmup`` untimed and ``--steps`` timed steps on the same
batch (``benchmarks.timing.timed_fit``), so the run also shows whether
building the optimizer early changes the steady-state step. Each variant in a
fresh process, alternating, ``--rounds`` times; one JSON line per
measurement, then the medians and the ratios lazy / prebuilt.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.timing import in_fresh_process, random_batch, repeated_stream, timed_fit

VARIANTS = ("prebuilt", "lazy")


def _first_step_seconds(model_name: str, base: int, size: int, batch: int, classes: int, variant: str,
                        warmup: int, steps: int) -> tuple[float, float]:
    """Seconds to the end of fit's first step, then images/s over ``steps`` steps after ``warmup`` untimed ones."""
    import keras

    from common.nn import optimizers
    from common.train import recipe
    from common.train import segmentation as training

    if variant == "lazy":
        optimizers.build_compiled = lambda model: None  # Keras' own timing: built inside the first traced step
    config = training.TrainConfig(data="", out="", model=model_name, base_filters=base, batch_size=batch)
    model = training.build_segmentation_model(config, classes)
    training.compile_model(model, config, classes, steps_per_epoch=1)
    assert model.optimizer.built == (variant == "prebuilt")
    images, labels = random_batch(batch, size, classes)
    names = list(recipe.output_weights(model, config.side_weight))
    targets = labels if len(names) == 1 else {name: labels for name in names}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    first = FirstStep()
    start = time.perf_counter()
    model.fit(images, targets, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[first])
    data = repeated_stream(images, targets)
    timed_fit(model, data, warmup)  # a tf.data input may retrace the step once
    return first.end - start, batch * steps / timed_fit(model, data, steps)


def first_step(args, emit) -> None:
    seconds = {variant: [] for variant in VARIANTS}
    speed = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            first, images_per_s = in_fresh_process(_first_step_seconds, args.model, args.base, args.size,
                                                   args.batch, args.classes, variant, args.warmup, args.steps)
            seconds[variant].append(first)
            speed[variant].append(images_per_s)
            emit(benchmark="first-step", model=args.model, base=args.base, size=args.size, batch=args.batch,
                 variant=variant, round=round_index + 1, seconds=round(first, 2),
                 steps=args.steps, images_per_s=round(images_per_s, 2))
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    steady = {variant: statistics.median(values) for variant, values in speed.items()}
    emit(benchmark="first-step", model=args.model, base=args.base, size=args.size, batch=args.batch,
         rounds=args.rounds, **{f"median_{v}_s": round(m, 2) for v, m in medians.items()},
         median_ratio_lazy_to_prebuilt=round(medians["lazy"] / medians["prebuilt"], 3),
         **{f"median_{v}_images_per_s": round(m, 2) for v, m in steady.items()},
         images_per_s_ratio_lazy_to_prebuilt=round(steady["lazy"] / steady["prebuilt"], 3))
