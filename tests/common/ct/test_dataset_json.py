"""common.ct.dataset_json: the class names of the Decathlon's and nnU-Net v2's dataset.json."""

import json

import pytest

from common.ct import dataset_json
from common.errors import DataError


def test_the_decathlons_labels_are_index_to_name_and_nnunets_name_to_value(tmp_path):
    path = tmp_path / "dataset.json"
    assert dataset_json.index_class_names(path, {"labels": {"1": "liver", "0": "background"}}) == \
        ["background", "liver"]
    assert dataset_json.value_class_names(path, {"labels": {"liver": 1, "tumour": 2, "background": 0}}) == \
        ["background", "liver", "tumour"]
    assert dataset_json.index_class_names(path, None) is None and dataset_json.value_class_names(path, {}) is None


@pytest.mark.parametrize("labels, words", [
    ({"background": 0, "organs": [1, 2]}, "regions"),
    ({"background": 0, "liver": 1, "ignore": 2}, "'ignore' label"),
    ({"background": 0, "liver": 2}, "values 0..1 once each"),
    ({"background": 0, "liver": "1"}, "integers"),
])
def test_what_nnunet_allows_and_the_zoo_does_not_is_named(tmp_path, labels, words):
    with pytest.raises(DataError, match=words):
        dataset_json.value_class_names(tmp_path / "dataset.json", {"labels": labels})


def test_load_reads_an_object_and_names_bad_json(tmp_path):
    assert dataset_json.load(tmp_path) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {}}), encoding="utf-8")
    assert dataset_json.load(tmp_path) == {"labels": {}}
    (tmp_path / "dataset.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        dataset_json.load(tmp_path)
