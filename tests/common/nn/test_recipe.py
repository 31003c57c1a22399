"""The papers' recipes as declared beside their models: complete, valid, and checked field by field."""

import dataclasses

import pytest

import eas_unet
import unet_transformer
from common import registry
from common.nn import recipe


@pytest.mark.parametrize("field, value", [("learning_rate", 0.0), ("loss", "focal"), ("optimizer", "lamb"),
                                          ("momentum", -0.1), ("precision", "float8"), ("augment", "mixup"),
                                          ("steps_per_execution", 0), ("batch_size", 0), ("base_filters", 2.5),
                                          ("epochs", True)])
def test_a_bad_field_is_refused_when_the_recipe_is_made(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        dataclasses.replace(unet_transformer.RECIPE, **{field: value})


def test_every_segmentation_model_has_its_papers_recipe_and_builds_at_its_width():
    assert registry.get("eas_unet").recipe is eas_unet.RECIPE
    for name in registry.names("segmentation"):
        paper = registry.get(name).recipe
        assert isinstance(paper, recipe.Recipe), name
        # The width is decided once: the build function's default is the recipe's.
        assert _default_width(registry.get(name).build) == paper.base_filters, name


def _default_width(build) -> int:
    import inspect

    builder = getattr(build, "func", build)
    return inspect.signature(builder).parameters["base_filters"].default


def test_the_papers_values():
    assert (eas_unet.RECIPE.optimizer, eas_unet.RECIPE.learning_rate, eas_unet.RECIPE.momentum,
            eas_unet.RECIPE.weight_decay, eas_unet.RECIPE.batch_size, eas_unet.RECIPE.epochs) == \
        ("sgd", 0.01, 0.9, 1e-4, 32, 50)  # section III.A
    assert (unet_transformer.RECIPE.optimizer, unet_transformer.RECIPE.learning_rate) == ("adam", 1e-4)  # section 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        eas_unet.RECIPE.epochs = 5  # a script's change would change every later run's
