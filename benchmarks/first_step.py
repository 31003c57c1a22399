"""``python -m benchmarks first-step``: seconds from ``fit``'s call to the end of its first training step.

That time is the tracing of the training step (TensorFlow runs one small
step in well under a second). ``prebuilt``: the zoo's ``compile_model``,
which creates the optimizer's variables before ``fit``
(``common.nn.optimizers.build_compiled``); ``lazy``: the same model and
compile with the optimizer left for Keras to build inside the first traced
step, as before, which makes TensorFlow trace the step twice. Each in a
fresh process, alternating, ``--rounds`` times; one JSON line per
measurement, then the median ratio lazy / prebuilt.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.timing import in_fresh_process, random_batch

VARIANTS = ("prebuilt", "lazy")


def _first_step_seconds(model_name: str, base: int, size: int, batch: int, classes: int, variant: str) -> float:
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
    return first.end - start


def first_step(args, emit) -> None:
    seconds = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            value = in_fresh_process(_first_step_seconds, args.model, args.base, args.size, args.batch,
                                     args.classes, variant)
            seconds[variant].append(value)
            emit(benchmark="first-step", model=args.model, base=args.base, size=args.size, batch=args.batch,
                 variant=variant, round=round_index + 1, seconds=round(value, 2))
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    emit(benchmark="first-step", model=args.model, base=args.base, size=args.size, batch=args.batch,
         rounds=args.rounds, **{f"median_{v}_s": round(m, 2) for v, m in medians.items()},
         median_ratio_lazy_to_prebuilt=round(medians["lazy"] / medians["prebuilt"], 3))
