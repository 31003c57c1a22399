"""Faults of the serving wing, one table: each row makes one, runs `zoo export`, and checks its one line.

Every row runs on its own copy of one served folder (a one-convolution model exported once, version 1
and models.config) and asserts the exact line, the exit status, and that the served folder's files are
what they were (checksums), apart from what the row expects to change. Every row runs `zoo` in this
process; disk-full rows under a file-size limit (``helpers.file_limit``: writes past a few bytes fail,
"file too large", as on a full disk).
"""

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from typing import Callable

import keras
import pytest
import tensorflow as tf

from tests import helpers

LIMIT = 16_000  # bytes: the graph (22 kB; 66 kB as a pipeline) does not fit, models.config (~0.2 kB) does


@dataclasses.dataclass
class Context:
    tmp: object  # the row's folder
    serving: object  # its copy of the served folder: serving/tiny/1, serving/models.config
    keras_file: object  # the model, as serving/tiny's .keras file
    monkeypatch: object
    live: tuple = ()  # temporary folders of exports in progress, which stay
    stale: tuple = ()  # those of killed exports, which go


@dataclasses.dataclass(frozen=True)
class Fault:
    make: Callable  # make(ctx) -> zoo's arguments, after making the fault
    line: Callable  # line(ctx) -> the one line expected (stderr), or the lines (stdout) of a success
    code: int = 2
    fresh: bool = False  # writes past LIMIT fail while it runs (a full disk)
    after: Callable | None = None  # after(ctx, before) -> the served folder's checksums expected (default: before)


def _winner(ctx):
    """Another export writes version 2 while this one writes its own: version 1's files appear as 2/."""
    from common.serve import export

    check = export.check_written

    def racing(folder):
        shutil.copytree(ctx.serving / "tiny" / "1", ctx.serving / "tiny" / "2")
        check(folder)

    ctx.monkeypatch.setattr(export, "check_written", racing)
    return ["export", ctx.keras_file, ctx.serving]


def _as_version_2(ctx, before):
    return {**before, **{k.replace("tiny/1/", "tiny/2/", 1): v for k, v in before.items() if k.startswith("tiny/1/")}}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _killed_exports(ctx):
    """Temporary folders of killed exports: one of a process now gone, one of an older zoo two days old; and one
    of an export in progress (this process), which stays."""
    host = socket.gethostname()
    ctx.stale = (f".tmp-2-{host}-{_dead_pid()}-0123abcd", ".tmp-2-89abcdef")
    ctx.live = (f".tmp-3-{host}-{os.getpid()}-cafef00d",)
    for name in [*ctx.stale, *ctx.live]:
        (ctx.serving / "tiny" / name / "variables").mkdir(parents=True)
        (ctx.serving / "tiny" / name / "variables" / "variables.index").write_bytes(b"half")
    two_days = time.time() - 2 * 86400
    os.utime(ctx.serving / "tiny" / ctx.stale[1], (two_days, two_days))
    return ["export", ctx.keras_file, ctx.serving]


def _stale_removed(ctx, before):
    """The killed exports' folders gone, version 2 written and models.config pointing at this copy."""
    assert f'base_path: "{ctx.serving / "tiny"}"' in (ctx.serving / "models.config").read_text(encoding="utf-8")
    kept = {k: v for k, v in before.items() if not k.startswith(tuple(f"tiny/{name}/" for name in ctx.stale))}
    now = helpers.checksums(ctx.serving)
    return {**kept, **{k: v for k, v in now.items() if k.startswith("tiny/2/") or k == "models.config"}}


def _text_keras(ctx):
    (ctx.tmp / "model.keras").write_text("model weights, as a text file\n", encoding="utf-8")
    return ctx.tmp / "model.keras"


def _tampered_keras(ctx, name, edit):
    """A .keras file whose config was edited by ``edit(config)``, as a hostile file is made."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="relu", name="dense")])
    model.save(ctx.tmp / "plain.keras")
    with zipfile.ZipFile(ctx.tmp / "plain.keras") as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"]["layers"][1])
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(ctx.tmp / name, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return ctx.tmp / name


def _system(layer):
    layer["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                     "registered_name": "function"}


# `lambda x: x` marshalled, as Keras 3 stores a Lambda layer's function.
LAMBDA_CODE = ("4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMEAAAAfABTAKkBTqkAKQHaAXhyAgAAAHICAAAA+gc8c3RkaW4+2gg8bGFtYmRhPgEA"
               "AADzAAAAAA==")


def _lambda(layer):
    layer.clear()
    layer.update({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                  "config": {"name": "code", "function": {"class_name": "__lambda__", "config": {
                      "code": LAMBDA_CODE, "defaults": None, "closure": None}}}})


def _hostile(ctx, body):
    """A SavedModel whose serving_default runs ``body(image, target)`` before answering; `--verify` it."""
    ctx.target = ctx.tmp / "written_by_the_graph.txt"

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name="image")])
        def serve(self, image):
            with tf.control_dependencies(body(image, str(ctx.target))):
                return {"labels": tf.zeros(tf.shape(image)[:3], tf.int32)}

    module = Hostile()
    tf.saved_model.save(module, str(ctx.serving / "hostile" / "1"), signatures={"serving_default": module.serve})
    return ["export", "--verify", ctx.serving / "hostile"]


def _in_a_branch(image, target):
    def write():
        tf.io.write_file(target, "x")
        return tf.constant(1)

    return [tf.cond(tf.reduce_sum(image) > 0, write, lambda: tf.constant(0))]


def _refused(ops):
    """The refusal naming ``ops`` (op -> where; a plain name: in serving_default), sorted as the message sorts."""
    ops = {op: "serving_default" for op in ops} if isinstance(ops, list) else ops
    listed = ", ".join(f"{op} (in {where})" for op, where in sorted(ops.items()))
    verb = "is not an op" if len(ops) == 1 else "are not ops"
    return lambda c: (f"zoo export: error: {c.serving}/hostile/1/saved_model.pb: refused before running anything: "
                      f"{listed} {verb} of the zoo's exports (common.serve.allowlist)")


FAULTS = {
    "disk full: export": Fault(
        lambda c: ["export", c.keras_file, c.serving], fresh=True,
        line=lambda c: f"zoo export: error: {c.serving}/tiny/2: not written: file too large; nothing was written"),
    "disk full: export --pipeline": Fault(
        lambda c: ["export", c.keras_file, c.serving, "--pipeline"], fresh=True,
        line=lambda c: f"zoo export: error: {c.serving}/tiny/2: not written: file too large; nothing was written"),
    "two exports race for one version": Fault(
        _winner, after=_as_version_2,
        line=lambda c: f"zoo export: error: version: {c.serving}/tiny/2 was written by another export meanwhile; "
                       "versions are never overwritten, so this export was not kept (export again for the next "
                       "version)"),
    "killed exports left temporary folders": Fault(
        _killed_exports, code=0, after=_stale_removed,
        line=lambda c: [f"removed 2 temporary folder(s) that killed exports left in {c.serving}/tiny: "
                        f"{', '.join(sorted(c.stale))}", f"exported {c.serving}/tiny/2"]),
    "a text file given as .keras": Fault(
        lambda c: ["export", _text_keras(c), c.serving],
        line=lambda c: f"zoo export: error: {c.tmp}/model.keras: not a Keras model file (it is text; a .keras file "
                       "is a zip archive)"),
    "a text file given as .keras, --pipeline": Fault(
        lambda c: ["export", _text_keras(c), c.serving, "--pipeline"],
        line=lambda c: f"zoo export: error: {c.tmp}/model.keras: not a Keras model file (it is text; a .keras file "
                       "is a zip archive)"),
    "a .keras naming os.system": Fault(
        lambda c: ["export", _tampered_keras(c, "system.keras", _system), c.serving],
        line=lambda c: f"zoo export: error: {c.tmp}/system.keras: refused by Keras' safe mode: it names function "
                       "'system' of module 'os', which is neither Keras' nor registered with it, so nothing of it "
                       "was loaded"),
    "a .keras holding Python bytecode": Fault(
        lambda c: ["export", _tampered_keras(c, "lambda.keras", _lambda), c.serving],
        line=lambda c: f"zoo export: error: {c.tmp}/lambda.keras: refused by Keras' safe mode: Requested the "
                       "deserialization of a `Lambda` layer whose `function` is a Python lambda"),
    "--verify: WriteFile": Fault(
        lambda c: _hostile(c, lambda image, target: [tf.io.write_file(target, "pwned")]), line=_refused(["WriteFile"])),
    "--verify: WriteFile in a branch": Fault(
        lambda c: _hostile(c, _in_a_branch), line=_refused(["WriteFile"])),
    "--verify: ReadFile": Fault(
        lambda c: _hostile(c, lambda image, target: [tf.io.read_file("/etc/hostname")]),
        line=_refused({"ReadFile": "serving_default", "PartitionedCall": "serving_default, the graph"})),
    "--verify: EagerPyFunc": Fault(
        lambda c: _hostile(c, lambda image, target: [tf.py_function(lambda x: x, [image], tf.float32)]),
        line=_refused(["EagerPyFunc"])),
    "--verify: PrintV2 to a file": Fault(
        lambda c: _hostile(c, lambda image, target: [tf.print("pwned", output_stream=f"file://{target}")]),
        line=_refused(["PrintV2", "StringFormat"])),
    "--verify: SaveV2 from a signature": Fault(
        lambda c: _hostile(c, lambda image, target: [tf.raw_ops.SaveV2(
            prefix=target, tensor_names=["image"], shape_and_slices=[""], tensors=[image])]),
        line=_refused(["SaveV2"])),
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A one-convolution softmax (free size, 3 classes): exports in a fraction of the U-Net's time."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    helpers.conv_model(helpers.THRESHOLD_KERNEL, helpers.THRESHOLD_BIAS).save(path)
    (path.parent / "config.json").write_text('{"model": "unet"}', encoding="utf-8")  # a plain model: say which
    return path


@pytest.fixture(scope="module")
def served(model_file, tmp_path_factory):
    """The served folder every row copies: the model exported once by `zoo export`."""
    from common import cli

    folder = tmp_path_factory.mktemp("served") / "serving"
    assert cli.main(["export", str(model_file), str(folder)]) == 0
    return folder


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_fault_is_one_line_and_the_served_folder_is_kept(case, served, model_file, zoo_here, tmp_path,
                                                            monkeypatch):
    fault = FAULTS[case]
    ctx = Context(tmp_path, tmp_path / "serving", model_file, monkeypatch)
    shutil.copytree(served, ctx.serving)
    argv = fault.make(ctx)
    before = helpers.checksums(ctx.serving)
    with helpers.file_limit(LIMIT) if fault.fresh else contextlib.nullcontext():
        done = zoo_here(*argv)
    if fault.code == 0:
        assert [line for line in done.stdout.splitlines() if line.startswith(("removed ", "exported "))] \
            == fault.line(ctx), done.stdout
    else:
        assert [line for line in done.stderr.splitlines() if line.startswith("zoo ")] == [fault.line(ctx)], \
            done.stderr
    assert done.returncode == fault.code and "Traceback" not in done.stderr, done.stderr
    assert helpers.checksums(ctx.serving) == (fault.after(ctx, before) if fault.after else before)
    left = {p.name for p in (ctx.serving / "tiny").iterdir() if p.name.startswith(".tmp-")}
    assert left == set(ctx.live)  # nothing of a failed export stays, in progress or hidden
    assert not (ctx.tmp / "written_by_the_graph.txt").exists()  # --verify ran nothing of a hostile graph
