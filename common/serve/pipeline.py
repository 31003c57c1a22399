"""One SavedModel from a raw CT volume to its labels: ``zoo predict``'s inference as a TensorFlow graph.

``zoo export MODEL BASE_DIR --pipeline`` (``export_pipeline``) writes a version
(``common.serve.export.write_version``: atomic, warm-up request, model card,
models.config) whose signatures take a whole volume:

=====================  =================================================================
``serving_default``    ``volume`` float32 ``[z, y, x]`` in HU and ``spacing`` float64
                       ``[3]`` (x, y, z mm) -> ``labels`` uint8 ``[z, y, x]``, and
                       ``probabilities`` float32 ``[z, y, x, C]`` if exported with them
``serving_int16``      the same for an int16 ``volume`` (cast to float32 chunk by chunk, exactly)
=====================  =================================================================

The volume is the array of the canonical orientation of ``common.ct.volumes``
(LPS: ``sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))``, x toward the
patient's left, y posterior, z superior) and ``spacing`` that image's
``GetSpacing()``; the labels come back on that grid. Reorienting, both ways, is
the client's. Inside the graph, the arithmetic of
``common.ct.inference.predict_volume`` in the same order: the HU window; each
slice padded and cut into tiles (``common.ct.sliding``: Gaussian weights and
coverage, tile starts computed from the slice size in float64 as
``tile_starts``); each tile predicted as it is and flipped (mirroring), the
flips averaged; the weighted sum over tiles divided by the coverage; the folds'
mean; the argmax; and, if asked, ``common.ct.postprocess``'s largest-component
rule (``largest_component``). The fold models' weights are all in the one
SavedModel.

Memory: the slices go through in chunks of ``--batch-size`` (a ``tf.while_loop``) and each chunk
writes only its uint8 labels into the output, so a request's peak is one chunk's work plus the
input and the outputs (1 byte a voxel; 4 per class more with ``--probabilities``), not the ~80
bytes a voxel of a whole-volume float32 pass (``python -m benchmarks pipeline-memory``). The
largest-component rule, when exported, works on the whole label volume (int32 numbers, 4 bytes
a voxel, a few times over).

Not in the graph: ``--spacing auto``. SimpleITK's resampling (``zoo predict``)
decides per sample between linear interpolation and nearest-neighbour
extrapolation from positions computed from the image's origin and direction in
double precision, which a graph given the spacing alone cannot reproduce exactly
at the volume's edges; the export refuses it (``check_options``). ``spacing`` is
checked (three positive, finite values) and otherwise unused, so a client sends
the same request to every export.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.ct import inference, sliding, volumes
from common.serve import card, export

SIGNATURE_INT16 = "serving_int16"
LABEL_DTYPE = tf.uint8  # as `zoo predict`'s label volumes; up to 256 classes
WARMUP_SHAPE = (2, 64, 64)  # a small raw volume: two 64x64 slices
SPACING_REFUSED = ("spacing: 'auto' is not exported as a pipeline: SimpleITK's resampling (zoo predict) picks linear "
                   "interpolation or nearest-neighbour extrapolation per sample from the image's origin and direction "
                   "in double precision, which the graph does not get, so the two could differ at the volume's edges; "
                   "resample the volume to the card's training_spacing before the request")


def check_options(options: inference.InferenceOptions, models) -> None:
    """Raises ValueError naming what the pipeline cannot hold: resampling, or more than 256 classes."""
    options.validate()
    if options.spacing is not None:
        raise ValueError(SPACING_REFUSED)
    classes = {num_classes(model) for model in models}
    if len(classes) != 1 or max(classes) > 256:
        raise ValueError(f"model: the folds give {sorted(classes)} classes; a pipeline needs one count, <= 256")


def num_classes(model) -> int:
    """The channels of the model's (first) output: its classes."""
    shape = model.output_shape
    return int((shape[0] if isinstance(shape, list) else shape)[-1])


def window(hu, hu_window):
    """``common.ct.volumes.window`` in float32 ops: clip to the window, then scale to [0, 1]."""
    low, high = float(hu_window[0]), float(hu_window[1])
    return (tf.clip_by_value(hu, np.float32(low), np.float32(high)) - np.float32(low)) / np.float32(high - low)


def tile_starts(size, tile: int, step: float):
    """``common.ct.sliding.tile_starts`` for a dynamic ``size >= tile``: the same float64 arithmetic, int32 out."""
    extent = tf.cast(size - tile, tf.float64)
    count = tf.cast(tf.math.ceil(extent / (step * tile)), tf.int32) + 1
    spacing = extent / tf.cast(tf.maximum(count - 1, 1), tf.float64)  # one tile: its only start is 0
    return tf.cast(tf.round(tf.cast(tf.range(count), tf.float64) * spacing), tf.int32)  # half to even, as round()


def _mirrored(model, tiles, mirrors):
    """``sliding.predict_tiles``: the mean of the model's probabilities over the flips, each flipped back."""
    total = None
    for axes in mirrors:
        flipped = tf.reverse(tiles, list(axes)) if axes else tiles
        outputs = model(flipped[..., None], training=False)
        probabilities = tf.cast(outputs[0] if isinstance(outputs, (list, tuple)) else outputs, tf.float32)
        probabilities = tf.reverse(probabilities, list(axes)) if axes else probabilities
        total = probabilities if total is None else total + probabilities
    return total / np.float32(len(mirrors))


def _place(values, y, x, height, width):
    """A (b, h, w[, C]) block at (y, x) of a zero (b, height, width[, C]) canvas: zero padding, or a tile's place
    in a sum (adding 0 elsewhere is exact)."""
    shape = tf.shape(values)
    paddings = [[0, 0], [y, height - y - shape[1]], [x, width - x - shape[2]]] + [[0, 0]] * (values.shape.rank - 3)
    return tf.pad(values, paddings)


class SlicePredictor:
    """``sliding.predict_slice_probabilities`` for one model, as graph ops on a windowed (z, y, x) volume.

    Args:
        model: maps (B, h, w, 1) images to (B, h, w, C) probabilities.
        options: the tile, step and mirroring (``InferenceOptions``).
        stride: the model's total stride (whole slices are padded to a multiple of it).
    """

    def __init__(self, model, options: inference.InferenceOptions, stride: int):
        self.model, self.stride, self.classes = model, stride, num_classes(model)
        self.mirrors = sliding.MIRRORS[options.tta]
        self.fixed = tuple(model.input_shape[1:3]) if model.input_shape[1] is not None else None
        self.tile, self.step = options.tile, options.step
        if self.tile is not None:
            sliding.check_tile(model, self.tile, stride)
            self.weights = tf.constant(sliding.gaussian_importance(self.tile))

    def grid(self, height, width):
        """(padded height, padded width, tile starts (n, 2) y-major, coverage) of a height x width slice."""
        tile_h, tile_w = self.tile
        size_h, size_w = tf.maximum(height, tile_h), tf.maximum(width, tile_w)
        ys, xs = tile_starts(size_h, tile_h, self.step), tile_starts(size_w, tile_w, self.step)
        starts = tf.reshape(tf.stack(tf.meshgrid(ys, xs, indexing="ij"), axis=-1), (-1, 2))
        coverage = tf.zeros((1, size_h, size_w))
        for_each = tf.range(tf.shape(starts)[0])
        coverage = tf.foldl(lambda total, t: total + _place(self.weights[None], starts[t, 0], starts[t, 1],
                                                            size_h, size_w), for_each, coverage)
        return size_h, size_w, starts, coverage[0]

    def whole_slices(self, chunk):
        """Each slice as one tile: padded to the stride (or the model's fixed size, which it must have)."""
        height, width = tf.shape(chunk)[1], tf.shape(chunk)[2]
        if self.fixed is not None:
            tf.debugging.assert_equal(tf.stack([height, width]), tf.constant(self.fixed, tf.int32),
                                      message=f"volume: slices must be {self.fixed[0]}x{self.fixed[1]}, as the model "
                                              "takes inputs of that size only")
            return _mirrored(self.model, chunk, self.mirrors)
        padded = _place(chunk, 0, 0, height + (-height) % self.stride, width + (-width) % self.stride)
        return _mirrored(self.model, padded, self.mirrors)[:, :height, :width]

    def tiled(self, chunk, size_h, size_w, starts, coverage):
        """The Gaussian-weighted sum over tiles, divided by the coverage, cropped back to the slices."""
        height, width = tf.shape(chunk)[1], tf.shape(chunk)[2]
        padded = _place(chunk, 0, 0, size_h, size_w)
        tile_h, tile_w = self.tile

        def add_tile(total, t):
            y, x = starts[t, 0], starts[t, 1]
            tiles = tf.slice(padded, tf.stack([0, y, x]), [-1, tile_h, tile_w])
            weighted = _mirrored(self.model, tiles, self.mirrors) * self.weights[..., None]
            return total + _place(weighted, y, x, size_h, size_w)

        total = tf.zeros(tf.stack([tf.shape(chunk)[0], size_h, size_w, self.classes]))
        total = tf.foldl(add_tile, tf.range(tf.shape(starts)[0]), total, parallel_iterations=1)
        return (total / coverage[..., None])[:, :height, :width]


def _face_minimum(number, background):
    """The smallest of each voxel's number and its six face neighbours' (``background`` beyond the volume)."""
    padded = tf.pad(number, [[1, 1]] * 3, constant_values=background)
    depth, height, width = tf.unstack(tf.shape(number))
    smallest = number
    for dz, dy, dx in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)):
        smallest = tf.minimum(smallest, tf.slice(padded, [1 + dz, 1 + dy, 1 + dx], tf.stack([depth, height, width])))
    return smallest


def largest_component(labels, label: int):
    """``labels`` with class ``label`` reduced to its largest face-connected 3D component (the rest to 0).

    ``common.ct.postprocess.keep_largest_component`` in graph ops. Each voxel of the class starts
    numbered by its C-order index; each pass takes the smallest number among itself, its face
    neighbours of the class and the number its number points to (pointer jumping), until nothing
    changes: each component ends numbered by its first voxel in C order. ``scipy.ndimage.label``
    numbers components in that same order, and ``np.argmax`` keeps the first of equal sizes, so
    here the smallest number among the largest components is kept.
    """
    mask = tf.equal(labels, label)
    size = tf.size(labels)
    background = size  # above every voxel's number
    start = tf.where(mask, tf.reshape(tf.range(size), tf.shape(labels)), background)

    def spread(number, _):
        smallest = tf.where(mask, _face_minimum(number, background), background)
        flat = tf.concat([tf.reshape(smallest, [-1]), [background]], 0)
        new = tf.minimum(smallest, tf.gather(flat, smallest))  # a number always names a voxel of its component
        return new, tf.reduce_any(tf.not_equal(new, number))

    number, _ = tf.while_loop(lambda _, changed: changed, spread, (start, tf.constant(True)), parallel_iterations=1)
    components, _, sizes = tf.unique_with_counts(tf.boolean_mask(number, mask))
    keep = tf.reduce_min(tf.where(tf.equal(sizes, tf.reduce_max(sizes)), components, background))  # ties: first
    return tf.where(mask & tf.not_equal(number, keep), tf.zeros_like(labels), labels)


class VolumePipeline:
    """``zoo predict``'s inference of a canonical HU volume as graph ops (call inside a ``tf.function``).

    Slices go through the models a chunk of ``batch_size`` at a time (a ``tf.while_loop``), and each
    chunk leaves only its uint8 labels (and, if asked, its probabilities) in the output volumes, so
    the memory a request takes is one chunk's work plus its input and outputs, whatever the volume's
    depth; an int16 volume is cast to float32 chunk by chunk too. The chunks' arithmetic is the whole
    volume's: the argmax of a voxel sees only that voxel's probabilities.

    Args:
        models: the fold models (one for a run); their probabilities are averaged.
        options: tile, step, mirroring and post-processing (``InferenceOptions``; ``check_options``).
        hu_window: (low, high) HU mapped to [0, 1].
        stride: the models' total stride.
        batch_size: slices per forward pass and per chunk (``zoo predict --batch-size``).
        with_probabilities: also return the mean probabilities.
    """

    def __init__(self, models, options: inference.InferenceOptions, hu_window=volumes.DEFAULT_WINDOW,
                 stride: int = 16, batch_size: int = 8, with_probabilities: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch-size must be >= 1, got {batch_size}")
        check_options(options, models)
        self.models = [export.float32_twin(model) for model in models]  # serving is float32 (SPEC)
        self.predictors = [SlicePredictor(model, options, stride) for model in self.models]
        self.options, self.hu_window, self.batch_size = options, tuple(map(float, hu_window)), batch_size
        self.with_probabilities = with_probabilities
        grid = [tf.TensorSpec([], tf.int32)] * 2 + [tf.TensorSpec([None, 2], tf.int32),
                                                    tf.TensorSpec([None, None], tf.float32)]
        # One function for every chunk of either signature (float32, int16): the models are traced once.
        self.chunk_probabilities = tf.function(
            self._chunk_probabilities,
            input_signature=[tf.TensorSpec([None, None, None], tf.float32), *(grid if options.tile else [])])

    def _chunk_probabilities(self, chunk, *grid):
        """The folds' mean probabilities (b, y, x, C) of a windowed chunk, summed in the folds' order as
        ``inference.predict_probabilities`` sums them."""
        total = None
        for predictor in self.predictors:
            found = predictor.tiled(chunk, *grid) if grid else predictor.whole_slices(chunk)
            total = found if total is None else total + found
        return total / np.float32(len(self.predictors))

    def __call__(self, volume, spacing) -> dict:
        """{"labels": uint8 (z, y, x)[, "probabilities": float32 (z, y, x, C)]} of a (z, y, x) HU volume (float32
        or int16)."""
        checks = [tf.debugging.assert_positive(tf.shape(volume), message="volume: every axis needs a voxel"),
                  tf.debugging.assert_positive(spacing, message="spacing: (x, y, z) mm must be positive"),
                  tf.debugging.assert_all_finite(spacing, message="spacing: (x, y, z) mm must be finite")]
        with tf.control_dependencies(checks):
            volume = tf.identity(volume)
        depth, height, width = tf.unstack(tf.shape(volume))
        grid = self.predictors[0].grid(height, width) if self.options.tile else ()
        outputs = {"labels": tf.zeros(tf.shape(volume), LABEL_DTYPE)}
        if self.with_probabilities:
            outputs["probabilities"] = tf.zeros(tf.stack([depth, height, width, self.predictors[0].classes]))

        def predict_chunk(start, outputs):
            rows = tf.range(start, tf.minimum(start + self.batch_size, depth))
            chunk = tf.debugging.assert_all_finite(  # NaN would be labelled background, silently
                tf.cast(volume[start:start + self.batch_size], tf.float32),
                message="volume: NaN or infinite HU values; refused, nothing labelled")
            chunk = window(chunk, self.hu_window)
            probabilities = self.chunk_probabilities(chunk, *grid)
            found = {"labels": tf.cast(tf.argmax(probabilities, axis=-1), LABEL_DTYPE), "probabilities": probabilities}
            # InplaceUpdate writes the chunk's rows into the output it is given, in place while the loop holds the
            # only reference to it (as here): the output exists once. A TensorArray's concat held it twice.
            return start + self.batch_size, {name: tf.raw_ops.InplaceUpdate(x=output, i=rows, v=found[name])
                                             for name, output in outputs.items()}

        _, outputs = tf.while_loop(lambda start, _: start < depth, predict_chunk, (0, outputs), parallel_iterations=1)
        for label in self.options.postprocess or ():
            outputs["labels"] = largest_component(outputs["labels"], label)
        return outputs


def describe(pipeline: VolumePipeline, fold_names) -> dict:
    """The card's ``pipeline`` field: the request, the signatures and the inference inside the graph."""
    options = pipeline.options
    tile = list(options.tile) if options.tile else None
    flags = [f"--tile {tile[0]},{tile[1]}" if tile else "--tile whole", f"--step {options.step:g}",
             f"--tta {options.tta}", "--spacing none"] + (["--postprocess"] if options.postprocess is not None else [])
    return {
        "volume": "HU as a [z, y, x] array of the canonical orientation LPS (common.ct.volumes): "
                  "sitk.GetArrayFromImage(sitk.DICOMOrient(image, 'LPS')), x toward the patient's left, y posterior, "
                  "z superior; the client reorients the image before the request and the labels after it",
        "spacing": "[x, y, z] mm, GetSpacing() of that LPS image; checked (positive, finite), not used: the volume is "
                   "predicted at its own spacing (resample it to training_spacing first for zoo predict's "
                   "--spacing auto)",
        "signatures": {card.SIGNATURE: "volume float32", SIGNATURE_INT16: "volume int16, cast to float32"},
        "labels": f"{LABEL_DTYPE.name} [z, y, x] on the volume's grid: argmax of the fold-mean probabilities"
                  + (", then the largest-component rule" if options.postprocess else ""),
        "probabilities": "float32 [z, y, x, C], the fold-mean probabilities before post-processing"
                         if pipeline.with_probabilities else None,
        "hu_window": list(pipeline.hu_window),
        "tile": tile, "step": options.step if tile else None, "tta": options.tta,
        "mirror_axes": [list(axes) for axes in sliding.MIRRORS[options.tta]],
        "stride": pipeline.predictors[0].stride, "batch_size": pipeline.batch_size, "folds": list(fold_names),
        "postprocessing": None if options.postprocess is None else
        {"classes": list(options.postprocess), "connectivity": 1, "in_graph": True},
        "resampling": None,
        "same_as": "zoo predict MODEL INPUT OUTPUT " + " ".join(flags)
                   + f" --batch-size {pipeline.batch_size}" + (" --save-probabilities" if pipeline.with_probabilities
                                                               else ""),
    }


def warmup_volume(pipeline: VolumePipeline, spacing=None) -> dict:
    """One small raw request: two slices of random HU (the fixed size of a fixed-size model), and a spacing."""
    fixed = pipeline.predictors[0].fixed
    shape = (2, *fixed) if fixed and not pipeline.options.tile else WARMUP_SHAPE
    volume = np.random.default_rng(0).uniform(-1000.0, 1000.0, shape).astype(np.float32)
    return {"volume": volume, "spacing": np.asarray(spacing or (0.8, 0.8, 2.5), np.float64).reshape(3)}


def export_pipeline(models, base_dir, name: str, options: inference.InferenceOptions,
                    hu_window=volumes.DEFAULT_WINDOW, stride: int = 16, batch_size: int = 8,
                    with_probabilities: bool = False, version: int | None = None, server_base_path: str | None = None,
                    facts: dict | None = None, fold_names=None, version_labels=()):
    """Exports the whole inference as ``<base_dir>/<name>/<version>/`` for TF Serving.

    Args:
        models: the models whose probabilities are averaged (a ``zoo cv`` folder's folds, or one).
        options: as ``zoo predict``'s (``common.ct.ensemble.options_for``); no resampling.
        facts: the card's run facts (``card.run_facts``).
        fold_names: the models' names for the card (default fold_1..).
        Others: as ``VolumePipeline`` and ``export.export_saved_model``.

    Returns:
        The version folder.
    """
    import keras

    export.new_version_folder(base_dir, name, version)
    export.check_version_labels(version_labels)
    pipeline = VolumePipeline(models, options, hu_window, stride, batch_size, with_probabilities)
    spacing = tf.TensorSpec([3], tf.float64, name="spacing")
    specs = {card.SIGNATURE: tf.TensorSpec([None, None, None], tf.float32, name="volume"),
             SIGNATURE_INT16: tf.TensorSpec([None, None, None], tf.int16, name="volume")}

    archive = keras.export.ExportArchive()
    for model in pipeline.models:
        archive.track(model)
    # Both signatures call the one chunk function (``VolumePipeline.chunk_probabilities``): an int16 volume is cast
    # chunk by chunk, never as a whole float32 copy.
    endpoint = archive.add_endpoint(card.SIGNATURE, pipeline.__call__, input_signature=[specs[card.SIGNATURE], spacing])
    archive.add_endpoint(SIGNATURE_INT16, pipeline.__call__, input_signature=[specs[SIGNATURE_INT16], spacing])
    fold_names = fold_names or [f"fold_{i + 1}" for i in range(len(models))]
    in_plane = (facts or {}).get("training_spacing")
    request = warmup_volume(pipeline, [*in_plane, 2.5] if in_plane else None)
    model_card = card.model_card(name, {"volume": specs[card.SIGNATURE], "spacing": spacing},
                                 endpoint.get_concrete_function().structured_outputs, facts,
                                 input_ranges={"volume": None, "spacing": None},
                                 pipeline=describe(pipeline, fold_names))
    return export.write_version(base_dir, name, version, lambda folder: archive.write_out(str(folder), verbose=False),
                                [request], model_card, server_base_path, version_labels)
