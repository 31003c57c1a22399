"""What several test modules share: tiny settings, reloading in a fresh process, precision and serving checks."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]  # where ``python -m tests.scripts...`` finds the modules

# A 2-stack ACNN of base_filters 16 on 64 px crops, stages of one epoch (conftest's pose_run trains it once).
# The smallest model each registered builder takes (a registered model missing here fails the tables using it).
TINY_MODELS = {
    "unet": dict(num_classes=2, base_filters=2),
    "attention_unet": dict(num_classes=2, base_filters=2),
    "mhsa": dict(num_classes=2, base_filters=2, heads=2),
    "mhca": dict(num_classes=2, base_filters=2, heads=2),
    "u_transformer": dict(num_classes=2, base_filters=2, heads=2),
    "eas_unet": dict(num_classes=2, base_filters=2),
    "acnn": dict(input_shape=(64, 64, 3), num_stacks=2, base_filters=8),
    "hourglass": dict(input_shape=(64, 64, 3), num_stacks=1, base_filters=8),
    "tri_cnn": dict(tile_size=32, base_filters=2, head_units=4),
}
TINY_POSE = dict(num_stacks=2, base_filters=16, input_size=64, batch_size=4, stage_factor=0.001, run_eagerly=True,
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


def zoo_train_process(argv, env=None, kill_after: int | None = None, weights_to=None) -> subprocess.Popen:
    """Starts ``zoo train ARGV`` in a fresh process, through the CLI's own configuration and training call.

    ``kill_after``: the process SIGKILLs itself once that epoch is backed up (a crash at a known point
    instead of a kill after polling: the zoo's callbacks have run for that epoch, the next has not
    started). ``weights_to``: the final weights, moving statistics included, go to this ``.npz``.
    """
    command = [sys.executable, "-m", "tests.scripts.train_killed", str(kill_after or 0),
               str(weights_to) if weights_to else "-", *map(str, argv)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            cwd=ROOT, env={**os.environ, **(env or {})})


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


@contextlib.contextmanager
def dtype_policy(name: str = "mixed_float16"):
    """Builds under Keras' global ``name`` policy inside the block; the previous policy is back after it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def reload_in_fresh_process(folder, models: dict, inputs, package: str, atol: float = 0.0) -> dict:
    """Saves each model (name -> keras.Model) as ``name.keras``, reloads it in a fresh Python, compares outputs.

    The fresh process imports keras and ``package`` only, so every custom layer must be registered by
    the package itself; outputs on ``inputs`` must equal the saved model's (within ``atol``). Returns
    name -> {"outputs": output names, "inputs": input names} as the fresh process saw them.
    """
    folder = pathlib.Path(folder)
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    np.savez(folder / "inputs.npz", *inputs)
    for name, model in models.items():
        outputs = model(inputs if len(inputs) > 1 else inputs[0])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        np.savez(folder / f"{name}.outputs.npz", *[np.asarray(o) for o in outputs])
        model.save(folder / f"{name}.keras")
    done = subprocess.run([sys.executable, "-m", "tests.scripts.reload_check", package, str(folder),
                           json.dumps(list(models)), str(atol)], capture_output=True, text=True, encoding="utf-8",
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


def model_inputs(model, rng):
    """A batch of one for ``model``: uniform [0, 1), its free sides 64 (a multiple of every stride below 128)."""
    shapes = [(1, *(side or 64 for side in t.shape[1:])) for t in model.inputs]
    x = [rng.random(shape, dtype=np.float32) for shape in shapes]
    return x if len(x) > 1 else x[0]


def fit_one_step(model, rng):
    """One SGD step on random targets of the outputs' shapes, so saved weights are not the initial ones; the batch."""
    import keras

    x = model_inputs(model, rng)
    y = keras.tree.map_structure(lambda out: rng.random(out.shape, dtype=np.float32), model(x))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)  # one step: tracing would cost more than it
    model.train_on_batch(x, y)  # fit's one step, without its epoch machinery
    return x


def load_serving(version_dir):
    """An exported version's ``serving_default`` as a function of NumPy inputs giving NumPy outputs by name."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]

    def serve(**inputs) -> dict:
        outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    serve.signature = signature
    return serve


def conv_model(kernel: np.ndarray, bias: np.ndarray):
    """A free-size (B, H, W, 1) -> (B, H, W, C) softmax of one fixed 'same' convolution (kernel: (k, k, 1, C)).

    A known function of the input for inference tests: a 1x1 kernel labels each pixel by its own
    value alone (translation-equivariant, unchanged by flips); a larger one looks at its neighbours.
    """
    import keras

    inputs = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[0], padding="same")
    outputs = keras.layers.Softmax(dtype="float32")(conv(inputs))
    conv.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return keras.Model(inputs, outputs)


# Windowed intensity v -> logits 10 (0.3 - v), 0, 10 (v - 0.7): class 0 below 0.3, 2 above 0.7, 1 between.
THRESHOLD_KERNEL, THRESHOLD_BIAS = np.array([-10.0, 0.0, 10.0]).reshape(1, 1, 1, 3), np.array([3.0, 0.0, -7.0])


def fake_cv_folder(root, models, **config):
    """A `zoo cv` folder whose units fold_1..fold_K hold ``models`` and a config.json of ``config``'s keys."""
    import json

    root = pathlib.Path(root)
    units = [{"name": f"fold_{i + 1}", "test_cases": [], "seed": i} for i in range(len(models))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps({"units": units}))
    defaults = {"model": "unet", "num_classes": 3, "hu_window": [-160.0, 240.0], "augment": "none",
                "class_names": ["background", "a", "b"]}
    for unit, model in zip(units, models):
        (root / unit["name"]).mkdir()
        model.save(root / unit["name"] / "model.keras")
        (root / unit["name"] / "config.json").write_text(json.dumps({**defaults, **config}))
    return root


def palette_classifier(palette, tile_size: int = 32):
    """A classifier of triplets (TRI-CNN's three inputs): the ``palette`` colour nearest the 40x tile's mean.

    For the mean RGB x in [0, 1], logit_k = 50 (2 x.p_k - |p_k|^2) = 50 (|x|^2 - |x - p_k|^2); the 2.5x and
    10x tiles weigh 0. Plain Keras layers, so it saves and reloads as any ``.keras`` file.
    """
    import keras

    colours = np.asarray(palette, np.float32) / 255.0
    inputs = [keras.Input((tile_size, tile_size, 3), name=name) for name in ("tile_2_5x", "tile_10x", "tile_40x")]
    means = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(tile) for tile in inputs])
    dense = keras.layers.Dense(len(colours), activation="softmax", dtype="float32")
    model = keras.Model(inputs, dense(means))
    kernel = np.zeros((9, len(colours)), np.float32)
    kernel[6:] = 100.0 * colours.T
    dense.set_weights([kernel, -50.0 * (colours ** 2).sum(1)])
    return model


def flat_slide(path, labels, palette, cell: int, origin=None, canvas=None) -> np.ndarray:
    """Writes a slide of flat ``cell``-pixel squares, class ``labels[r, c]`` in ``palette`` (255: white glass).

    A Leica SCN whose scanned area lies at level-0 ``origin`` of ``canvas`` (W, H) when given, else a
    pyramid TIFF; returns the RGB of the scanned area.
    """
    from common.slides import synthetic

    colours = np.full((256, 3), 255, np.uint8)
    colours[:len(palette)] = palette
    rgb = colours[np.kron(np.asarray(labels, np.uint8), np.ones((cell, cell), np.uint8))]
    if origin is None:
        synthetic.write_pyramid(path, rgb)
    else:
        synthetic.write_leica(path, rgb, origin, canvas)
    return rgb


def free_stopped_training(request) -> None:
    """As this test ends, frees what a training it stopped with an exception left in reference cycles.

    Keras' epoch iterator and its suspended generator hold each other, and the tf.data iterator with them, until
    a full garbage collection. Deleting that tf.data iterator then waits for tf.data's autotuning thread to wake,
    and its sleep grows with the iterator's age: one such collection took 32 s of another test in `make test`
    (docs/performance.md). Collected as the test ends, the iterator is seconds old.
    """
    request.addfinalizer(gc.collect)


@contextlib.contextmanager
def file_limit(limit_bytes: int):
    """Within the block, files this process writes cannot grow past ``limit_bytes`` (RLIMIT_FSIZE).

    Writes past it fail with EFBIG ("file too large"), as writes to a full disk fail with ENOSPC; Python
    ignores SIGXFSZ, so the writer sees the error (or, like SimpleITK, swallows it). `zoo` run in this
    process (``zoo_here``) then meets a full disk without a fresh process and its TensorFlow start. Only the
    soft limit is lowered, so it is raised back after; pytest and xdist write no file past it meanwhile
    (their capture is in memory).
    """
    import resource

    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)


def checksums(folder) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: what a failure must leave unchanged."""
    import hashlib

    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def logged(level: int = logging.INFO):
    """The messages the zoo's packages log within the block, a list filled as they come.

    pytest's ``caplog`` does this for one test; this is for fixtures shared by a module or the session, which
    record a run's lines once.
    """
    from common.cli import verbosity

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler, loggers = Collect(level), [logging.getLogger(name) for name in verbosity.PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield lines
    finally:
        for logger, old in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(old)
