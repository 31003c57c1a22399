"""``python -m benchmarks speed-settings``: the zoo's training speed defaults, each measured before and after.

Every setting trains the model ``zoo train`` builds (``zoo train-pose``'s
with ``--model acnn``) on one repeated random batch in a fresh process (several models in one process disturbed each
other's timings here), settings alternating, ``--rounds`` times; one JSON line
per measurement, then each setting's median images/s relative to the first.

Settings: ``zoo`` (the defaults: ``compile_model`` with fused batch norm, no
XLA, one step per execution), ``keras_batch_norm`` (Keras' own batch norm
ops), ``xla`` (``jit_compile=True``), ``steps_per_execution_4``, and the
thread settings ``inter_op_1`` / ``intra_op_1`` (TensorFlow's inter- and
intra-op pools of one thread instead of one per core).
"""

from __future__ import annotations

import statistics

from benchmarks.timing import compiled_zoo_model, in_fresh_process, random_batch, repeated_stream, timed_fit

SETTINGS = ("zoo", "keras_batch_norm", "xla", "steps_per_execution_4", "inter_op_1", "intra_op_1")


def _compiled_model(model_name: str, base: int, size: int, batch: int, classes: int, steps: int):
    """The model as the zoo trains it, compiled, and one random batch for it.

    Segmentation models: ``common.train.segmentation.compile_model``. "acnn": ACNN with
    2 stacks of ``2 * base`` features and mean squared error on every stage's
    heatmaps, fused batch norm on, as ``zoo train-pose`` trains it.
    """
    if model_name != "acnn":
        return compiled_zoo_model(model_name, base, batch, classes, steps), random_batch(batch, size, classes)
    import numpy as np

    import acnn_pose
    from common.nn.optimizers import TorchRMSprop
    from common.train import batch_norm

    model = acnn_pose.build_model((size, size, 3), num_stacks=2, base_filters=2 * base)
    model.compile(optimizer=TorchRMSprop(2.5e-4), loss=["mse"] * len(model.outputs))  # ACNN's stages
    batch_norm.fuse_batch_norm(model)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    heatmaps = tuple(rng.random((batch, *output.shape[1:]), dtype=np.float32) for output in model.outputs)
    return model, (images, heatmaps)


def images_per_s(setting: str, model_name: str, base: int, size: int, batch: int, classes: int, steps: int,
                 warmup: int) -> float:
    """Training images/s of the zoo's compiled model with ``setting`` changed (--model: segmentation or acnn)."""
    import tensorflow as tf

    if setting == "inter_op_1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif setting == "intra_op_1":
        tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras

    from common.train import batch_norm

    keras.utils.set_random_seed(0)
    model, (inputs, targets) = _compiled_model(model_name, base, size, batch, classes, steps)
    if setting == "keras_batch_norm":  # undo fuse_batch_norm
        for layer in model._flatten_layers():
            if isinstance(layer.call, batch_norm._FusedBatchNormCall):
                layer.call = layer.call.keras_call
    elif setting in ("xla", "steps_per_execution_4"):
        compiled = model._compile_config.config
        model.compile(optimizer=model.optimizer, loss=compiled["loss"], loss_weights=compiled["loss_weights"],
                      metrics=compiled["metrics"], jit_compile=setting == "xla",
                      steps_per_execution=4 if setting == "steps_per_execution_4" else 1)
    data = repeated_stream(inputs, targets)
    model.fit(data, epochs=1, steps_per_epoch=4 * warmup, verbose=0, shuffle=False)  # traces the step
    return steps * batch / timed_fit(model, data, steps)


def speed_settings(args, emit) -> None:
    settings = args.only or SETTINGS
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"--only: unknown settings {unknown}; choose from {SETTINGS}")
    speeds = {setting: [] for setting in settings}
    for round_index in range(args.rounds):
        for setting in settings:
            speeds[setting].append(in_fresh_process(images_per_s, setting, args.model, args.base, args.size,
                                                    args.batch, args.classes, args.steps, args.warmup))
            emit(benchmark="speed-settings", peak_rss_mib=None, round=round_index + 1, setting=setting,
                 model=args.model, base=args.base, size=args.size, batch=args.batch,
                 images_per_s=round(speeds[setting][-1], 2))
    reference = statistics.median(speeds[settings[0]])
    for setting in settings:
        median = statistics.median(speeds[setting])
        emit(benchmark="speed-settings", peak_rss_mib=None, setting=setting, model=args.model, rounds=args.rounds,
             median_images_per_s=round(median, 2), relative_to_first=round(median / reference, 3))
