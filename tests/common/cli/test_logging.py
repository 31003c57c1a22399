"""How much ``zoo`` says (``common.cli.verbosity``): the default as ``print`` wrote it, ``-q``, ``-v``, and a library
that prints nothing until someone configures logging."""

import logging

import pytest

from common.cli import verbosity


def _prepare_lines(out) -> str:
    """What ``zoo prepare`` printed on conftest's tiny cohort before it logged (four cases of 12 slices)."""
    return ("cohort layout: images/ + labels/\n" + "".join(f"prepared case_00{i}: 12/12 slices\n" for i in range(4))
            + f"wrote {out / 'dataset.json'}: 4 cases\n")


def test_by_default_a_command_prints_the_lines_it_printed_before(zoo_here, tiny_cohort, tmp_path):
    done = zoo_here("prepare", tiny_cohort, tmp_path / "p")
    assert (done.returncode, done.stdout, done.stderr) == (0, _prepare_lines(tmp_path / "p"), "")


@pytest.mark.parametrize("flags", [("-q", "prepare", "{cohort}", "{out}"), ("prepare", "{cohort}", "{out}", "--quiet")],
                         ids=["before", "after"])
def test_quiet_prints_nothing_and_an_error_still_its_one_line(zoo_here, tiny_cohort, tmp_path, flags):
    out = tmp_path / "p"
    done = zoo_here(*(flag.format(cohort=tiny_cohort, out=out) for flag in flags))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (out / "dataset.json").is_file()  # quiet, not idle
    failed = zoo_here(*(flag.format(cohort=tmp_path / "nothing", out=out) for flag in flags))
    assert (failed.returncode, failed.stdout) == (2, "")
    assert failed.stderr == f"zoo prepare: error: {tmp_path / 'nothing'}: no such cohort folder\n"


def test_verbose_adds_the_options_as_resolved(zoo_here, tiny_cohort, tmp_path):
    out = tmp_path / "p"
    done = zoo_here("prepare", tiny_cohort, out, "-v", "--window", "-200,250")
    first, rest = done.stdout.split("\n", 1)
    assert first == (f"zoo prepare options: cohort={tiny_cohort}, out={out}, num_classes=None, window=(-200.0, 250.0), "
                     "min_label_fraction=None, preset=None")
    assert (done.returncode, rest) == (0, _prepare_lines(out))


def test_quiet_and_verbose_together_are_a_usage_error(zoo_here):
    done = zoo_here("-q", "-v", "prepare", "COHORT", "OUT")
    assert done.returncode == 2 and "-v/--verbose: not allowed with argument -q/--quiet" in done.stderr


def test_configured_shows_warnings_under_quiet_leaves_other_loggers_and_restores(capsys):
    tensorflow, root = logging.getLogger("tensorflow"), logging.getLogger()
    before = (list(tensorflow.handlers), tensorflow.level, list(root.handlers), root.level)
    with verbosity.configured(logging.WARNING):
        logging.getLogger("common.ct.shards").info("progress")
        logging.getLogger("acnn_pose.staged").warning("warning: a warning")
        logging.getLogger("tensorflow").warning("not ours")  # reaches pytest's capture, not our stdout
        assert verbosity.progress() == 0  # no progress bar under -q either
        assert (list(tensorflow.handlers), tensorflow.level, list(root.handlers), root.level) == before
    with verbosity.configured(logging.INFO):
        assert verbosity.progress() == 2  # stdout is no terminal here: a line per epoch
    assert capsys.readouterr().out == "warning: a warning\n"
    for name in verbosity.PACKAGES:
        zoo = logging.getLogger(name)
        assert (zoo.handlers, zoo.level, zoo.propagate) == ([], logging.NOTSET, True)


def test_the_library_adds_no_handler_and_prints_nothing_unconfigured(capfd):
    """A ``model.fit`` script that imports the zoo and never configures logging sees no line of it."""
    import acnn_pose  # noqa: F401  every package, imported as a script would
    import eas_unet  # noqa: F401
    import tri_al  # noqa: F401
    import unet_transformer  # noqa: F401
    from common.slides import reader

    zoo = [name for name in logging.root.manager.loggerDict if name.split(".")[0] in verbosity.PACKAGES]
    assert "acnn_pose.staged" in zoo and "common.ct.shards" in zoo
    assert not [name for name in zoo if getattr(logging.getLogger(name), "handlers", None)]
    assert not logging.getLogger("common.slides.reader").isEnabledFor(logging.INFO)  # warnings only, Python's default
    assert reader.check_magnification("b.svs", 20.0) is True  # logs its INFO line "... upsampling 2x"
    assert capfd.readouterr() == ("", "")
