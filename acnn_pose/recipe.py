"""The ACNN paper's training recipe (section 3.1, 3.3), for ACNN and the plain stacked hourglass it builds on.

The schedule (three stages of RMSprop with their rates, epochs and drops) is ``acnn_pose.STAGES``; the
optimizer is Torch7's RMSprop (``Stage.optimizer``); the loss is eq. 3 summed over the stages
(``acnn_pose.stacked_mse``). ``RECIPE`` holds the rest: the network's size and what a batch is. The baseline
trains by the same recipe (stages A and C), so the two differ only by the masks.

Example:

>>> import dataclasses
>>> RECIPE.num_stacks, RECIPE.base_filters, RECIPE.input_size, RECIPE.batch_size
(4, 256, 256, 12)
>>> dataclasses.replace(RECIPE, batch_size=8).batch_size  # a variation; RECIPE itself is frozen
8
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PoseRecipe:
    """How the paper sized and fed its network: what ``zoo train-pose`` and ``build_model`` default to."""

    num_stacks: int  # hourglass stages
    base_filters: int  # the channels of every hourglass; the stem's widths are fixed fractions of it
    input_size: int  # side of the square crops; heatmaps are a quarter of it
    batch_size: int  # crops per step

    def __post_init__(self):
        for field in dataclasses.fields(self):  # frozen: valid once, valid for good
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name} must be an integer >= 1, got {value!r}")


RECIPE = PoseRecipe(
    num_stacks=4,  # section 3.1, "We adopt a 4-stack hourglass network as the base network"; again in 3.3
    base_filters=256,  # section 3.2, "the input feature maps for every stage is a 256 channels' 3D tensor"
    input_size=256,  # section 3.1, "The input images are 256x256, and the output heatmaps are K x 64 x 64"
    batch_size=12,  # section 3.3, "a mini-batch size of 12 (6 per GPU)"
)
