"""Atomic writes: a file appears whole under its name, or not at all.

Every writer of the zoo goes through ``atomic_path``, so an interrupted run
never leaves half a file where a user (or a model server polling a folder)
could pick it up, and never clobbers what was there with a partial one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import uuid


def _suffix(name: str) -> str:
    # ".nii.gz" and ".weights.h5" must stay whole: writers pick the format from it.
    for double in (".nii.gz", ".weights.h5", ".tar.gz"):
        if name.endswith(double):
            return double
    return pathlib.Path(name).suffix


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix, so format-sniffing writers (SimpleITK,
    Keras, OpenCV) write the right format. On an exception it is removed.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path.name)
    tmp = path.with_name(f".{path.name[:len(path.name) - len(suffix)]}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, payload) -> None:
    """Writes ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def save_weights(model, path) -> None:
    """``model.save_weights`` (a ``.weights.h5`` file), atomically: a kill mid-save leaves the last file whole."""
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp))


def write_image(path, image, rgb: bool = False, params=()) -> None:
    """Writes an image with OpenCV (format from the suffix: .png, .jpg), atomically.

    Args:
        path: the file to write.
        image: uint8 array, (H, W) or (H, W, 3) in OpenCV's BGR order, or RGB with ``rgb=True``.
        rgb: convert RGB to BGR first.
        params: OpenCV's ``imwrite`` flags, e.g. ``(cv2.IMWRITE_JPEG_QUALITY, 95)``.

    Raises:
        OSError naming the file when OpenCV cannot write it.
    """
    import cv2  # imported here: the rest of this module is stdlib only (the model packages use it)

    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels, list(params)):
            raise OSError(f"{path}: OpenCV could not write the image")
