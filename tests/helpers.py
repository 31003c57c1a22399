"""What several test modules share: tiny settings, reloading in a fresh process, precision and serving checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

# A 2-stack hourglass of 16 features on 64 px crops, stages of one epoch (conftest's pose_run trains it once).
TINY_POSE = dict(num_stacks=2, features=16, input_size=64, batch_size=4, stage_factor=0.001, run_eagerly=True,
                 verbose=0)


def lits_pair(folder, number, label: np.ndarray, spacing=(1.0, 1.0, 2.0), label_spacing=None):
    """Writes volume-N.nii (HU ramp) and segmentation-N.nii (``label``) into ``folder``, as LiTS ships them."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    ct = sitk.GetImageFromArray(np.linspace(-300, 300, label.size, dtype=np.float32).reshape(label.shape))
    seg = sitk.GetImageFromArray(label.astype(np.uint8))
    ct.SetSpacing(spacing)
    seg.SetSpacing(label_spacing or spacing)
    sitk.WriteImage(ct, str(folder / f"volume-{number}.nii"))
    sitk.WriteImage(seg, str(folder / f"segmentation-{number}.nii"))


def qupath_geojson(path, name, ring):
    """Writes one polygon of class ``name`` as QuPath exports it (a FeatureCollection)."""
    import json

    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "annotation", "classification": {"name": name}}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def fake_cv_run(root, name, dice_values):
    """A cross-validation folder with one finished fold per Dice value (classes 1 and 2)."""
    import json

    from common.train import crossval

    out = root / name
    units = [{"name": f"fold_{i + 1}", "test_cases": [f"c{i}"], "seed": 0} for i in range(len(dice_values))]
    crossval._plan_units(out, units)
    for unit, dice in zip(units, dice_values):
        (out / unit["name"]).mkdir()
        (out / unit["name"] / "metrics.json").write_text(json.dumps(
            {"name": unit["name"], "test_cases": unit["test_cases"],
             "per_class": {"1": {"dice": dice}, "2": {"dice": dice - 0.1}}}))
    return out


def zoo_train_killed_after(epochs: int, argv, env=None) -> subprocess.Popen:
    """Starts ``zoo train ARGV`` in a fresh process that SIGKILLs itself once epoch ``epochs`` is backed up.

    A crash at a known point instead of a kill after polling: the zoo's callbacks (checkpoint, log,
    backup) have run for that epoch, the next epoch has not started.
    """
    script = textwrap.dedent(f"""
        import os, signal, sys
        import keras
        from common.cli import build_parser
        from common.cli.train import train_config
        from common.train import segmentation

        class KillAfterEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == {epochs}:
                    os.kill(os.getpid(), signal.SIGKILL)

        config = train_config(build_parser().parse_args(["train", *sys.argv[1:]]))
        segmentation.train(config, extra_callbacks=[KillAfterEpoch()])
    """)
    return subprocess.Popen([sys.executable, "-c", script, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the OS reports free on 127.0.0.1 (``run_cluster`` retries if one is taken)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_cluster(launch, count: int = 2, timeout: float = 300, attempts: int = 3):
    """Runs ``launch(ports) -> [Popen]`` to the end; returns (outputs, return codes).

    A port picked free can be taken by another process before the worker binds it; TensorFlow then
    fails at start-up with "Could not start gRPC server", before any training. That start is retried
    with new ports, so the race cannot fail a test.
    """
    for _ in range(attempts):
        workers = launch(free_ports(count))
        outputs = []
        for worker in workers:
            try:
                outputs.append(worker.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired:
                for w in workers:
                    w.kill()
                raise AssertionError("a worker did not finish in time") from None
        if not any("Could not start gRPC server" in output for output in outputs):
            return outputs, [w.returncode for w in workers]
    raise AssertionError(f"no free ports in {attempts} attempts:\n" + outputs[0][-2000:])
