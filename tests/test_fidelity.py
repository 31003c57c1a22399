"""docs/fidelity.md names, for every point, the test that pins it (``tests/...py::test_name``): each exists."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tests_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_test_the_fidelity_table_names_exists_by_its_full_name():
    cells = re.findall(r"`([^`]+)`", (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8"))
    assert not [cell for cell in cells if cell.startswith("test_")], "name tests as tests/...py::test_name"
    named = [cell.split("::") for cell in cells if cell.startswith("tests/") and "::" in cell]
    assert len(named) > 40
    missing = [f"{path}::{name}" for path, name in named
               if not (ROOT / path).is_file() or name.split("[")[0] not in _tests_of(ROOT / path)]
    assert not missing, missing


def test_every_row_of_the_per_package_tables_names_a_test():
    rows, pinned = [], False
    for line in (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            pinned = False
        elif line.endswith("| pinned by |"):
            pinned = True
        elif pinned and not line.startswith("|---"):
            rows.append(line)
    assert len(rows) > 35
    unpinned = [row[:60] for row in rows if "`tests/" not in row.rsplit("|", 2)[1]]
    assert not unpinned, unpinned
