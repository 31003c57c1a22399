"""Where the active-learning loop reads triplets from: labels in RAM, tiles one batch at a time.

A source has ``labels`` (N,) and ``batches(ids, batch_size, stain_sigma,
seed)``, which returns what Keras' ``fit``, ``evaluate`` and ``predict``
take: batches of ((2.5x, 10x, 40x) float32 in [0, 1], label), the ids in the
order given. ``common.slides.store.TripletPools`` streams them from TFRecord
shards through tf.data (any pool size, HED stain jitter); ``ArrayTriplets``
serves triplets already in RAM, keras-only (any backend, no jitter).
"""

from __future__ import annotations

import math

import keras
import numpy as np


class _ArrayBatches(keras.utils.PyDataset):
    """Float32 batches cut from uint8 arrays on demand: one batch in float at a time, not the whole set."""

    def __init__(self, tiles, labels, ids, batch_size: int):
        super().__init__()
        self.tiles, self.labels, self.ids, self.batch_size = tiles, labels, ids, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.ids) / self.batch_size)

    def __getitem__(self, index):
        ids = self.ids[index * self.batch_size:(index + 1) * self.batch_size]
        return tuple(np.asarray(t[ids], np.float32) / 255.0 for t in self.tiles), self.labels[ids]


class ArrayTriplets:
    """Triplets held in RAM: three uint8 arrays (N, T, T, 3) in 2.5x, 10x, 40x order and labels (N,).

    Example:

    >>> tiles = [np.zeros((4, 32, 32, 3), np.uint8)] * 3
    >>> x, y = ArrayTriplets(tiles, np.arange(4)).batches([3, 1], 2)[0]
    >>> (len(x), x[0].shape, y.tolist())
    (3, (2, 32, 32, 3), [3, 1])
    """

    def __init__(self, tiles, labels):
        self.tiles, self.labels = list(tiles), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, ids, batch_size: int, stain_sigma: float = 0.0, seed: int = 0) -> keras.utils.PyDataset:
        if stain_sigma:
            raise ValueError(f"stain_sigma {stain_sigma}: triplets in RAM are not stain-augmented; stream them "
                             "from a triplet folder (common.slides.triplets.load_pools) to jitter their stains")
        return _ArrayBatches(self.tiles, self.labels, np.asarray(ids, np.int64), batch_size)


def as_source(data):
    """``data`` itself if it streams (has ``batches``), else its ``tiles`` and ``labels`` as ``ArrayTriplets``."""
    if hasattr(data, "batches"):
        return data
    if not (hasattr(data, "tiles") and hasattr(data, "labels")):
        raise ValueError(f"data must have labels and batches (a TripletPools), or tiles and labels; got {data!r}")
    return ArrayTriplets(data.tiles, data.labels)
