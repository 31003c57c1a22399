"""Triplet shards as TFRecords of PNG tiles, and the tf.data stream that reads triplets by id.

A triplet folder (``common.slides.triplets``) holds, per slide::

    shards/<slide>.tfrecord    one tf.train.Example per triplet: tile_2_5x, tile_10x, tile_40x (PNG), label, point
    shards/<slide>.index.npz   label (N,), point (N, 2), each record's byte offset and length, tile size, and
                               notes (what the slide's annotations had skipped and repaired); written after the
                               shard, so it marks the shard complete

Tiles are PNG, lossless: a streamed triplet is the extracted array bit for
bit, so a study's numbers do not depend on the storage (JPEG would be
smaller and change every number). ``TripletPools`` keeps only labels, owners
and record offsets in RAM (~70 bytes a triplet, against 147 KB of 128 px
tiles); its ``batches`` stream any ids in any order through tf.data, so the
active-learning loop's random draws and per-epoch permutations read only
what they use, and peak memory does not grow with the pool.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib

import cv2
import numpy as np
import tensorflow as tf

from common import atomic
from common.errors import DataError
from common.slides import stain

FORMAT = "tfrecord-png-1"  # the manifest's "format"; older folders (.npz shards) have none
SHARD_KEYS = ("tile_2_5x", "tile_10x", "tile_40x")  # a triplet's tiles, in MAGNIFICATIONS order
SHARD_SUFFIX = ".tfrecord"
# TFRecord framing (tensorflow/core/lib/io/record_writer.cc): length (uint64) and its CRC (uint32) before the
# data, the data's CRC (uint32) after. TFRecordWriter does not say where a record starts, so it is counted here.
HEADER, FOOTER = 12, 4
MAX_OPEN = 64  # shard files a stream keeps open at once


def index_path(shard) -> pathlib.Path:
    """Where a shard's index is: ``<slide>.index.npz`` beside ``<slide>.tfrecord``."""
    shard = pathlib.Path(shard)
    return shard.with_name(shard.name.removesuffix(SHARD_SUFFIX) + ".index.npz")


def _png(tile: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))  # OpenCV: 4-8x faster than TF's
    if not ok:
        raise ValueError(f"a tile of shape {tile.shape} cannot be encoded as PNG")
    return encoded.tobytes()


def _example(tiles, label: int, point) -> bytes:
    feature = {name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(tile)]))
               for name, tile in zip(SHARD_KEYS, tiles)}
    feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    feature["point"] = tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(point, np.float32)))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path, arrays: dict) -> None:
    """Writes one slide's triplets (``extract_slide``'s arrays) as a TFRecord shard, then its index, atomically.

    Args:
        path: ``<slide>.tfrecord``; the index goes to ``index_path(path)``.
        arrays: ``tile_2_5x``, ``tile_10x``, ``tile_40x`` (N, T, T, 3) uint8, ``label`` (N,), ``point`` (N, 2);
            optionally ``skipped`` ({reason: count}) and ``repaired`` (a count), kept as the index's notes so
            that a rerun, which does not read the slide again, still reports them (``read_notes``).
    """
    path = pathlib.Path(path)
    count = len(arrays["label"])
    offsets, lengths, position = np.zeros(count, np.int64), np.zeros(count, np.int64), 0
    with atomic.atomic_path(path) as tmp:
        try:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in range(count):
                    record = _example([arrays[name][i] for name in SHARD_KEYS], arrays["label"][i], arrays["point"][i])
                    writer.write(record)
                    offsets[i], lengths[i] = position + HEADER, len(record)
                    position += HEADER + len(record) + FOOTER
        except tf.errors.OpError as error:  # TensorFlow's, not an OSError: "<tmp path>; File too large"
            raise OSError(errno.EIO, error.message.rpartition("; ")[2] or error.message) from None
        if os.path.getsize(tmp) != position:  # the framing above is TensorFlow's; a change must not go unseen
            raise OSError(f"{path}: TFRecord framing is not {HEADER}+data+{FOOTER} bytes a record")
    notes = {"skipped": dict(arrays.get("skipped", {})), "repaired": int(arrays.get("repaired", 0))}
    with atomic.atomic_path(index_path(path)) as tmp:
        np.savez(tmp, label=np.asarray(arrays["label"], np.int64), point=np.asarray(arrays["point"], np.float32),
                 offset=offsets, length=lengths, tile_size=np.int64(arrays[SHARD_KEYS[-1]].shape[1]),
                 notes=np.array(json.dumps(notes)))


def read_index(path) -> dict[str, np.ndarray]:
    """A shard's index (label, point, offset, length, tile_size), checked against the shard's size."""
    path, index = pathlib.Path(path), index_path(path)
    try:
        with np.load(index) as stored:
            entries = {key: stored[key] for key in ("label", "point", "offset", "length", "tile_size")}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{index}: not a readable shard index ({error}); rerun `zoo triplets`") from None
    end = int(entries["offset"][-1] + entries["length"][-1] + FOOTER) if len(entries["offset"]) else 0
    size = path.stat().st_size if path.exists() else None
    if size != end:
        raise DataError(f"{path}: {'missing' if size is None else f'{size} bytes'}, its index {index.name} says "
                        f"{end}; delete both and rerun `zoo triplets`")
    return entries


def read_notes(path) -> dict:
    """What a shard's slide had skipped and repaired: ``{"skipped": {reason: count}, "repaired": count}``.

    An index written before the notes existed gives ``{"skipped": {}, "repaired": 0}``.
    """
    index = index_path(path)
    try:
        with np.load(index) as stored:
            notes = json.loads(str(stored["notes"])) if "notes" in stored.files else {}
    except (OSError, ValueError) as error:
        raise DataError(f"{index}: not a readable shard index ({error}); rerun `zoo triplets`") from None
    return {"skipped": notes.get("skipped", {}), "repaired": notes.get("repaired", 0)}


def _parse(record, tile_size: int):
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in SHARD_KEYS}
    features = tf.io.parse_single_example(record, spec)
    return tuple(tf.ensure_shape(tf.io.decode_png(features[name], channels=3), (tile_size, tile_size, 3))
                 for name in SHARD_KEYS)


def read_shard(path) -> dict[str, np.ndarray]:
    """A whole shard back as ``extract_slide``'s arrays (one slide: for checks and small tools, not training)."""
    index = read_index(path)
    size = int(index["tile_size"])
    tiles = [[] for _ in SHARD_KEYS]
    for record in tf.data.TFRecordDataset(str(path)):
        for column, tile in zip(tiles, _parse(record, size)):
            column.append(tile.numpy())
    return {**{name: np.stack(column) if column else np.zeros((0, size, size, 3), np.uint8)
               for name, column in zip(SHARD_KEYS, tiles)}, "label": index["label"], "point": index["point"]}


@dataclasses.dataclass
class TripletPools:
    """The triplets of several slides, ids in slide order: labels and owners in RAM, tiles read when streamed."""

    labels: np.ndarray  # (N,) int64
    slide_ids: np.ndarray  # (N,) the slide each triplet comes from
    files: list  # shard paths
    shard: np.ndarray  # (N,) index into files
    offset: np.ndarray  # (N,) byte where the record's data starts
    length: np.ndarray  # (N,) its length
    sizes: np.ndarray  # (len(files),) the shards' sizes
    tile_size: int

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, ids, batch_size: int, stain_sigma: float = 0.0, seed: int = 0) -> tf.data.Dataset:
        """``triplet_dataset`` of these pools: ((2.5x, 10x, 40x) float32 in [0, 1], label) batches of ``ids``."""
        return triplet_dataset(self, ids, batch_size, stain_sigma, seed)

    def read(self, ids) -> list[np.ndarray]:
        """The tiles of a few ids as three uint8 arrays (N, T, T, 3), in SHARD_KEYS order."""
        tiles = _records(self, ids).map(lambda raw, label, index: _parse(raw, self.tile_size))
        columns = list(zip(*tiles.as_numpy_iterator())) or [[]] * len(SHARD_KEYS)
        return [np.stack(c) if len(c) else np.zeros((0, self.tile_size, self.tile_size, 3), np.uint8)
                for c in columns]


def open_pools(folder, slide_ids, tile_size: int) -> TripletPools:
    """The pools of ``slide_ids`` (in that order) from the shards of ``folder``; reads only their indexes."""
    files, parts = [], []
    for slide_id in slide_ids:
        shard = pathlib.Path(folder) / f"{slide_id}{SHARD_SUFFIX}"
        files.append(str(shard))
        parts.append(read_index(shard))
    counts = [len(p["label"]) for p in parts]

    def join(key, dtype):
        return np.concatenate([p[key] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    return TripletPools(labels=join("label", np.int64),
                        slide_ids=np.concatenate([np.full(n, s) for s, n in zip(slide_ids, counts)] or [[]]),
                        files=files, shard=np.repeat(np.arange(len(files), dtype=np.int64), counts),
                        offset=join("offset", np.int64), length=join("length", np.int64),
                        sizes=np.array([os.path.getsize(f) for f in files], np.int64), tile_size=tile_size)


def triplet_dataset(pools: TripletPools, ids, batch_size: int, stain_sigma: float = 0.0,
                    seed: int = 0) -> tf.data.Dataset:
    """Streams the triplets ``ids`` of ``pools`` in that order: batches of ((2.5x, 10x, 40x), label).

    Tiles are float32 in [0, 1] (uint8 / 255, as the model is fed). With
    ``stain_sigma`` > 0 each triplet gets its own ``stain.hed_jitter``, drawn
    from (``seed``, id): the same seed, the same colours.

    Args:
        pools: ``open_pools``' pools.
        ids: the triplets (indexes into ``pools``), in the order wanted.
        batch_size: triplets per batch (the last may be smaller).
        stain_sigma: HED jitter size, 0 for none.
        seed: the jitter's seed (an epoch's); unused without jitter.
    """
    if batch_size < 1 or not stain_sigma >= 0:
        raise ValueError(f"batch_size must be >= 1 and stain_sigma >= 0, got {batch_size} and {stain_sigma}")

    def decode(raw, label, index):
        tiles = tuple(tf.cast(t, tf.float32) / 255.0 for t in _parse(raw, pools.tile_size))
        if stain_sigma > 0:
            tiles = stain.hed_jitter(tiles, stain_sigma, tf.stack([tf.constant(seed, tf.int64), index]))
        return tiles, label

    return _records(pools, ids).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .batch(batch_size).prefetch(2)


def _records(pools: TripletPools, ids) -> tf.data.Dataset:
    """The serialized records of ``ids``, in that order, with their labels and ids."""
    ids = np.asarray(ids, np.int64)
    if ids.ndim != 1 or (len(ids) and not 0 <= ids.min() <= ids.max() < len(pools)):
        raise ValueError(f"ids must be a list of triplet indexes in [0, {len(pools)}), got {ids!r}")

    def read():
        # tf.data reads TFRecords only from the start (FixedLengthRecordDataset's header_bytes reads through
        # the bytes before too), so a record is read at its offset here; PNG's chunk CRCs catch a damaged tile.
        files = {}
        try:
            for i in ids:
                shard = pools.shard[i]
                if shard not in files:
                    if len(files) >= MAX_OPEN:
                        files.pop(next(iter(files))).close()
                    files[shard] = open(pools.files[shard], "rb")
                files[shard].seek(pools.offset[i])
                yield files[shard].read(pools.length[i]), pools.labels[i], i
        finally:
            for handle in files.values():
                handle.close()

    spec = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
    records = tf.data.Dataset.from_generator(read, output_signature=spec)
    return records.apply(tf.data.experimental.assert_cardinality(len(ids)))
