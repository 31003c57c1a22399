"""What predicts a volume: one run's model or a `zoo cv` folder's folds, and the inference options its training implies.

A model argument is a run folder (``RUN/model.keras`` + ``config.json``), a
bare ``.keras`` file, or a cross-validation folder (``plan.json`` and one run
folder per unit, see ``common.train.crossval``), whose units' probabilities
``common.ct.inference`` averages. The defaults follow the training:

- tile: the run's training crop (``crop_size``) when it is smaller than the
  largest slice side of its prepared cases (the run trained on crops), else
  whole slices;
- test-time mirroring: on when the training augmentation flipped (``augment``
  "flip" or "flip-rot"), off otherwise ("none": the U-Transformer's fixed
  layout) and for a bare ``.keras`` file;
- spacing: the volume's own; ``"auto"`` is the training cohort's median
  in-plane spacing (``common.ct.shards.training_spacing``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

from common import errors, registry
from common.ct import inference, postprocess, shards, sliding

logger = logging.getLogger(__name__)

PLAN = "plan.json"
DEFAULT_STRIDE = 16  # a bare .keras file names no model; the zoo's segmentation models have this stride


@dataclasses.dataclass
class Models:
    """Loaded models with their runs' ``config.json`` (``{}`` for a bare file).

    Attributes:
        folder: the cross-validation folder, None for one run.
    """

    models: list
    names: list[str]
    configs: list[dict]
    folder: pathlib.Path | None = None

    @property
    def config(self) -> dict:
        return self.configs[0]

    @property
    def stride(self) -> int:
        name = self.config.get("model")
        return registry.get(name).stride if name in registry.names() else DEFAULT_STRIDE


def is_cv_folder(path) -> bool:
    return (pathlib.Path(path) / PLAN).is_file()


def load(path) -> Models:
    """Loads a run folder, a ``.keras`` file or every unit of a cross-validation folder."""
    path = pathlib.Path(path)
    if not is_cv_folder(path):
        model, config = registry.load_run(path)
        return Models([model], [path.name], [config])
    try:
        units = [unit["name"] for unit in json.loads((path / PLAN).read_text(encoding="utf-8"))["units"]]
    except (ValueError, KeyError, TypeError) as error:
        raise errors.DataError(f"{path / PLAN}: not a cross-validation plan ({error})") from None
    loaded = Models([], [], [], path)
    for name in units:
        if not (path / name / "model.keras").exists():
            raise errors.DataError(f"{path / name / 'model.keras'}: missing, the cross-validation is unfinished "
                                   "(rerun `zoo cv` with the same options)")
        model, config = registry.load_run(path / name)
        for key in ("num_classes", "hu_window"):
            if loaded.configs and config.get(key) != loaded.config.get(key):
                raise errors.DataError(f"{path / name / 'config.json'}: {key} {config.get(key)} differs from "
                                       f"{units[0]}'s {loaded.config.get(key)}; the folds cannot be averaged")
        loaded.models.append(model)
        loaded.names.append(name)
        loaded.configs.append(config)
    return loaded


def default_tile(config: dict) -> tuple[int, int] | None:
    """The run's training crop if it trained on crops smaller than its slices, else None (whole slices)."""
    crop = config.get("crop_size")
    if not crop or not config.get("data"):
        return None
    try:
        side = max(max(case["shape"][1:]) for case in shards.load_manifest(config["data"])["cases"])
    except (errors.DataError, KeyError, TypeError, ValueError) as error:
        logger.warning(f"warning: whole slices, as the training slice size is unknown ({error}); give --tile")
        return None
    return (crop, crop) if crop < side else None


def options_for(loaded: Models, tile="auto", step: float = 0.5, tta: str | None = None, spacing: str = "none",
                postprocessing: bool = False) -> inference.InferenceOptions:
    """The inference options, each left out (``"auto"`` / None) taken from the training as the module says.

    Args:
        tile: (h, w), "whole" (whole slices) or "auto".
        tta: "none", "mirror" or None (from the augmentation).
        spacing: "none" (the volume's own) or "auto" (the training cohort's).
        postprocessing: apply the CV folder's largest-component decision.
    """
    config = loaded.config
    flipped = config.get("augment") in ("flip", "flip-rot")
    if tta is None:
        tta = "mirror" if flipped else "none"
    elif tta == "mirror" and not flipped:
        logger.warning(f"warning: {loaded.names[0]} trained without flips "
                       f"(augment {config.get('augment', 'unknown')}); mirroring anyway")
    if tile == "auto":
        tile = default_tile(config)
    elif tile == "whole":
        tile = None
    target = None
    if spacing == "auto":
        if not config.get("data"):
            raise ValueError(f"spacing: auto needs the run's config.json with its prepared folder; "
                             f"{loaded.names[0]} has none")
        target = shards.training_spacing(shards.load_manifest(config["data"]))
    elif spacing != "none":
        raise ValueError(f"spacing must be 'auto' or 'none', got {spacing!r}")
    classes = None
    if postprocessing:
        if loaded.folder is None:
            raise ValueError(f"postprocess: {loaded.names[0]} is not a `zoo cv` folder, which holds the decision")
        classes = tuple(postprocess.read_decision(loaded.folder))
    options = inference.InferenceOptions(tile=tuple(tile) if tile else None, step=step, tta=tta, spacing=target,
                                         postprocess=classes)
    options.validate()
    for model in loaded.models:
        if options.tile:
            sliding.check_tile(model, options.tile, loaded.stride)
    return options


def trained_cases(loaded: Models) -> set[str]:
    """The cases any of the runs trained on (their ``split["train"]``)."""
    return {case for config in loaded.configs for case in config.get("split", {}).get("train", [])}
