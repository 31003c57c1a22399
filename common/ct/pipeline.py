"""tf.data input pipeline on prepared shards: interleave, decode, augment, batch, prefetch.

Everything after preparation is TensorFlow ops (no Python in the hot path).
Augmentation is seeded with stateless ops fed by ``Dataset.random``, so a
seed gives the same sequence of crops, flips and rotations, and each epoch a
new one.
"""

from __future__ import annotations

import tensorflow as tf

from common.ct.shards import parse_example

AUTOTUNE = tf.data.AUTOTUNE


def pad_to(image, label, size: int):
    """Pads (bottom/right) image and label to at least ``size`` x ``size``."""
    shape = tf.shape(label)
    pad_h, pad_w = tf.maximum(size - shape[0], 0), tf.maximum(size - shape[1], 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    label = tf.pad(label, [[0, pad_h], [0, pad_w]])
    return image, label


AUGMENTATIONS = ("none", "flip", "flip-rot")


def augment(image, label, seed, crop_size: int, augmentation: str = "flip-rot"):
    """Random crop, then horizontal/vertical flips ("flip") and a rotation by k * 90 degrees ("flip-rot").

    "none" keeps the anatomy where it is (only the crop moves), as the
    U-Transformer's positional encoding of a fixed layout needs.

    Args:
        image: (H, W, C) float32.
        label: (H, W) integer.
        seed: int64 tensor of shape (2,) for the stateless random ops.
        crop_size: side of the square crop.
        augmentation: one of ``AUGMENTATIONS``.
    """
    image, label = pad_to(image, label, crop_size)
    channels = tf.shape(image)[-1]
    stacked = tf.concat([image, tf.cast(label, image.dtype)[..., None]], axis=-1)
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    stacked = tf.image.stateless_random_crop(stacked, tf.stack([crop_size, crop_size, channels + 1]), seeds[0])
    if augmentation in ("flip", "flip-rot"):
        stacked = tf.image.stateless_random_flip_left_right(stacked, seeds[1])
        stacked = tf.image.stateless_random_flip_up_down(stacked, seeds[2])
    if augmentation == "flip-rot":
        k = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=4, dtype=tf.int32)
        stacked = tf.image.rot90(stacked, k)
    return stacked[..., :channels], tf.cast(tf.round(stacked[..., channels]), label.dtype)


def center_crop(image, label, crop_size: int):
    """Crops or pads (centred) to ``crop_size`` x ``crop_size``, for evaluation batches."""
    image = tf.image.resize_with_crop_or_pad(image, crop_size, crop_size)
    label = tf.image.resize_with_crop_or_pad(label[..., None], crop_size, crop_size)[..., 0]
    return image, label


def slice_dataset(shards, batch_size: int, crop_size: int, training: bool = True, seed: int = 0,
                  shuffle_buffer: int = 512, input_context: tf.distribute.InputContext | None = None,
                  augmentation: str = "flip-rot", outputs=None):
    """Builds the batched dataset of (image, label) slices from shard files.

    Args:
        shards: list of TFRecord paths (one per case).
        batch_size: per-replica batch size.
        crop_size: side of the square training crops (multiple of the model's stride).
        training: shuffle, augment and repeat forever (True) or centre-crop in file
            order, once (False).
        seed: seeds file order, shuffling and augmentation.
        shuffle_buffer: slices held for shuffling.
        input_context: under a multi-worker strategy, shards files across input pipelines.
        augmentation: "none", "flip" or "flip-rot" (see ``augment``); training only.
        outputs: the names of the model's supervised outputs (``model.output_names`` of a model with deep
            supervision): the labels are given to each, as a dict; None or one name: the labels alone.

    Returns:
        A ``tf.data.Dataset`` yielding (images (B, S, S, 1) float32, labels (B, S, S) uint8).
    """
    if not shards:
        raise ValueError("shards: no shard files given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    files = tf.data.Dataset.from_tensor_slices([str(s) for s in shards])
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(shards), 8),
        num_parallel_calls=AUTOTUNE, deterministic=True,
    )
    ds = ds.map(parse_example, num_parallel_calls=AUTOTUNE)
    if training:
        # Repeated: fit(steps_per_epoch=...) then sees whole epochs on every worker.
        ds = ds.repeat().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, randoms)).map(
            lambda example, s: augment(example[0], example[1], s, crop_size, augmentation),
            num_parallel_calls=AUTOTUNE
        )
    else:
        ds = ds.map(lambda x, y: center_crop(x, y, crop_size), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    if outputs is not None and len(outputs) > 1:
        ds = ds.map(lambda images, labels: (images, {name: labels for name in outputs}), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
