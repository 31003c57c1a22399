"""The README's "Training from your own script" example runs as printed, at a tiny size."""

import pathlib
import subprocess
import sys

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


def test_readme_training_example_runs(tiny_prepared, tmp_path):
    (tmp_path / "prepared").symlink_to(tiny_prepared, target_is_directory=True)
    done = subprocess.run([sys.executable, "-c", readme_script()], cwd=tmp_path, capture_output=True, text=True,
                          encoding="utf-8", timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT),
                                                              "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained" in done.stdout
