"""``zoo train`` under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

TRAIN = ["--model", "unet", "--base-filters", "2", "--batch-size", "2", "--crop-size", "32",
         "--learning-rate", "1e-3", "--test-cases", "case_000", "--seed", "0"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(prepared, outs, epochs: int, ports) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index, out in enumerate(outs):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "common.cli", "train", str(prepared), str(out), "--epochs", str(epochs), *TRAIN],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    return workers


def _wait(workers, timeout: float = 300) -> list[str]:
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("a worker did not finish in time")
    return outputs


def _epochs(run) -> list[int]:
    with open(run / "history.csv", encoding="utf-8") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tiny_prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("multiworker") / "run"  # one folder both workers see, as on shared storage
    workers = _start_workers(tiny_prepared, [run, run], epochs=2, ports=_free_ports(2))
    logs = _wait(workers)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return run, logs


def test_two_workers_train_one_model_and_only_the_chief_writes(trained):
    run, logs = trained
    assert "2 replica(s)" in logs[0] and "2 replica(s)" in logs[1]
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "last.keras").is_file()
    assert (run / "config.json").is_file()
    assert _epochs(run) == [0, 1]  # one writer: a second one would have doubled the log
    with zipfile.ZipFile(run / "model.keras") as saved:  # synchronized batch norm is TensorFlow-only:
        config = saved.read("config.json").decode()      # the saved model loads on every backend
    assert '"synchronized": false' in config and '"synchronized": true' not in config
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "history.csv", "logs",
                                                      "model.keras"]  # the backup is gone once training ends


def test_both_workers_end_with_identical_weights(tiny_prepared, tmp_path):
    # Each worker writes all its final weights, BatchNorm's moving statistics included (synchronized
    # batch norm); the non-chief's go to a scratch file for this check.
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from common.train import distribute\n"
        "from common.train import segmentation as training\n"
        "strategy = distribute.MultiWorkerMirroredStrategy()\n"
        "config = training.TrainConfig(data=sys.argv[1], out=sys.argv[2], base_filters=2, epochs=1, batch_size=2,\n"
        "    crop_size=32, learning_rate=1e-3, test_cases=['case_000'], verbose=0)\n"
        "model = training.train(config, strategy=strategy, log=lambda _: None)\n"
        "np.savez(sys.argv[3], *model.get_weights())\n"
    )
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-c", script, str(tiny_prepared), str(tmp_path / f"run_{index}"),
             str(tmp_path / f"final_{index}.npz")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    logs = _wait(workers)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-3000:] for log in logs)
    # Separate run folders here: the chief's holds the checkpoints and the model, the other worker's nothing.
    assert (tmp_path / "run_0" / "checkpoints" / "last.keras").is_file()
    assert (tmp_path / "run_0" / "model.keras").is_file()
    assert not (tmp_path / "run_1").exists() or not any(p.is_file() for p in (tmp_path / "run_1").rglob("*"))
    a, b = np.load(tmp_path / "final_0.npz"), np.load(tmp_path / "final_1.npz")
    assert a.files == b.files and len(a.files) > 20
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_killed_worker_resumes_on_rerun(tiny_prepared, tmp_path):
    run = tmp_path / "run"
    workers = _start_workers(tiny_prepared, [run, run], epochs=4, ports=_free_ports(2))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        if (run / "backup" / "training_metadata.json").exists():
            break
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)  # mid-training: at least one epoch backed up, not all four
    workers[0].send_signal(signal.SIGKILL)  # its peer is gone: the collective would only time out
    for w in workers:
        w.wait(timeout=60)
    backed_up = json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= backed_up < 4
    before = _epochs(run)
    workers = _start_workers(tiny_prepared, [run, run], epochs=4, ports=_free_ports(2))
    logs = _wait(workers)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(log[-3000:] for log in logs)
    rerun = _epochs(run)[len(before):]
    assert rerun == list(range(backed_up, 4)), (before, rerun)  # resumed after the backup, not from scratch
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
