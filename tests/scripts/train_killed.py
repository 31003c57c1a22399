"""``zoo train ARGV`` in this process, through the CLI's own configuration and training call.

Run by ``tests.helpers.zoo_train_process`` as ``python -m tests.scripts.train_killed KILL_AFTER WEIGHTS_TO
ARGV...``: with KILL_AFTER > 0 the process SIGKILLs itself once that epoch is backed up (a crash at a known
point); with WEIGHTS_TO not "-" the final weights, moving statistics included, go to that ``.npz``.
"""

import os
import signal
import sys

import keras
import numpy as np


class KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


def main(kill_after: str, weights_to: str, *argv: str) -> None:
    from common.cli import build_parser, verbosity
    from common.cli.train import train_config
    from common.train import segmentation

    args = build_parser().parse_args(["train", *argv])
    with verbosity.configured(args.log_level):  # the lines `zoo train` prints (the tests read "2 replica(s)")
        config = train_config(args)
        model = segmentation.train(config, extra_callbacks=[KillAfterEpoch(int(kill_after))])
    if weights_to != "-":
        np.savez(weights_to, *model.get_weights())


if __name__ == "__main__":
    main(*sys.argv[1:])
