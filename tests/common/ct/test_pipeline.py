import numpy as np
import pytest
import tensorflow as tf

from common.ct import pipeline, shards


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_batches_shapes_and_dtypes(tiny_prepared):
    files = [c["shard"] for c in shards.load_manifest(tiny_prepared)["cases"]]
    x, y = _batches(pipeline.slice_dataset(files, batch_size=4, crop_size=32, seed=0), 1)[0]
    assert x.shape == (4, 32, 32, 1) and x.dtype == np.float32
    assert y.shape == (4, 32, 32) and y.dtype == np.uint8
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_seeded_and_different_per_seed(tiny_prepared):
    files = [c["shard"] for c in shards.load_manifest(tiny_prepared)["cases"]]
    a = _batches(pipeline.slice_dataset(files, 4, 32, seed=3), 3)
    b = _batches(pipeline.slice_dataset(files, 4, 32, seed=3), 3)
    c = _batches(pipeline.slice_dataset(files, 4, 32, seed=4), 3)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_augment_moves_image_and_label_together():
    # A label that is a function of the image must stay that function after augmentation.
    image = tf.constant(np.random.default_rng(0).random((40, 24, 1)), tf.float32)
    label = tf.cast(image[..., 0] > 0.5, tf.uint8)
    for s in range(8):
        x, y = pipeline.augment(image, label, tf.constant([s, 7], tf.int64), crop_size=32)
        assert x.shape == (32, 32, 1) and y.shape == (32, 32)
        np.testing.assert_array_equal(y.numpy(), (x.numpy()[..., 0] > 0.5).astype(np.uint8))


def test_rotations_and_flips_all_occur():
    image = tf.reshape(tf.range(16, dtype=tf.float32), (4, 4, 1))
    seen = set()
    for s in range(64):
        x, _ = pipeline.augment(image, tf.zeros((4, 4), tf.uint8), tf.constant([s, 0], tf.int64), crop_size=4)
        seen.add(x.numpy().tobytes())
    assert len(seen) == 8  # the dihedral group of the square


def test_evaluation_mode_is_ordered_and_centre_cropped(tiny_prepared):
    files = [c["shard"] for c in shards.load_manifest(tiny_prepared)["cases"]][:1]
    full = [shards.parse_example(r) for r in tf.data.TFRecordDataset(files[0])]
    x, y = _batches(pipeline.slice_dataset(files, 2, 32, training=False), 1)[0]
    np.testing.assert_array_equal(x[0, ..., 0], full[0][0].numpy()[16:48, 16:48, 0])
    np.testing.assert_array_equal(y[1], full[1][1].numpy()[16:48, 16:48])


def test_bad_arguments():
    with pytest.raises(ValueError, match="shards"):
        pipeline.slice_dataset([], 2, 32)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.slice_dataset(["a.tfrecord"], 0, 32)
