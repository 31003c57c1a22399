"""The README's "Training from your own script" examples (two papers' recipes) run as printed, at a tiny size."""

import pathlib
import re
import shlex

import keras

from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Only the sizes change: the tiny cohort's slices, a narrow model, one epoch of two steps.
TINY = "batch_size=2, crop_size=32, epochs=1, base_filters=4"
SMALLER = {"paper = eas_unet.RECIPE": f"paper = dataclasses.replace(eas_unet.RECIPE, {TINY})",
           "paper = unet_transformer.RECIPE": f"paper = dataclasses.replace(unet_transformer.RECIPE, {TINY})",
           "crop_size=128": "crop_size=32", "steps_per_epoch=200": "steps_per_epoch=2"}


def readme_script() -> str:
    """Every python block of the section, in order, one script (the second uses the first's data)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Training from your own script"):]
    section = section[:section.index("\n## ", 1)]
    blocks = [block.split("\n```", 1)[0] for block in section.split("```python\n")[1:]]
    assert len(blocks) == 2, "the README shows two papers' recipes"
    code = "import dataclasses\n" + "\nprint('trained', model.count_params())\n".join(blocks)
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
    assert capsys.readouterr().out.count("trained") == 2


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
