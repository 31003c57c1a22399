"""Where training runs: the ``tf.distribute`` strategy (the precision policy is ``recipe.configure_precision``).

One device, ``MirroredStrategy`` over local GPUs, or ``MultiWorkerMirroredStrategy``
from ``TF_CONFIG`` (docs/scale.md); which worker is the chief; batch norm
synchronized across replicas while several train.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """TensorFlow's multi-worker strategy with the ``reduce`` that Keras 3's ``fit`` expects.

    Keras 3 does not train under the plain strategy (keras-team/keras#20585):
    ``fit`` learns a distributed batch's shapes by reducing the whole
    ``(x, y)`` structure in one ``reduce`` call, which the collective strategy
    takes one value at a time and not as uint8 (our labels); and it averages
    each scalar loss and metric across workers with ``axis=0``, which a scalar
    does not have. This ``reduce`` maps over structures, reduces integers as
    int32 and scalars with ``axis=None``; nothing else changes.
    """

    _REDUCIBLE = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        local = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
        if axis is not None and getattr(local, "shape", None) is not None and local.shape.rank == 0:
            axis = None
        if isinstance(value, tf.distribute.DistributedValues) and local.dtype not in self._REDUCIBLE:
            value = self.run(lambda t: tf.cast(t, tf.int32), args=(value,))
        return super().reduce(reduce_op, value, axis)


def choose_strategy() -> tf.distribute.Strategy:
    """Picks the strategy the machine calls for.

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one
    worker, ``MirroredStrategy`` over several local GPUs, else the default
    (single-device) strategy. When Keras runs on another backend than
    TensorFlow, always the default one: its ``scope`` changes nothing and its
    ``distribute_datasets_from_function`` returns the plain tf.data dataset.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = tf_config.get("cluster", {}).get("worker", [])
    if keras.backend.backend() != "tensorflow":
        if len(workers) > 1:
            raise ValueError(f"TF_CONFIG names {len(workers)} workers: multi-worker training needs "
                             f"KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
        return tf.distribute.get_strategy()
    if len(workers) > 1:
        return MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints, logs and the final model."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def synchronize_batch_norm(model: keras.Model, synchronized: bool) -> int:
    """Sets ``synchronized`` on every BatchNormalization layer (nested ones too); returns how many.

    With several replicas, batch statistics are then computed over the global
    batch, so every replica (and worker) keeps the same moving statistics, as
    synchronous data parallelism promises. The flag is TensorFlow-only, so
    ``train`` turns it off again before writing ``model.keras``, which then
    loads on every backend.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = synchronized
    return len(layers)
