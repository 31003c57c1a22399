"""Image files of a pose data folder: whole or not, checked before anything trusts them.

OpenCV's ``imread`` returns None for an empty file, but decodes a truncated
JPEG without a word (libjpeg fills the missing rows with grey), so a
truncated image would be trained on and scored. A whole JPEG ends with its
end-of-image marker (FFD9) and a whole PNG with its IEND chunk: checking the
file's last bytes costs one small read, so every image of an annotation file
is checked once when it is read, before tf.data opens any (an error inside
tf.data's ``numpy_function`` surfaces as a TensorFlow traceback, not one line).
A JPEG whose last bytes are not the marker (a camera's trailer after it) is
walked segment by segment to find it; an image in another format is decoded.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

from common.errors import DataError

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82"
TAIL = 64  # bytes read from a file's end: the marker, and zero padding some writers add after it


def jpeg_is_whole(data: bytes) -> bool:
    """Whether a JPEG's bytes hold its end-of-image marker, found by walking its segments.

    Headers (APPn, where an EXIF thumbnail keeps an EOI of its own) are skipped
    by their length; entropy-coded data runs to the next marker that is not a
    stuffed byte (FF00) or a restart (FFD0-FFD7), as in ITU T.81, annex B.

    Example:
        >>> ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
        >>> jpeg_is_whole(encoded.tobytes()), jpeg_is_whole(encoded.tobytes()[:-40])
        (True, False)
    """
    position = 2
    while position + 1 < len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, restart, TEM: no length
            position += 1 if marker == 0xFF else 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        while marker == 0xDA:  # after a scan header, its entropy-coded data
            position = data.find(b"\xff", position)
            if position < 0 or position + 1 >= len(data):
                return False
            following = data[position + 1]
            if following != 0 and not 0xD0 <= following <= 0xD7:
                break
            position += 2
    return False


def _tail(path: pathlib.Path, size: int) -> tuple[bytes, bytes]:
    with open(path, "rb") as stream:
        head = stream.read(len(PNG_START))
        stream.seek(max(0, size - TAIL))
        return head, stream.read()


def _end_problem(head: bytes, tail: bytes, whole) -> str | None:
    """A JPEG without its end-of-image marker, a PNG without its IEND chunk, else None; ``whole()``: all bytes."""
    tail = tail.rstrip(b"\x00")
    if head.startswith(JPEG_START) and not (tail.endswith(JPEG_END) or jpeg_is_whole(whole())):
        return "truncated (a JPEG without its end-of-image marker)"
    if head.startswith(PNG_START) and not (tail.endswith(PNG_END[4:]) or b"IEND" in whole()):
        return "truncated (a PNG without its IEND chunk)"
    return None


def _decode(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def image_problem(path) -> str | None:
    """What keeps ``path`` from being a whole image, or None: empty, truncated, undecodable or unreadable.

    Reads only the file's first and last bytes unless they look wrong; a file
    that is neither JPEG nor PNG is decoded.
    """
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)"
        head, tail = _tail(path, size)
        if head.startswith((JPEG_START, PNG_START)):
            return _end_problem(head, tail, path.read_bytes)
        return None if _decode(path.read_bytes()) is not None else "not an image OpenCV can decode"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"


def read_image(path) -> np.ndarray:
    """RGB uint8 image; ``DataError`` naming the file if it is empty, truncated or cannot be decoded."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    problem = "empty (0 bytes)" if not data else _end_problem(data[:len(PNG_START)], data[-TAIL:], lambda: data)
    image = _decode(data) if problem is None else None
    if image is None:
        raise DataError(f"{path}: {problem or 'not an image OpenCV can decode'}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
