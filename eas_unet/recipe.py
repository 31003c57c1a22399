"""The EAS U-Net paper's training recipe (section III.A, "Experimental setup"; III.B, preprocessing).

"The optimizer uses Stochastic Gradient Descent (SGD) and the learning rate is set to 0.01. And the optimizer
has a weight decay of 0.0001 and a momentum coefficient of 0.9. The batch size is set to 32, and the training
epochs predefined number is 50." The authors trained in PyTorch 2.0, so SGD follows PyTorch's rule
(``common.nn.optimizers.TorchSGD``). The data side of III.B (HU window [-200, 250], slices with >= 1.5 % liver)
is ``zoo prepare --preset lits``.
"""

from common.nn.recipe import Recipe

RECIPE = Recipe(
    optimizer="sgd",  # III.A
    learning_rate=0.01,  # III.A
    lr_decay=1.0,  # III.A gives no schedule: the rate stays constant
    momentum=0.9,  # III.A
    weight_decay=1e-4,  # III.A
    loss="ce_dice",  # II.C, "Loss = CEloss + Diceloss", on the fused output and (side_weight) on every side
    batch_size=32,  # III.A
    epochs=50,  # III.A
    crop_size=256,  # III.B, random crops
    augment="flip-rot",  # III.B, horizontal and vertical flips, rotations by multiples of 90 degrees
    # The paper gives no width: 32, the SPEC's call (its public API), half the U-Net's 64, the size whose
    # parameter count docs/results.md compares; the U-Net baseline trains at the same width (SPEC).
    base_filters=32,
)
