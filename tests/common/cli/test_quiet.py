"""TensorFlow's C++ start-up lines are dropped from stderr; every other line passes, in order."""

import os

import pytest

from common.cli import quiet

NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796224603.076015   24719 port.cc:153] oneDNN custom operations are on.\n",
    b"I0000 00:00:1796224603.076695   24719 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n",
    b"E0000 00:00:1796224604.198540   24719 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
]


def test_noise_is_dropped_and_the_rest_kept(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet.tensorflow_noise_filtered():
        os.write(2, NOISE[0] + b"zoo predict: error: a.nii: cannot be read\n" + b"".join(NOISE[1:]))
        os.write(2, b"E0000 00:00:1.0 1 other.cc:1] a real error stays\n")
    assert capfd.readouterr().err.splitlines() == ["zoo predict: error: a.nii: cannot be read",
                                                   "E0000 00:00:1.0 1 other.cc:1] a real error stays"]


def test_a_low_log_level_keeps_everything(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet.tensorflow_noise_filtered():
        os.write(2, NOISE[1])
    assert capfd.readouterr().err == NOISE[1].decode()


def test_noise_while_the_arguments_are_checked_is_dropped_too(capfd, monkeypatch):
    """`zoo tri-al --strategy` imports TensorFlow to check its value, before the command runs."""
    from common import cli
    from common.cli import slides

    checked = slides._StrategyChoices._names

    def importing_tensorflow(self):
        os.write(2, b"".join(NOISE))
        return checked(self)

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setattr(slides._StrategyChoices, "_names", importing_tensorflow)
    with pytest.raises(SystemExit):
        cli.main(["tri-al", "data", "out", "--strategy", "ITER", "--runs", "x"])
    err = capfd.readouterr().err.splitlines()
    assert err[-1] == "zoo tri-al: error: argument --runs: invalid int value: 'x'"
    assert not [line for line in err if quiet.NOISE.match(line.encode())]
