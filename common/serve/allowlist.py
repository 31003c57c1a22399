"""What ``zoo export --verify`` lets run: the op types of the zoo's own exports, read before anything executes.

``--verify`` is what one runs on an export one does not yet trust, and
loading a SavedModel and replaying its warm-up requests runs its graph. So
``check(version_dir)`` first reads ``saved_model.pb`` as a protobuf (no
TensorFlow function is loaded or run) and lists every op type of the graph
and of every function in its library. Each must be among the ops the zoo's
own exports hold: ``SERVING_OPS`` anywhere, and ``CHECKPOINT_OPS`` (which read
and write files) only inside the functions the SavedModel's saver alone
calls (``saver_def``: TF Serving restores the variables with them). Anything
else, a file op (``WriteFile``, ``ReadFile``), a Python op (``PyFunc``,
``EagerPyFunc``), ``PrintV2`` (which prints to files), a checkpoint op called
from a signature, is refused by name, with the signature it is reached from.

Both lists are what exporting every registered model and the ``--pipeline``
exports gives (``tests/common/serve/test_export.py`` derives them and fails
when they differ); a new model whose export needs another op adds it here,
in review.
"""

from __future__ import annotations

import pathlib

from common.errors import DataError


class Refused(DataError):
    """A SavedModel holds ops outside the allow-lists; the message names them and where they are."""


# Every op type of the zoo's exports (every registered model, the pipeline in each of its shapes, the gradient
# functions TensorFlow saves beside attention's custom gradient): math, shapes, control flow, variables.
SERVING_OPS = frozenset({
    "AddV2", "All", "Any", "ArgMax", "Assert", "AssignVariableOp", "BatchMatMulV2", "BatchToSpaceND", "BiasAdd",
    "Bitcast", "BitwiseAnd", "BroadcastTo", "Cast", "Ceil", "CheckNumerics", "ConcatV2", "Const", "Conv2D",
    "Conv2DBackpropInput", "Cos", "DepthwiseConv2dNative", "Equal", "ExpandDims", "Fill", "FloorDiv", "FloorMod",
    "GatherV2", "Greater", "Identity", "IdentityN", "If", "InplaceUpdate", "InvertPermutation", "LeakyRelu", "Less",
    "LogicalAnd", "MatMul", "Max", "MaxPool", "Maximum", "Mean", "Min", "Minimum", "Mul", "Neg", "NoOp", "NotEqual",
    "OnesLike", "Pack", "Pad", "PadV2", "Placeholder", "Prod", "Range", "ReadVariableOp", "RealDiv", "Relu", "Relu6",
    "Reshape", "ReverseV2", "Round", "Rsqrt", "SelectV2", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice",
    "Softmax", "SpaceToBatchND", "Squeeze", "StatefulPartitionedCall", "StatelessIf", "StatelessWhile",
    "StridedSlice", "Sub", "Sum", "TensorListFromTensor", "TensorListGetItem", "TensorListReserve",
    "TensorListSetItem", "TensorListStack", "Tile", "Transpose", "UniqueWithCounts", "Unpack", "VarHandleOp",
    "VarIsInitializedOp", "Where", "While", "ZerosLike",
})
# What exports of an earlier zoo hold and today's do not: the pipeline's TensorArray of probabilities (before
# issue 39 wrote the labels chunk by chunk). Still verified, so a served folder of older versions is not refused.
EARLIER_OPS = frozenset({"TensorListConcatV2"})
# The checkpoint's save and restore functions (``saver_def``), and only they: these read and write files.
CHECKPOINT_OPS = frozenset({
    "DisableCopyOnRead", "MergeV2Checkpoints", "RestoreV2", "SaveV2", "Select", "ShardedFilename",
    "StaticRegexFullMatch", "StringJoin",
})
PLACES_SHOWN = 3  # functions named per refused op; more are counted


def read_saved_model(version_dir):
    """The parsed ``saved_model.pb`` of a version folder; DataError naming the file when it is not one."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = pathlib.Path(version_dir) / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(path.read_bytes())
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error.strerror or error})") from None
    except Exception as error:  # protobuf's DecodeError, whose module differs between protobuf builds
        raise DataError(f"{path}: not a SavedModel ({error})") from None
    if not saved.meta_graphs:
        raise DataError(f"{path}: not a SavedModel (no graph)")
    return saved


def _callees(nodes, functions) -> set[str]:
    """The library functions these nodes call: by op name, or through a function attribute (f, body, branches)."""
    called = set()
    for node in nodes:
        if node.op in functions:
            called.add(node.op)
        for value in node.attr.values():
            called.update([value.func.name] if value.HasField("func") else [])
            called.update(f.name for f in value.list.func)
    return called & set(functions)


def _reach(start: set[str], functions) -> set[str]:
    """Every function ``start`` calls, directly or not, with ``start`` itself."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_callees(functions[name].node_def, functions) - seen)
    return seen


def graph_ops(meta_graph) -> dict[str, dict[str, set[str]]]:
    """``{"serving": {op: places}, "checkpoint": {op: places}}`` of one meta graph.

    A place is the signature a function is reached from, "the graph" for top-level nodes, or the
    function's name where no signature reaches it. "checkpoint" holds the functions that only the
    saver's nodes reach; everything else (signatures, the object graph's functions, any function
    no node calls) is "serving".
    """
    graph, saver = meta_graph.graph_def, meta_graph.saver_def
    functions = {f.signature.name: f for f in graph.library.function}
    by_name = {node.name: node for node in graph.node}
    saver_nodes = {name.split(":")[0] for name in (saver.save_tensor_name, saver.restore_op_name) if name}
    others = [node for node in graph.node if node.name not in saver_nodes]
    saver_reach = _reach(_callees([by_name[n] for n in saver_nodes if n in by_name], functions), functions)
    roots = _callees(others, functions) | (set(meta_graph.object_graph_def.concrete_functions) & set(functions))
    serving = _reach(roots | (set(functions) - saver_reach), functions)
    places = {name: set() for name in functions}
    for key, signature in meta_graph.signature_def.items():
        outputs = [by_name[t.name.split(":")[0]] for t in signature.outputs.values() if t.name.split(":")[0] in by_name]
        for name in _reach(_callees(outputs, functions), functions):
            places[name].add(key)
    found = {"serving": {}, "checkpoint": {}}
    for node in graph.node:
        found["serving"].setdefault(node.op, set()).add("the graph")
    for name, function in functions.items():
        side = "serving" if name in serving else "checkpoint"
        where = places[name] or {name}
        for node in function.node_def:
            if node.op not in functions:  # a call is checked where the callee's nodes are
                found[side].setdefault(node.op, set()).update(where)
    return found


def refused(found) -> dict[str, set[str]]:
    """Op -> places of every op outside the allow-lists, of ``graph_ops`` of each meta graph."""
    bad = {}
    serving = SERVING_OPS | EARLIER_OPS
    for ops in found:
        for side, allowed in (("serving", serving), ("checkpoint", serving | CHECKPOINT_OPS)):
            for op, places in ops[side].items():
                if op not in allowed:
                    bad.setdefault(op, set()).update(places)
    return bad


def _listed(op: str, places: set[str]) -> str:
    shown = sorted(places)[:PLACES_SHOWN]
    more = f" and {len(places) - len(shown)} more" if len(places) > len(shown) else ""
    return f"{op} (in {', '.join(shown)}{more})"


def check(version_dir) -> str:
    """The ok line of a version whose ``saved_model.pb`` holds only allowed ops (how many op types it read).

    Raises:
        Refused, one line naming every refused op and where it is; DataError when
        ``saved_model.pb`` is unreadable or not a SavedModel.
    """
    path = pathlib.Path(version_dir) / "saved_model.pb"
    found = [graph_ops(meta_graph) for meta_graph in read_saved_model(version_dir).meta_graphs]
    bad = refused(found)
    if bad:
        listed = ", ".join(_listed(op, places) for op, places in sorted(bad.items()))
        raise Refused(f"{path}: refused before running anything: {listed} "
                      f"{'is not an op' if len(bad) == 1 else 'are not ops'} of the zoo's exports "
                      "(common.serve.allowlist)")
    count = len({op for ops in found for side in ops.values() for op in side})
    return f"{path}: {count} op types, each among the zoo's exports' (nothing else runs)"
