"""Where ``zoo predict`` writes: one case's files replaced together, a folder of cases predicted resumably.

A folder's outputs are named as nnU-Net names them, ``OUT/<case>.nii.gz``
(the channel suffix ``_0000`` of the input dropped, ``common.ct.layouts``).
Each file appears whole or not at all (``common.atomic``), so a run killed
halfway leaves finished cases and no partial one; run again, it skips the
cases whose outputs exist (unless ``overwrite``) and predicts the rest,
saying which. A kill leaves its temporary file (``.<case>.<id>.tmp.nii.gz``)
behind; the next run removes it and counts it. Two runs into one folder at
once are refused, as the second would remove the first one's temporaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import re
import time
from typing import Callable

import SimpleITK as sitk

from common import atomic
from common.ct.cases import Case

logger = logging.getLogger(__name__)

# Formats written as one file, so a temporary file renamed into place is atomic.
SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
FOLDER_SUFFIX = ".nii.gz"  # nnU-Net's default file ending
PROBABILITIES = "_probabilities"


def beside(output: pathlib.Path, tag: str) -> pathlib.Path:
    """``labels.nii.gz`` -> ``labels_probabilities.nii.gz``."""
    suffix = next(s for s in SINGLE_FILE_SUFFIXES if output.name.endswith(s))
    return output.with_name(output.name[:-len(suffix)] + tag + suffix)


def outputs_of(output: pathlib.Path, with_probabilities: bool) -> list[pathlib.Path]:
    """The files a prediction to ``output`` writes: the labels, and the probabilities beside them when asked."""
    return [output, beside(output, PROBABILITIES)] if with_probabilities else [output]


def write_volumes(pairs) -> None:
    """Writes each (path, image) with SimpleITK; none replaces its previous file unless every one was written whole.

    SimpleITK can leave a short file on a full disk and report success, so each is read back
    (``atomic.check_complete``) before the first rename: labels never replaced beside stale probabilities.
    """
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(atomic.atomic_path(path)) for path, _ in pairs]
        for (path, volume), tmp in zip(pairs, temporaries):
            try:
                sitk.WriteImage(volume, str(tmp), useCompression=True)
                atomic.check_complete(tmp)
            except RuntimeError as error:
                raise _not_written(path, (str(error).strip().splitlines() or ["SimpleITK failed"])[-1]) from None
            except OSError as error:
                raise _not_written(path, error.strerror or str(error)) from None


def _not_written(path: pathlib.Path, cause: str) -> atomic.WriteError:
    """``atomic_path``'s message, naming this file of several written together (it would name the innermost)."""
    kept = "the previous file is untouched" if path.exists() else "nothing was written"
    return atomic.WriteError(f"{path}: not written: {cause.strip()[:1].lower()}{cause.strip()[1:]}; {kept}")


@dataclasses.dataclass
class FolderRun:
    """What a folder run did: its counts of cases and files.

    Attributes:
        predicted: cases predicted; ``replaced`` of them had an output there before.
        skipped: cases whose every output was there (without ``overwrite``).
        removed: temporary files of an interrupted run removed.
    """

    predicted: int = 0
    replaced: int = 0
    skipped: int = 0
    removed: int = 0


def check_folder_target(cases: list[Case], out_dir: pathlib.Path) -> None:
    """Refuses an output folder the images are read from: outputs would take inputs' names, or be read as inputs."""
    for case in cases:
        if case.image.parent.resolve() == out_dir.resolve():
            raise ValueError(f"output: {out_dir} is the folder the images are read from; choose another folder")


def predict_folder(cases: list[Case], out_dir, predict: Callable[[Case], list], with_probabilities: bool = False,
                   overwrite: bool = False) -> FolderRun:
    """Predicts every case to ``out_dir/<case>.nii.gz``: finished cases skipped unless ``overwrite``, a line per case.

    Args:
        cases: the inputs (``common.ct.layouts.prediction_inputs``).
        out_dir: the output folder, created if missing.
        predict: case -> its images to write (labels, and probabilities with ``with_probabilities``).
        with_probabilities: also write ``<case>_probabilities.nii.gz``; a case is finished when both exist.
        overwrite: predict finished cases again, replacing their files.
    """
    out_dir = pathlib.Path(out_dir)
    check_folder_target(cases, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise atomic.WriteError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None
    run = FolderRun()
    with atomic.locked_folder(out_dir, "zoo predict"):
        run.removed = _remove_temporaries(out_dir, {case.case_id for case in cases})
        if run.removed:
            logger.info(f"removed {run.removed} temporary files of an interrupted run from {out_dir}")
        for index, case in enumerate(cases, 1):
            outputs = outputs_of(out_dir / f"{case.case_id}{FOLDER_SUFFIX}", with_probabilities)
            existing = [path.exists() for path in outputs]
            if all(existing) and not overwrite:
                run.skipped += 1
                logger.info(f"[{index}/{len(cases)}] {case.case_id}: skipped, {outputs[0]} exists (--overwrite "
                            "predicts it again)")
                continue
            start = time.monotonic()
            images = predict(case)
            write_volumes(list(zip(outputs, images)))
            run.predicted += 1
            run.replaced += any(existing)
            logger.info(f"[{index}/{len(cases)}] {case.case_id}: {'replaced' if any(existing) else 'wrote'} "
                        f"{', '.join(map(str, outputs))} ({'x'.join(map(str, images[0].GetSize()))}) in "
                        f"{time.monotonic() - start:.1f} s")
    return run


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp" + re.escape(FOLDER_SUFFIX))  # atomic_path's temporary names


def _remove_temporaries(out_dir: pathlib.Path, case_ids: set[str]) -> int:
    """Removes the temporaries a killed run left for these cases' outputs; returns how many."""
    names = case_ids | {case_id + PROBABILITIES for case_id in case_ids}
    removed = 0
    for path in sorted(out_dir.iterdir()):
        match = _TEMPORARY.fullmatch(path.name)
        if match and match.group(1) in names and path.is_file():
            try:
                path.unlink()
            except OSError as error:
                raise atomic.WriteError(f"{path}: cannot remove this temporary file of an interrupted run "
                                        f"({error.strerror})") from None
            removed += 1
    return removed
