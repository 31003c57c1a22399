"""The model registry: names, tasks, strides, building, and loading a run."""

import pytest


def test_load_run_reads_the_run_config(tmp_path, keras_file):
    from common import registry

    model, config = registry.load_run(keras_file)
    assert model.output_shape[-1] == 8 and config == {}
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.keras: cannot be loaded as a Keras model"):
        registry.load_run(broken)
