"""The U-Transformer paper's training recipe (section 3, "Experimental setup"), for it and its four baselines.

The paper gives the optimizer and its rate only ("Adam optimizer (1e-4 learning rate, exponential decay
scheduler)", TensorFlow); every other value is the zoo's choice, said at its line. The baselines (U-Net,
Attention U-Net, MHSA, MHCA) are the paper's ablations, trained the same way, so they share it.
"""

from common.nn.recipe import Recipe

RECIPE = Recipe(
    optimizer="adam",  # section 3
    learning_rate=1e-4,  # section 3
    lr_decay=0.95,  # "exponential decay scheduler", rate not given: 0.95 per epoch, the zoo's choice
    loss="ce_dice",  # not given: cross-entropy + soft Dice, as the EAS U-Net paper's (section II.C)
    batch_size=8,  # not given: the zoo's choice
    epochs=50,  # not given: the zoo's choice
    # No flips or rotations: the positional encoding is there for the fixed anatomical layout, which they destroy.
    augment="none",
    base_filters=64,  # section 2 builds on the U-Net, whose first level has 64 filters (Ronneberger et al.)
)
