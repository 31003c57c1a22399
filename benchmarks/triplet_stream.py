"""Peak memory of TRI-AL's streamed triplets: one training epoch and one scoring pass over pools of growing size.

For each pool size, synthetic triplets of ``--size`` px tiles are written as
`zoo triplets` writes them (PNG tiles in one TFRecord shard per 500, the
paper's most per slide) to a temporary folder; then a fresh process opens
them with ``triplets.load_pools``, trains a tiny TRI-CNN for one epoch on
every triplet (``active_learning.train``, validation on 1%) and scores every
triplet once (``active_learning.predict`` and the entropy, as ENT does), and
reports its peak resident memory. The folder is deleted after each size.
``in_ram_gib`` is what the same pool took in RAM before streaming (uint8,
before the float32 copies of each epoch).
"""

from __future__ import annotations

import json
import pathlib
import resource
import shutil
import tempfile
import time

import numpy as np

from benchmarks.timing import in_fresh_process

PER_SHARD = 500  # triplets per shard: the paper's most per slide
BASE_FILTERS, HEAD = 1, 8  # a TRI-CNN small enough for a CPU to see 200k triplets in minutes


def _shard_arrays(rng, count: int, tile: int, classes: int) -> dict:
    """Smooth colour fields (3x3 random colours, bilinear), unique per tile: PNG takes them ~4x smaller than raw."""
    import cv2

    from common.slides import store

    def tiles():
        low = rng.uniform(120, 240, (count, 3, 3, 3)).astype(np.float32)
        return np.stack([cv2.resize(t, (tile, tile), interpolation=cv2.INTER_LINEAR) for t in low]).astype(np.uint8)

    return {**{name: tiles() for name in store.SHARD_KEYS}, "label": rng.integers(0, classes, count),
            "point": np.zeros((count, 2), np.float32)}


def write_pool(folder: str, count: int, tile: int, seed: int = 0) -> float:
    """Writes ``count`` synthetic triplets and a triplet manifest to ``folder``; returns the shards' GiB."""
    from common import atomic
    from common.slides import store, triplets
    from common.slides.annotations import CLASSES

    folder, rng, slides = pathlib.Path(folder), np.random.default_rng(seed), {}
    for index, start in enumerate(range(0, count, PER_SHARD)):
        arrays = _shard_arrays(rng, min(PER_SHARD, count - start), tile, len(CLASSES))
        store.write_shard(folder / "shards" / f"slide_{index:04d}{store.SHARD_SUFFIX}", arrays)
        counts = np.bincount(arrays["label"], minlength=len(CLASSES)).tolist()
        slides[f"slide_{index:04d}"] = {"lab": "B", "counts": counts}
    atomic.write_json(folder / triplets.MANIFEST, {"format": store.FORMAT, "classes": list(CLASSES),
                                                   "tile_size": tile, "slides": slides})
    return sum(p.stat().st_size for p in (folder / "shards").iterdir()) / 2**30


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stream_pool(folder: str, tile: int, batch: int) -> dict:
    """In a fresh process: one training epoch and one scoring pass over every triplet; peak RSS at each step."""
    import tri_al
    from common.slides import triplets
    from tri_al import active_learning as al

    pools = triplets.load_pools(folder)
    model = tri_al.build_model(tile_size=tile, base_filters=BASE_FILTERS, head_units=HEAD)
    ids = np.arange(len(pools))
    figures = {"rss_before_streaming_mib": round(_peak_mib(), 1)}
    start = time.perf_counter()
    al.train(model, pools, ids, ids[::100], al.TrainConfig(batch_size=batch, epochs=1), seed=0)
    figures["train_triplets_per_s"] = round(len(ids) / (time.perf_counter() - start), 1)
    figures["rss_after_training_mib"] = round(_peak_mib(), 1)
    start = time.perf_counter()
    entropy = al.entropy(al.predict(model, pools, ids))
    figures["score_triplets_per_s"] = round(len(ids) / (time.perf_counter() - start), 1)
    assert len(entropy) == len(ids)
    return {**figures, "peak_rss_mib": round(_peak_mib(), 1)}


def triplet_stream(args, emit) -> None:
    """Each size: write the pool, stream it in a fresh process, emit its peak memory, delete the pool."""
    for count in sizes(args.sizes):
        folder = tempfile.mkdtemp(prefix="zoo-bench-triplets-")
        try:
            needed = count * 3 * args.size ** 2 * 3 / 2  # half the raw size: twice these PNGs'
            if shutil.disk_usage(folder).free < needed:
                raise OSError(f"{folder}: under {needed / 2**30:.1f} GiB free for {count} triplets")
            start = time.perf_counter()
            disk = in_fresh_process(write_pool, folder, count, args.size)
            written = time.perf_counter() - start
            figures = in_fresh_process(stream_pool, folder, args.size, args.batch)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        emit(benchmark="triplet-stream", triplets=count, tile=args.size, base_filters=BASE_FILTERS, head_units=HEAD,
             batch=args.batch, **figures, disk_gib=round(disk, 2), write_s=round(written, 1),
             in_ram_gib=round(count * 3 * args.size ** 2 * 3 / 2**30, 2))


def sizes(text: str) -> tuple[int, ...]:
    """``--sizes 10000,50000``: pool sizes, positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"--sizes: expected positive pool sizes, comma-separated, got {json.dumps(text)}")
    return values
