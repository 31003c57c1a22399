"""Why a model misses an organ: its MHCA gates, its attention's entropy, the organ's share of the loss gradient.

The U-Transformer study's pre-registered check for a unit that loses an organ its U-Net of the same fold and seed
learned (Dice ~0). On the slices of the chosen cases where the organ is present, each model is measured:

1. the MHCA gate Z = sigmoid(BN(conv(A V))) of paper section 2.2 (Fig. 4), per level, averaged over channels on
   the organ's pixels, on the other organs' and on the background: a gate near 0 on the organ shuts its skip;
2. the entropy of each level's attention rows, H = -sum_k p_k log p_k over the keys, averaged over heads and divided
   by log(number of keys) (1: uniform, 0: all on one key), over all query tokens and over the organ's;
3. the organ's share of |dL/dlogits| for the training loss (``CEDiceLoss``), for its CE and Dice parts apart and
   summed: on the organ's pixels (all class channels) and in the organ's class channel (all pixels);

and the organ's Dice from the argmax beside them, so the table shows the miss beside its diagnosis.

Decisions where the study is silent:

- A level's pixel (or query token) counts for a region (the organ, the other labelled organs, the background) when
  more than half its area is that region: the label mask is area-averaged to the level's grid; a pixel of mixed
  labels counts for none, so a thin organ may have no pixel at a deep level (its figure is then n/a).
- Slices are padded bottom/right to the models' stride, as ``zoo attention-map`` pads: the padding is no region in
  the gate means and the organ's queries (the mean over all queries has them all), and background in the loss, as
  training's ``pipeline.pad_to`` makes it.
- Z comes from the block itself (``MultiHeadCrossAttention.gate``, what its ``call`` multiplies S by), since
  Z = output / S is undefined where the ReLU'd skip S is 0.
- The loss is ``CEDiceLoss(num_classes)`` as ``recipe.compile_model`` compiles it, on the first output only (a
  deep-supervised model's side outputs are left out). Its CE is computed from the logits, as Keras computes it on a
  softmax output in training (probabilities are never clipped there); its Dice is pooled over each batch of
  ``batch_size`` slices, as training pools it over its batch.
- Gradients come from TensorFlow's ``GradientTape``: the shards this reads are TensorFlow's already.
- The organ's Dice is pooled over all the slices (one overlap ratio, not a mean over cases).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from common import registry, tables
from common.ct import shards
from common.errors import DataError
from common.nn.losses import CEDiceLoss, SoftDiceLoss
from common.studies import attention_maps
from unet_transformer import MultiHeadCrossAttention

logger = logging.getLogger(__name__)

PAD = -1  # the label of padding: no region's
REGIONS = {"organ": "organ", "other": "other organs", "background": "background"}
LOSS_PARTS = {"ce": "CE", "dice": "Dice", "ce_dice": "CE + Dice"}


@dataclasses.dataclass
class Slices:
    """The slices a diagnosis runs on: images (N, H, W, 1) float32 and labels (N, H, W) int16 (``PAD`` where
    padded), H and W multiples of the stride; ``cases`` maps each case id to its slices used."""

    images: np.ndarray
    labels: np.ndarray
    cases: dict[str, int]


def organ_label(organ: str, class_names) -> int:
    """The label of ``organ``, a class name or a label number (background is no organ).

    >>> organ_label("spleen", ["background", "liver", "spleen"]), organ_label("1", ["background", "liver"])
    (2, 1)
    """
    names = list(class_names)
    label = names.index(organ) if organ in names else int(organ) if organ.isdigit() else None
    if label is None or not 1 <= label < len(names):
        raise ValueError(f"--organ: {organ!r} is none of the classes {', '.join(names[1:])} "
                         f"(or their labels 1..{len(names) - 1})")
    return label


def read_organ_slices(prepared, case_ids, label: int, stride: int) -> Slices:
    """The slices of ``case_ids`` (a prepared folder's cases) where ``label`` is present, padded to ``stride``.

    Raises:
        DataError naming the manifest for a case it lacks, or a missing or damaged shard; ValueError naming the
        organ and the cases when no slice holds it.
    """
    manifest = shards.load_manifest(prepared)
    by_id = {case["id"]: case for case in manifest["cases"]}
    missing = [case for case in case_ids if case not in by_id]
    if missing:
        raise DataError(f"{pathlib.Path(prepared) / shards.MANIFEST}: no cases {', '.join(missing)}")
    files = [by_id[case]["shard"] for case in case_ids]
    shards.check_present(files)
    images, labels, cases = [], [], {}
    try:
        for case, path in zip(case_ids, files):
            kept = [(image.numpy(), mask.numpy()) for image, mask in
                    tf.data.TFRecordDataset(path).map(shards.parse_example) if np.any(mask.numpy() == label)]
            images += [image for image, _ in kept]
            labels += [mask for _, mask in kept]
            cases[case] = len(kept)
    except tf.errors.OpError as error:
        raise shards.damaged_shard(files, error) from None
    if not images:
        raise ValueError(f"--organ: {manifest['class_names'][label]} (label {label}) is in no slice of cases "
                         f"{', '.join(case_ids)} of {prepared}")
    height, width = (-(-max(x.shape[i] for x in labels) // stride) * stride for i in (0, 1))
    padded = np.full((len(labels), height, width), PAD, np.int16)
    batch = np.zeros((len(images), height, width, 1), np.float32)
    for i, (image, mask) in enumerate(zip(images, labels)):
        padded[i, : mask.shape[0], : mask.shape[1]] = mask
        batch[i, : image.shape[0], : image.shape[1]] = image
    return Slices(batch, padded, cases)


def region_masks(labels: np.ndarray, label: int, block: int) -> dict[str, np.ndarray]:
    """Each region's mask on a grid ``block`` times coarser, by area: a cell is a region's when > half its area is.

    Args:
        labels: (N, H, W) integer labels, ``PAD`` for padding (no region's).
        label: the organ's.
        block: cell side in pixels; the grid has ceil(H / block) x ceil(W / block) cells.

    Returns:
        {"organ", "other", "background"}: (N, h, w) bool.

    >>> labels = np.array([[[2, 2, 0, 0], [2, 1, 0, 0]]])
    >>> {name: mask.astype(int).tolist() for name, mask in region_masks(labels, 2, 2).items()}
    {'organ': [[[1, 0]]], 'other': [[[0, 0]]], 'background': [[[0, 1]]]}
    """
    n, height, width = labels.shape
    h, w = -(-height // block), -(-width // block)
    grid = np.full((n, h * block, w * block), PAD, labels.dtype)
    grid[:, :height, :width] = labels
    regions = {"organ": grid == label, "other": (grid != label) & (grid > 0), "background": grid == 0}
    return {name: mask.reshape(n, h, block, w, block).sum(axis=(2, 4)) > block * block / 2
            for name, mask in regions.items()}


def normalised_entropy(attention: np.ndarray) -> np.ndarray:
    """Each query's attention entropy over the keys, mean over heads, / log(keys): (B, heads, Nq, Nk) -> (B, Nq).

    1 is a uniform row, 0 a row on one key; NaN with a single key.

    >>> normalised_entropy(np.full((1, 2, 3, 4), 0.25)).tolist()
    [[1.0, 1.0, 1.0]]
    """
    p = np.asarray(attention, np.float64)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)  # 0 log 0 = 0
    keys = p.shape[-1]
    return entropy.mean(axis=1) / math.log(keys) if keys > 1 else np.full(entropy.shape[::2], np.nan)


def mhca_gate(block: MultiHeadCrossAttention, s, y):
    """The gate Z (B, H, W, C_s) of one MHCA block on its inputs S and Y, and its attention A (B, heads, Nq, Nk)."""
    return block.gate([s, y], return_attention=True)


def loss_parts(labels, logits, loss: CEDiceLoss) -> dict:
    """``loss``'s CE and weighted Dice terms on ``logits``, as training computes them on their softmax.

    CE from the logits, as Keras takes a softmax output's logits in training; Dice on the softmax. Their sum is
    ``loss(labels, keras.activations.softmax(logits))``.
    """
    logits = ops.cast(logits, "float32")
    ce = ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    dice = SoftDiceLoss(loss.num_classes, loss.include_background, loss.smooth)(labels, ops.softmax(logits))
    return {"ce": ce, "dice": loss.dice_weight * dice}


def loss_gradients(labels, logits, loss: CEDiceLoss) -> dict[str, np.ndarray]:
    """dL/dlogits of each of ``LOSS_PARTS``, each shaped as ``logits``."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        parts = loss_parts(labels, logits, loss)
    gradients = {name: tape.gradient(value, logits).numpy() for name, value in parts.items()}
    return {**gradients, "ce_dice": gradients["ce"] + gradients["dice"]}


def gradient_sums(gradient: np.ndarray, labels: np.ndarray, label: int) -> tuple[float, float, float]:
    """Sums of |dL/dlogits|: on the organ's pixels (all channels), in its channel (all pixels), in all."""
    magnitude = np.abs(gradient)
    return float(magnitude[labels == label].sum()), float(magnitude[..., label].sum()), float(magnitude.sum())


class _Tally:
    """Ratios summed over batches: key -> [numerator, denominator]."""

    def __init__(self):
        self.sums = {}

    def add(self, key, numerator, denominator) -> None:
        self.sums.setdefault(key, [0.0, 0.0])
        self.sums[key][0] += float(numerator)
        self.sums[key][1] += float(denominator)

    def ratio(self, key) -> float | None:
        """The summed ratio; None over nothing (or NaN: entropy with a single key), which JSON has no number for."""
        numerator, denominator = self.sums[key]
        return numerator / denominator if denominator and math.isfinite(numerator) else None


def _mhca_blocks(model) -> list:
    """The model's MHCA blocks, deepest first; none for a model without."""
    has_mhca = any(isinstance(layer, MultiHeadCrossAttention) for layer in model.layers)
    return attention_maps.mhca_layers(model) if has_mhca else []


def _logits(model):
    """The input of the softmax giving the model's first output."""
    layer = model.get_layer(model.output_names[0])
    if getattr(layer, "activation", None) is not keras.activations.softmax:
        raise ValueError(f"model {model.name!r}: its first output {layer.name!r} is no softmax; the loss gradient "
                         "needs the logits under it")
    return layer.input


def _measure_batch(probe, blocks, loss, images, labels, label, tally: _Tally) -> None:
    outputs = probe(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]  # a one-output probe gives the tensor
    height = images.shape[1]
    for i, block in enumerate(blocks):
        s, y = outputs[1 + 2 * i], outputs[2 + 2 * i]
        z, attention = mhca_gate(block, s, y)
        z = np.asarray(ops.mean(z, axis=-1))
        for region, mask in region_masks(labels, label, height // z.shape[1]).items():
            tally.add(("gate", block.name, region), z[mask].sum(), mask.sum())
        ts = block.token_stride
        token_block = height // s.shape[1] * 2 * ts
        grid = [-(-side // (2 * ts)) for side in s.shape[1:3]]
        entropy = normalised_entropy(np.asarray(attention)).reshape(len(images), *grid)
        tally.add(("entropy", block.name, "all"), entropy.sum(), entropy.size)
        organ = region_masks(labels, label, token_block)["organ"]
        tally.add(("entropy", block.name, "organ"), entropy[organ].sum(), organ.sum())
    logits = np.asarray(outputs[0], np.float32)
    loss_labels = np.where(labels == PAD, 0, labels)  # padding is background, as training pads
    for part, gradient in loss_gradients(loss_labels, logits, loss).items():
        organ_pixels, organ_channel, total = gradient_sums(gradient, loss_labels, label)
        tally.add(("share", part, "pixels"), organ_pixels, total)
        tally.add(("share", part, "channel"), organ_channel, total)
    predicted, truth = (np.argmax(logits, axis=-1) == label) & (labels != PAD), labels == label
    tally.add(("dice",), 2 * np.sum(predicted & truth), predicted.sum() + truth.sum())


def diagnose(model: keras.Model, slices: Slices, label: int, batch_size: int = 4) -> dict:
    """The three measures and the organ's Dice of one model on ``slices``, for the organ ``label``.

    Returns:
        {"dice", "mhca": [{"layer", "gate": {region: mean Z}, "entropy": {"all", "organ"}, "organ_pixels" (at Z's
        grid), "organ_queries" (at the query grid)}, deepest first] or None (no MHCA), "gradient_share": {part:
        {"pixels", "channel"}}}; a figure over no pixel is None.
    """
    fixed, size = model.input_shape[1:3], slices.images.shape[1:3]
    if any(side not in (None, found) for side, found in zip(fixed, size)):
        raise ValueError(f"model {model.name!r} takes {fixed[0]}x{fixed[1]} slices; these are {size[0]}x{size[1]}")
    blocks = _mhca_blocks(model)
    logits = _logits(model)
    probe = keras.Model(model.input, [logits, *[tensor for block in blocks for tensor in block.input]])
    loss, tally = CEDiceLoss(num_classes=logits.shape[-1]), _Tally()
    for start in range(0, len(slices.images), batch_size):
        batch = slice(start, start + batch_size)
        _measure_batch(probe, blocks, loss, slices.images[batch], slices.labels[batch], label, tally)
    mhca = [{"layer": block.name,
             "gate": {region: tally.ratio(("gate", block.name, region)) for region in REGIONS},
             "entropy": {which: tally.ratio(("entropy", block.name, which)) for which in ("all", "organ")},
             "organ_pixels": int(tally.sums[("gate", block.name, "organ")][1]),
             "organ_queries": int(tally.sums[("entropy", block.name, "organ")][1])}
            for block in blocks]
    return {"dice": tally.ratio(("dice",)), "mhca": mhca or None,
            "gradient_share": {part: {which: tally.ratio(("share", part, which)) for which in ("pixels", "channel")}
                               for part in LOSS_PARTS}}


def _agreed(found: dict, given, option: str, what: str):
    """``given``, else the one value ``found`` holds for every run (run -> value); ValueError naming the option."""
    if given:
        return given
    bare = [name for name, value in found.items() if value is None]
    if bare:
        raise ValueError(f"{option}: {bare[0]} records no {what} (a bare .keras file?); give --data PREPARED and "
                         "--cases ID,ID")
    if len({repr(value) for value in found.values()}) > 1:
        raise ValueError(f"{option}: the runs differ in their {what} ({found}); give {option}")
    return next(iter(found.values()))


def _check_model(name, model, config, class_names, prepared) -> registry.Entry:
    """The model's registry entry; DataError naming the run unless it segments the data's classes."""
    entry = registry.entry_of(model, config)
    if entry.task != "segmentation":
        raise DataError(f"{name}: a {entry.task} model; zoo organ-diagnosis takes a segmentation model")
    classes = _logits(model).shape[-1]
    if classes != len(class_names):
        raise DataError(f"{name}: {classes} classes out, but {prepared} has {len(class_names)}")
    return entry


def diagnose_runs(runs, organ: str, data=None, cases=None, batch_size: int = 4) -> dict:
    """Diagnoses each run on the same slices: the ones of the cases where the organ is present.

    Args:
        runs: (name, model, config) of each run, as ``registry.load_run`` gives model and config.
        organ: a class name of the data (or its label number).
        data: the prepared folder (default: the runs' ``config["data"]``).
        cases: case ids (default: the runs' held-out cases, ``config["split"]["test"]``).
        batch_size: slices per forward pass and per pooled Dice of the loss.

    Returns:
        {"organ", "label", "data", "cases": {case: slices used}, "slices", "runs": [{"run", "model",
        **``diagnose``}]}, written as is by ``--json``.
    """
    prepared = _agreed({name: config.get("data") for name, _, config in runs}, data, "--data", "prepared folder")
    case_ids = _agreed({name: (config.get("split") or {}).get("test") for name, _, config in runs}, cases,
                       "--cases", "held-out cases")
    class_names = shards.load_manifest(prepared)["class_names"]
    label = organ_label(organ, class_names)
    entries = [_check_model(name, model, config, class_names, prepared) for name, model, config in runs]
    slices = read_organ_slices(prepared, list(case_ids), label, math.lcm(*(entry.stride for entry in entries)))
    found = []
    for (name, model, _), entry in zip(runs, entries):
        logger.info(f"diagnosing {name} ({entry.name}) on {len(slices.images)} slices")
        found.append({"run": str(name), "model": entry.name, **diagnose(model, slices, label, batch_size)})
    return {"organ": class_names[label], "label": label, "data": str(prepared), "cases": slices.cases,
            "slices": len(slices.images), "runs": found}


def _rows(result: dict) -> list[tuple[str, list]]:
    """(row name, one figure per run, "-" where the run has no such measure) for every row."""
    runs = result["runs"]
    levels = {run["run"]: {level["layer"]: level for level in run["mhca"] or []} for run in runs}
    layers = sorted({name for found in levels.values() for name in found}, reverse=True)  # deepest first
    rows = [("organ Dice (argmax)", [run["dice"] for run in runs])]
    for measure, parts in (("gate", REGIONS), ("entropy", {"all": "all queries", "organ": "organ queries"})):
        for layer in layers:
            for key, text in parts.items():
                rows.append((f"{layer} {'gate Z' if measure == 'gate' else 'entropy'}: {text}",
                             [levels[run["run"]][layer][measure][key] if layer in levels[run["run"]] else "-"
                              for run in runs]))
    for part, text in LOSS_PARTS.items():
        for key, where in (("pixels", "organ pixels"), ("channel", "organ channel")):
            rows.append((f"{text} gradient share: {where}", [run["gradient_share"][part][key] for run in runs]))
    return rows


def format_report(result: dict) -> str:
    """The Markdown table (a row per measure and level, a column per run), then which organ on which slices."""
    def cell(value) -> str:
        return value if isinstance(value, str) else "n/a" if value is None else f"{value:.3f}"

    rows = [[name, *map(cell, values)] for name, values in _rows(result)]
    cases = ", ".join(f"{case} ({count})" for case, count in result["cases"].items())
    caption = (f"organ {result['organ']} (label {result['label']}) on {result['slices']} slices where it is present, "
               f"of cases {cases}, in {result['data']}\n"
               "gate Z: mean over channels of the MHCA gate on the level's pixels > half that region; entropy: of "
               "each query's attention, mean over heads, / log(keys); gradient share: sum of |dL/dlogits| on the "
               "organ's pixels or in its channel / over all (n/a: no such pixel; -: no MHCA)")
    return tables.markdown(["measure", *(run["run"] for run in result["runs"])], rows, caption=caption)
