"""The house rules of docs/architecture.md, read from the source's imports (nothing is imported here).

Model packages import keras, numpy and ``common.nn`` only (and never each other); outside the model
packages only ``common.registry``, ``common/studies/`` and the benchmarks name a model package; the
wings' imports form no cycle; the generic wings name no model and no model's output.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL_PACKAGES = ("unet_transformer", "eas_unet", "acnn_pose", "tri_al")
# What a model package's modules may import besides the standard library.
MODEL_ALLOWED = ("keras", "numpy", "common.nn", "common.atomic", "common.errors")


def _imports(path: pathlib.Path) -> set[str]:
    """The dotted names a module imports, at any depth (function-local imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from common import atomic`` imports common.atomic (and the package, which is a docstring).
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            if node.module.count(".") or node.module not in ("common",):
                names.add(node.module)
    return names


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _modules(*folders) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


def _is_stdlib(name: str) -> bool:
    import sys

    return name.split(".")[0] in sys.stdlib_module_names


@pytest.mark.parametrize("package", MODEL_PACKAGES)
def test_model_packages_import_keras_numpy_and_common_nn_only(package):
    bad = {module: sorted(n for n in names if not _is_stdlib(n) and not n.startswith(MODEL_ALLOWED)
                          and not n.startswith(package))
           for module, names in _modules(package).items()}
    assert not {m: b for m, b in bad.items() if b}, bad


def test_only_the_registry_and_the_studies_name_a_model_package():
    offenders = {}
    for module, names in _modules("common").items():
        if module == "common.registry" or module.startswith("common.studies"):
            continue
        named = sorted(n for n in names if n.split(".")[0] in MODEL_PACKAGES)
        if named:
            offenders[module] = named
    assert not offenders


def test_common_nn_stays_keras_only():
    for module, names in _modules("common/nn").items():
        assert not any(n.startswith(("tensorflow", "jax", "torch")) for n in names), module
        assert not any(n.startswith("common.") and not n.startswith("common.nn") for n in names), module


def test_no_import_cycle_between_modules():
    modules = _modules("common", *MODEL_PACKAGES)
    graph = {m: {n for n in names if n in modules and n != m} for m, names in modules.items()}
    # A package's __init__ may re-export its own modules; only cycles through other modules count.
    graph = {m: {n for n in deps if not (m.endswith(n) or n.startswith(m + "."))} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


# Generic code knows no model: what a model is comes from the registry (its entry, the builder a file records),
# never from a name or an output's name in code, docstrings or comments.
GENERIC = ("common/train", "common/serve", "common/ct", "common/pose", "common/slides")
OUTPUT_PREFIXES = ("side_", "mask_", "prediction_")


def test_generic_code_names_no_model_and_no_output_prefix():
    from common import registry  # the one import of this module: the names are the registry's

    assert {"unet", "eas_unet", "acnn", "tri_cnn"} <= set(registry.names())
    names = re.compile(r"\b(" + "|".join(registry.names()) + r")\b")
    prefixes = re.compile(r"""["'](""" + "|".join(OUTPUT_PREFIXES) + ")")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for folder in GENERIC for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if names.search(line) or prefixes.search(line)]
    assert not found, "\n".join(found)
