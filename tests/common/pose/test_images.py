"""Whole or not: the image checks of pose data (JPEG end marker, PNG IEND), against OpenCV's silent partial decode."""

import cv2
import numpy as np
import pytest

from common.errors import DataError
from common.pose import images

PICTURE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)

JPEG_KINDS = {"baseline": [], "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
              "restart markers": [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]}


@pytest.mark.parametrize("params", JPEG_KINDS.values(), ids=JPEG_KINDS.keys())
def test_a_jpeg_is_whole_only_with_its_end_marker_wherever_it_is_cut(params):
    data = cv2.imencode(".jpg", PICTURE, params)[1].tobytes()
    assert images.jpeg_is_whole(data)
    assert images.jpeg_is_whole(data + b"\xff\xd8 a camera's trailer after the image")  # the walk finds the marker
    assert not any(images.jpeg_is_whole(data[:cut]) for cut in range(2, len(data) - 1, 53))


def test_opencv_decodes_a_truncated_jpeg_silently_and_read_image_does_not(tmp_path):
    data = cv2.imencode(".jpg", PICTURE)[1].tobytes()
    (tmp_path / "whole.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) * 2 // 3])
    assert cv2.imread(str(tmp_path / "cut.jpg")) is not None  # the reason for the check: grey rows, no error
    np.testing.assert_array_equal(images.read_image(tmp_path / "whole.jpg"),
                                  cv2.cvtColor(cv2.imread(str(tmp_path / "whole.jpg")), cv2.COLOR_BGR2RGB))
    assert images.image_problem(tmp_path / "whole.jpg") is None
    message = "truncated (a JPEG without its end-of-image marker)"
    assert images.image_problem(tmp_path / "cut.jpg") == message
    with pytest.raises(DataError, match=f"^{tmp_path / 'cut.jpg'}: " + message.replace("(", r"\(").replace(")", r"\)")):
        images.read_image(tmp_path / "cut.jpg")


PROBLEMS = [
    ("empty.jpg", lambda: b"", "empty (0 bytes)"),
    ("cut.png", lambda: cv2.imencode(".png", PICTURE)[1].tobytes()[:-30], "truncated (a PNG without its IEND chunk)"),
    ("text.jpg", lambda: b"not an image", "not an image OpenCV can decode"),
    ("whole.png", lambda: cv2.imencode(".png", PICTURE)[1].tobytes(), None),
    ("padded.jpg", lambda: cv2.imencode(".jpg", PICTURE)[1].tobytes() + b"\x00" * 100, None),
    ("whole.bmp", lambda: cv2.imencode(".bmp", PICTURE)[1].tobytes(), None),  # neither JPEG nor PNG: decoded
]


@pytest.mark.parametrize("name, content, problem", PROBLEMS, ids=[row[0] for row in PROBLEMS])
def test_image_problems_are_named_and_whole_images_read(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content())
    assert images.image_problem(path) == problem
    if problem is None:
        assert images.read_image(path).shape == PICTURE.shape
    else:
        with pytest.raises(DataError) as error:
            images.read_image(path)
        assert str(error.value) == f"{path}: {problem}"
