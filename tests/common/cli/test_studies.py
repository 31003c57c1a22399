"""``zoo ablation`` trains the U-Transformer recipe by default: Adam 1e-4, no flips or rotations."""

from common import cli


def test_ablation_defaults_to_the_papers_recipe_and_passes_repeats(monkeypatch, capsys):
    from common.studies import ablation

    seen = {}

    def run_study(config, out, table, folds, repeats, seeds):
        seen.update(config=config, out=out, table=table, folds=folds, repeats=repeats, seeds=seeds)
        return "table"

    monkeypatch.setattr(ablation, "run_study", run_study)
    assert cli.main(["ablation", "prep", "out", "--table", "table3", "--repeats", "3"]) == 0
    config = seen["config"]
    assert (config.optimizer, config.learning_rate, config.augment) == ("adam", 1e-4, "none")
    assert (seen["table"], seen["folds"], seen["repeats"], seen["seeds"]) == ("table3", 5, 3, None)
    assert cli.main(["ablation", "prep", "out", "--augment", "flip", "--seeds", "0,10"]) == 0
    assert seen["config"].augment == "flip" and seen["seeds"] == [0, 10]
    assert capsys.readouterr().out.splitlines() == ["table", "table"]


# ``zoo organ-diagnosis``: a tiny U-Transformer and U-Net, untrained, in run folders as ``zoo train`` writes them.
ORGAN_ROWS = ["organ Dice (argmax)",
              *[f"mhca{level} gate Z: {region}" for level in (3, 2, 1)
                for region in ("organ", "other organs", "background")],
              *[f"mhca{level} entropy: {which} queries" for level in (3, 2, 1) for which in ("all", "organ")],
              *[f"{part} gradient share: organ {where}" for part in ("CE", "Dice", "CE + Dice")
                for where in ("pixels", "channel")]]


def _diagnosis_runs(root, prepared):
    import json

    import unet_transformer
    from common.ct import synthetic

    runs = {}
    for variant in ("u_transformer", "unet"):
        run = root / variant / "fold_1"
        run.mkdir(parents=True)
        unet_transformer.build_model(variant, num_classes=8, base_filters=4, heads=2).save(run / "model.keras")
        config = {"model": variant, "data": str(prepared), "class_names": list(synthetic.CLASS_NAMES),
                  "num_classes": 8, "split": {"train": ["case_000", "case_001"], "validation": [],
                                              "test": ["case_002", "case_003"]}}
        (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
        runs[variant] = run
    return runs


def _table(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]


def test_organ_diagnosis_sets_the_runs_side_by_side(tiny_prepared, tmp_path, zoo_here):
    import json

    runs = _diagnosis_runs(tmp_path, tiny_prepared)
    result = zoo_here("organ-diagnosis", runs["u_transformer"], runs["unet"], "--organ", "gallbladder",
                      "--json", tmp_path / "diagnosis.json")
    assert result.returncode == 0, result.stderr
    table = _table(result.stdout)
    assert table[0] == ["measure", str(runs["u_transformer"]), str(runs["unet"])]
    assert [row[0] for row in table[2:]] == ORGAN_ROWS
    rows = {row[0]: row[1:] for row in table[2:]}
    assert all(unet == "-" for name, (_, unet) in rows.items() if name.startswith("mhca"))
    assert all(float(value) >= 0 for name, values in rows.items() for value in values if value not in ("-", "n/a"))
    found = json.loads((tmp_path / "diagnosis.json").read_text())
    assert (found["organ"], found["label"], found["cases"]) == ("gallbladder", 6, {"case_002": 7, "case_003": 6})
    assert found["slices"] == 13 and found["data"] == str(tiny_prepared)
    ut, unet = found["runs"]
    assert (ut["model"], unet["model"], unet["mhca"]) == ("u_transformer", "unet", None)
    assert rows["mhca2 gate Z: organ"][0] == f"{ut['mhca'][1]['gate']['organ']:.3f}"
    assert rows["Dice gradient share: organ pixels"] == [f"{run['gradient_share']['dice']['pixels']:.3f}"
                                                         for run in (ut, unet)]
    assert "organ gallbladder (label 6) on 13 slices where it is present, of cases case_002 (7), case_003 (6)" \
        in result.stdout
    assert (result.stdout + result.stderr).count("diagnosing ") == 2  # one progress line per run


def test_organ_diagnosis_takes_cases_a_label_number_and_a_bare_file(tiny_prepared, tmp_path, zoo_here):
    import shutil

    runs = _diagnosis_runs(tmp_path, tiny_prepared)
    bare = tmp_path / "bare.keras"
    shutil.copy(runs["unet"] / "model.keras", bare)
    result = zoo_here("organ-diagnosis", bare, "--organ", "6", "--data", tiny_prepared, "--cases", "case_000")
    assert result.returncode == 0, result.stderr
    assert "organ gallbladder (label 6) on 5 slices where it is present, of cases case_000 (5)" in result.stdout
    assert [row[0] for row in _table(result.stdout)[2:]] == [row for row in ORGAN_ROWS if not row.startswith("mhca")]


def _without_gallbladder(cohort, root):
    """A prepared folder of case_000 with its gallbladder painted over as background."""
    import shutil

    import SimpleITK as sitk

    from common.ct import shards

    copy = root / "cohort"
    for folder in ("images", "labels"):
        (copy / folder).mkdir(parents=True)
        shutil.copy(cohort / folder / "case_000.nii.gz", copy / folder)
    shutil.copy(cohort / "dataset.json", copy)
    label = sitk.ReadImage(str(copy / "labels" / "case_000.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[array == 6] = 0
    painted = sitk.GetImageFromArray(array)
    painted.CopyInformation(label)
    sitk.WriteImage(painted, str(copy / "labels" / "case_000.nii.gz"))
    shards.prepare(copy, root / "prepared")
    return root / "prepared"


def test_organ_diagnosis_errors_name_the_argument(tiny_cohort, tiny_prepared, tmp_path, zoo_here):
    import shutil

    runs = _diagnosis_runs(tmp_path, tiny_prepared)
    ut = runs["u_transformer"]
    unknown = zoo_here("organ-diagnosis", ut, "--organ", "gallblader")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("zoo organ-diagnosis: error: --organ: 'gallblader' is none of the classes liver, "
                                      "spleen, kidney_right, kidney_left, stomach, gallbladder, pancreas (or their "
                                      "labels 1..7)")
    prepared = _without_gallbladder(tiny_cohort, tmp_path / "painted")
    absent = zoo_here("organ-diagnosis", ut, "--organ", "gallbladder", "--data", prepared, "--cases", "case_000")
    assert absent.returncode == 2
    assert absent.stderr.strip() == (f"zoo organ-diagnosis: error: --organ: gallbladder (label 6) is in no slice of "
                                     f"cases case_000 of {prepared}")
    bare = tmp_path / "bare.keras"
    shutil.copy(ut / "model.keras", bare)
    for extra, option in (([], "--data"), (["--data", str(tiny_prepared)], "--cases")):
        result = zoo_here("organ-diagnosis", bare, "--organ", "liver", *extra)
        assert result.returncode == 2
        assert result.stderr.startswith(f"zoo organ-diagnosis: error: {option}: {bare} records no ")
        assert "give --data PREPARED and --cases ID,ID" in result.stderr
    missing = zoo_here("organ-diagnosis", ut, "--organ", "liver", "--cases", "case_000,case_999")
    assert missing.returncode == 2 and f"{tiny_prepared / 'dataset.json'}: no cases case_999" in missing.stderr
