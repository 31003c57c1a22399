"""The README's "Training from your own script" example runs as printed, at a tiny size."""

import pathlib
import re
import shlex

import keras

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Only the sizes change: the tiny cohort's slices, a narrow model, two steps.
SMALLER = {"crop_size=128": "crop_size=32", "base_filters=64": "base_filters=4", "epochs=50": "epochs=1",
           "steps_per_epoch=200": "steps_per_epoch=2"}


def readme_script() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Training from your own script"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    for old, new in SMALLER.items():
        assert old in code, f"README example no longer has {old!r}: update SMALLER"
        code = code.replace(old, new)
    return code + "\nprint('trained', model.count_params())\n"


def test_readme_training_example_runs(tiny_prepared, tmp_path, monkeypatch, capsys):
    # In this process (a script's imports are the zoo's, already loaded here), in a folder of its own.
    (tmp_path / "prepared").symlink_to(tiny_prepared, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    with helpers.dtype_policy(keras.config.dtype_policy().name):  # the script sets Keras' global policy
        exec(compile(readme_script(), "README.md", "exec"), {"__name__": "__main__"})
    assert "trained" in capsys.readouterr().out


# Placeholders of the README's synopses that an option's type must read as a value.
PLACEHOLDERS = {"N": "2", "ROW,COL": "32,40"}


def _synopsis_variant(line: str) -> list[str]:
    """One command of a synopsis line: comments, "..." and "[x options]" dropped, the first of a|b alternatives."""
    line = line.split("   #")[0].split("  #")[0]
    line = re.sub(r"\[[a-z ]+ options\]", "", line).replace("...", "")
    line = re.sub(r"\s\|\s[^\]]*", "", line)  # [--repeats 3 | --seeds 0,10,20] -> [--repeats 3
    tokens = shlex.split(line.replace("[", " ").replace("]", " "))
    return [PLACEHOLDERS.get(t, t.split("|")[0] if "|" in t and not t.startswith("-") else t) for t in tokens[1:]]


def test_every_zoo_line_of_the_readme_parses_as_written():
    from common import cli

    lines, language = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            language = None if language is not None else line[3:].strip()
        elif language in ("", "sh", "bash") and line.strip().startswith("zoo "):
            lines.append(line.strip())
    assert len(lines) > 25
    failures = []
    for line in lines:
        try:
            cli.parse_args(_synopsis_variant(line))
        except SystemExit as error:  # argparse's usage error
            failures.append((line, error.code))
    assert not failures, failures
