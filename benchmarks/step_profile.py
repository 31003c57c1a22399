"""``python -m benchmarks profile``: where a training step's time goes, by layer and by TensorFlow op.

Runs ``--steps`` training steps of the zoo's compiled model under TensorFlow's
profiler and sums the host CPU time of every op (over all threads, so a
fully parallel op counts once per core) by the layer it belongs to and by op
type, per step. Read from the profiler's XSpace protobuf, which TensorFlow
ships (``tensorflow.tsl.profiler.protobuf.xplane_pb2``), so TensorBoard is
not needed.
"""

from __future__ import annotations

import collections
import pathlib
import re
import tempfile

from benchmarks.timing import compiled_zoo_model, random_batch

# The model's own layer names (unet_transformer.model), else the loss and optimizer; attention's custom
# gradient (unet_transformer.ops) runs outside its layer's scope, in one of its own, summed over the layers.
_LAYER = re.compile(r"/(mhca\d|mhsa|gate\d|enc\d|dec\d|bottleneck|up\d|pool\d|concat\d|logits|probabilities|"
                    r"compile_loss|adam|attention_gradient)")


def op_times(xspace_path) -> collections.Counter:
    """Total microseconds per TensorFlow op name ("scope/op:Type") on the host CPU plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(pathlib.Path(xspace_path).read_bytes())
    times = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith("ExecutorState"):
                    times[name] += event.duration_ps / 1e6
    return times


def profile(args, emit) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = compiled_zoo_model(args.model, args.base, args.batch, args.classes, args.steps)
    images, labels = random_batch(args.batch, args.size, args.classes)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0, shuffle=False)
    logdir = tempfile.mkdtemp(prefix="zoo-profile-")
    tf.profiler.experimental.start(logdir)
    model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    tf.profiler.experimental.stop()
    times = op_times(next(pathlib.Path(logdir).rglob("*.xplane.pb")))
    by_layer, by_type = collections.Counter(), collections.Counter()
    for name, microseconds in times.items():
        scope, op_type = name.rsplit(":", 1)
        match = _LAYER.search(scope)
        by_layer[match.group(1) if match else "other"] += microseconds
        by_type[op_type] += microseconds
    total = sum(times.values())
    for kind, counter in (("layer", by_layer), ("op_type", by_type)):
        for key, microseconds in counter.most_common(args.top):
            emit(benchmark="profile", model=args.model, base=args.base, size=args.size, batch=args.batch,
                 **{kind: key}, ms_per_step=round(microseconds / 1000 / args.steps, 1),
                 share=round(microseconds / total, 3))
    emit(benchmark="profile", model=args.model, base=args.base, size=args.size, batch=args.batch,
         total_op_ms_per_step=round(total / 1000 / args.steps, 1))
