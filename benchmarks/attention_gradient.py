"""``python -m benchmarks attention-gradient``: attention's two TensorFlow backward passes against each other.

One training step of attention alone (``unet_transformer.ops.flash_gradient_attention``
forward, a loss, and the gradients of q, k and v) in a ``tf.function``, once
with the low-rank backward pass and once with the dense one
(``LOW_RANK_GRADIENT_DEPTH`` switched for the trace), for each head width in
``--widths``: ``--batch`` images, 8 heads, ``--size`` tokens attending to as many.
Both variants are traced in the same process and timed in alternating rounds;
the figure is each variant's median over the rounds and their ratio, which is
what ``LOW_RANK_GRADIENT_DEPTH`` is chosen from.
"""

from __future__ import annotations

import statistics
import time

HEADS = 8


def _step(width: int, low_rank: bool):
    """A traced step: O = attention(q, k, v), loss = sum(O sin O), and (O, dq, dk, dv)."""
    import tensorflow as tf

    from unet_transformer import ops as attention_ops

    @tf.function(input_signature=[tf.TensorSpec((None, None, HEADS, width), tf.float32)] * 3)  # traced once
    def step(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = attention_ops.flash_gradient_attention(q, k, v, width ** -0.5)
            loss = tf.reduce_sum(out * tf.sin(out))
        return [out, *tape.gradient(loss, [q, k, v])]

    chosen = attention_ops.LOW_RANK_GRADIENT_DEPTH
    attention_ops.LOW_RANK_GRADIENT_DEPTH = width if low_rank else 0  # read when the step is traced
    try:
        step.get_concrete_function()
    finally:
        attention_ops.LOW_RANK_GRADIENT_DEPTH = chosen
    return step


def attention_gradient(args, emit) -> None:
    import numpy as np
    import tensorflow as tf

    for width in (int(w) for w in args.widths.split(",")):
        rng = np.random.default_rng(0)
        q, k, v = (tf.constant(rng.normal(size=(args.batch, args.size, HEADS, width)).astype("float32"))
                   for _ in range(3))
        steps = {"dense": _step(width, False), "low_rank": _step(width, True)}
        results = {name: [t.numpy() for t in step(q, k, v)] for name, step in steps.items()}
        difference = max(float(np.abs(a - b).max()) for a, b in zip(results["dense"], results["low_rank"]))
        seconds = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    [t.numpy() for t in step(q, k, v)]
                seconds[name].append((time.perf_counter() - start) / args.steps)
        median = {name: statistics.median(s) for name, s in seconds.items()}
        emit(benchmark="attention-gradient", batch=args.batch, heads=HEADS, tokens=args.size, width=width,
             dense_ms=round(1000 * median["dense"], 1), low_rank_ms=round(1000 * median["low_rank"], 1),
             low_rank_over_dense=round(median["low_rank"] / median["dense"], 3),
             max_abs_difference=difference)
