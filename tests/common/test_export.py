"""SPEC's public path ``common.export``: the SavedModel export from ``common.serve.export``."""

import common.export
from common.serve import export


def test_the_public_path_is_the_implementation():
    assert common.export.export_saved_model is export.export_saved_model
