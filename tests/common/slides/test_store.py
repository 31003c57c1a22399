"""TFRecord triplet shards: lossless round trip, triplets streamed by id in any order, damaged shards named."""

import numpy as np
import pytest
import tensorflow as tf

from common.errors import DataError
from common.slides import stain, store

TILE = 16
COUNTS = {"s0": 5, "s1": 0, "s2": 7}  # an empty slide in the middle: its ids are none


def _arrays(rng, count):
    arrays = {name: rng.integers(0, 256, (count, TILE, TILE, 3), dtype=np.uint8) for name in store.SHARD_KEYS}
    return {**arrays, "label": rng.integers(0, 5, count), "point": rng.uniform(0, 9000, (count, 2))}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    written = {slide: _arrays(rng, count) for slide, count in COUNTS.items()}
    for slide, arrays in written.items():
        store.write_shard(folder / f"{slide}{store.SHARD_SUFFIX}", arrays)
    joined = {key: np.concatenate([a[key] for a in written.values()]) for key in written["s0"]}
    return folder, written, joined


def test_a_shard_is_a_tfrecord_and_reads_back_bit_for_bit(shards):
    folder, written, _ = shards
    for slide, arrays in written.items():
        path = folder / f"{slide}.tfrecord"
        assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == COUNTS[slide]  # any TFRecord reader
        back = store.read_shard(path)
        for key in store.SHARD_KEYS:
            np.testing.assert_array_equal(back[key], arrays[key])  # PNG: lossless
            assert back[key].dtype == np.uint8
        np.testing.assert_array_equal(back["label"], arrays["label"])
        np.testing.assert_allclose(back["point"], arrays["point"], rtol=1e-6)


def test_pools_stream_any_ids_in_the_order_asked(shards):
    folder, _, joined = shards
    pools = store.open_pools(folder, list(COUNTS), TILE)
    assert len(pools) == 12 and pools.slide_ids.tolist() == ["s0"] * 5 + ["s2"] * 7
    np.testing.assert_array_equal(pools.labels, joined["label"])
    ids = np.random.default_rng(1).permutation(12)[:10]
    batches = list(pools.batches(ids, 4).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = [np.concatenate([b[0][k] for b in batches]) for k in range(3)]
    for k, key in enumerate(store.SHARD_KEYS):
        assert x[k].dtype == np.float32
        np.testing.assert_array_equal(x[k], joined[key][ids].astype(np.float32) / 255.0)  # as the model is fed
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), joined["label"][ids])
    np.testing.assert_array_equal(pools.read(ids[:3])[2], joined["tile_40x"][ids[:3]])
    assert pools.batches(ids, 4).cardinality() == 3  # Keras knows the steps of an epoch


def test_stain_jitter_in_the_stream_is_one_draw_per_triplet_and_per_seed(tmp_path):
    rng = np.random.default_rng(2)
    arrays = _arrays(rng, 4)
    for key in store.SHARD_KEYS[1:]:
        arrays[key] = arrays["tile_2_5x"]  # three equal tiles: equal after the same jitter
    store.write_shard(tmp_path / "t.tfrecord", arrays)
    pools = store.open_pools(tmp_path, ["t"], TILE)
    (x, _), = pools.batches(range(4), 4, stain_sigma=0.05, seed=9).as_numpy_iterator()
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])
    plain = arrays["tile_2_5x"].astype(np.float32) / 255.0
    assert 1e-3 < np.abs(x[0] - plain).mean() < 0.1
    expected = stain.hed_jitter((tf.constant(plain[1]),), 0.05, tf.constant([9, 1], tf.int64))[0]
    np.testing.assert_allclose(x[0][1], expected, atol=1e-6)  # triplet 1's draw: seed (9, its id)
    (again, _), = pools.batches(range(4), 4, stain_sigma=0.05, seed=9).as_numpy_iterator()
    (other, _), = pools.batches(range(4), 4, stain_sigma=0.05, seed=10).as_numpy_iterator()
    np.testing.assert_array_equal(again[0], x[0])
    assert np.abs(other[0] - x[0]).max() > 1e-3


def test_a_damaged_or_missing_shard_is_named(shards, tmp_path):
    folder, written, _ = shards
    store.write_shard(tmp_path / "cut.tfrecord", written["s0"])
    data = (tmp_path / "cut.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"cut.tfrecord: \d+ bytes, its index cut.index.npz says \d+; delete both"):
        store.open_pools(tmp_path, ["cut"], TILE)
    (tmp_path / "cut.tfrecord").unlink()
    with pytest.raises(DataError, match=r"cut.tfrecord: missing"):
        store.open_pools(tmp_path, ["cut"], TILE)
    with pytest.raises(DataError, match=r"gone.index.npz: not a readable shard index"):
        store.open_pools(tmp_path, ["gone"], TILE)


@pytest.mark.parametrize("ids, batch_size, sigma, argument", [
    ([0, 12], 4, 0.0, "ids"), ([-1], 4, 0.0, "ids"), ([[0, 1]], 4, 0.0, "ids"), ([0], 0, 0.0, "batch_size"),
    ([0], 4, -0.1, "stain_sigma"),
])
def test_bad_stream_arguments(shards, ids, batch_size, sigma, argument):
    pools = store.open_pools(shards[0], list(COUNTS), TILE)
    with pytest.raises(ValueError, match=argument):
        pools.batches(ids, batch_size, stain_sigma=sigma)


def test_notes_of_skipped_and_repaired_annotations_travel_with_the_index(tmp_path):
    arrays = _arrays(np.random.default_rng(1), 2)
    store.write_shard(tmp_path / "noted.tfrecord", {**arrays, "skipped": {"degenerate": 2}, "repaired": 1})
    assert store.read_notes(tmp_path / "noted.tfrecord") == {"skipped": {"degenerate": 2}, "repaired": 1}
    store.write_shard(tmp_path / "plain.tfrecord", arrays)
    assert store.read_notes(tmp_path / "plain.tfrecord") == {"skipped": {}, "repaired": 0}
    with np.load(store.index_path(tmp_path / "plain.tfrecord")) as index:  # an index of before the notes
        np.savez(store.index_path(tmp_path / "old.tfrecord"), **{k: index[k] for k in index.files if k != "notes"})
    assert store.read_notes(tmp_path / "old.tfrecord") == {"skipped": {}, "repaired": 0}
