"""What each ``zoo`` subcommand does, given its parsed arguments (see ``common.cli``)."""

from __future__ import annotations

import json
import pathlib
import sys

from common import atomic, errors
from common.ct import volumes

# Formats written as one file, so a temporary file renamed into place is atomic.
SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def synthetic_ct(args) -> None:
    from common.ct import synthetic as generator

    write = generator.write_lits_cohort if args.layout == "lits" else generator.write_cohort
    ids = write(args.out, num_cases=args.cases, seed=args.seed, size=args.size, spacing=args.spacing)
    print(f"wrote {len(ids)} cases to {args.out}")


def prepare(args) -> None:
    from common.ct import shards

    options = dict(shards.PRESETS[args.preset]) if args.preset else {}
    if args.window is not None:
        options["hu_window"] = args.window
    if args.min_label_fraction is not None:
        options["min_label_fraction"] = args.min_label_fraction
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    shards.prepare(args.cohort, args.out, **options)


TRAIN_FIELDS = ("model", "base_filters", "model_options", "epochs", "batch_size", "crop_size", "learning_rate",
                "lr_decay", "optimizer", "momentum", "weight_decay", "side_weight", "loss", "precision",
                "test_fraction", "test_cases", "seed")


def _train_config(args):
    from common.train import segmentation as training

    return training.preset_config(
        args.preset, args.epoch_scale, data=args.data, out=args.out,
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on a terminal, a line per epoch in logs
        **{field: getattr(args, field) for field in TRAIN_FIELDS},
    )


def train(args) -> None:
    from common.train import segmentation as training

    training.train(_train_config(args))


def cv(args) -> None:
    from common.train import crossval

    config = _train_config(args)
    if args.repeats:
        summary = crossval.run_repeats(config, args.out, args.repeats)
    else:
        summary = crossval.run_cv(config, args.out, args.folds)
    print(crossval.format_summary(summary, args.metrics))


def ablation(args) -> None:
    from common.studies import ablation as ablation_module

    print(ablation_module.run_study(_train_config(args), args.out, args.table, args.folds))


def compare(args) -> None:
    from common.train import crossval

    result = crossval.compare(args.run_a, args.run_b, args.metric)
    if args.metrics:
        print(crossval.format_runs({args.run_a: args.run_a, args.run_b: args.run_b}, args.metrics) + "\n")
    print(f"| unit | {args.run_a} | {args.run_b} | difference |\n|---|---|---|---|")
    for name, a, b, d in zip(result["units"], result["a"], result["b"], result["difference"]):
        print(f"| {name} | {a:.4f} | {b:.4f} | {d:+.4f} |")
    print(f"paired t-test on mean {args.metric}: t = {result['t']:.3f}, p = {result['p_value']:.4g}")


def load_run(path) -> tuple[object, dict]:
    """Loads a model from a run folder or a ``.keras`` file, with the run's config if any."""
    import keras

    import acnn_pose  # noqa: F401  (registers its layers)
    import common.nn.losses  # noqa: F401  (registers the losses a saved model refers to)
    import eas_unet  # noqa: F401  (registers its layers)
    import unet_transformer  # noqa: F401

    path = pathlib.Path(path)
    model_path = path / "model.keras" if path.is_dir() else path
    config_path = model_path.parent / "config.json"
    if not model_path.exists():
        raise errors.DataError(f"{model_path}: no such model (train one with `zoo train`)")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except (ValueError, OSError, KeyError) as error:
        raise errors.DataError(f"{model_path}: cannot be loaded as a Keras model ({error})") from None
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    return model, config


def evaluate(args) -> None:
    from common.ct import inference

    model, config = load_run(args.run)
    if not config:
        raise errors.DataError(f"{args.run}: not a run folder (no config.json)")
    cohort = args.cohort or config.get("source")
    if not cohort:
        raise ValueError("--cohort: the run does not record its cohort; give it")
    wanted = args.cases or config["split"]["test"]
    cases = {c.case_id: c for c in volumes.find_cases(cohort)}
    missing = sorted(set(wanted) - set(cases))
    if missing:
        raise errors.DataError(f"{cohort}: cases {missing} not found")
    results = inference.evaluate_cases(model, [cases[c] for c in wanted], config["num_classes"],
                                       config["hu_window"], args.batch_size, label_map=config.get("label_map"))
    atomic.write_json(pathlib.Path(args.run) / "evaluation.json",
                             {case: {str(k): v for k, v in m.items()} for case, m in results.items()})
    print(inference.format_table(results, config["class_names"], args.metrics))


def predict(args) -> None:
    import SimpleITK as sitk

    from common.ct import inference

    output = pathlib.Path(args.output)
    if output.resolve() == pathlib.Path(args.input).resolve():
        raise ValueError(f"output: {output} is the input volume; choose another path")
    if not output.name.endswith(SINGLE_FILE_SUFFIXES):
        raise ValueError(f"output: {output} needs one of the suffixes {', '.join(SINGLE_FILE_SUFFIXES)}")
    model, config = load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_volume(args.input)
    labels = inference.predict_volume(model, image, hu_window, args.batch_size, source=args.input)
    with atomic.atomic_path(output) as tmp:
        sitk.WriteImage(labels, str(tmp), useCompression=True)
    print(f"wrote {output} ({'x'.join(map(str, labels.GetSize()))}, spacing {labels.GetSpacing()})")


def export(args) -> None:
    from common.serve import export as export_module

    model, _ = load_run(args.model)
    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    kwargs = {}
    if any(n.startswith("prediction_") for n in model.output_names):  # a pose model (acnn_pose)
        from acnn_pose import serving_outputs

        kwargs["outputs"] = serving_outputs(sum(n.startswith("prediction_") for n in model.output_names))
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path, **kwargs)
    print(f"exported {version_dir}")


def request(args) -> None:
    from common.serve import client as serving_client

    image = volumes.read_slice(args.input, args.slice, args.window or volumes.DEFAULT_WINDOW)
    labels = serving_client.predict_labels(args.server, args.name, image)
    serving_client.write_labels(args.output, labels)
    print(f"wrote {args.output}: classes {sorted(set(labels.ravel().tolist()))}")


def attention_map(args) -> None:
    import numpy as np

    from common.studies import attention_maps

    model, config = load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_slice(args.input, args.slice, hu_window)
    height, width = image.shape
    padded = np.pad(image, ((0, -height % 16), (0, -width % 16)))  # the model's stride
    maps = attention_maps.cross_attention_maps(model, padded, tuple(args.pixel))
    maps = {name: m[:height, :width] for name, m in maps.items()}
    attention_maps.render(args.output, image, maps, tuple(args.pixel))
    print(f"wrote {args.output}: {', '.join(maps)}")


def demo(args) -> None:
    from common.studies import demo as demo_module

    demo_module.run(pathlib.Path(args.out), num_cases=args.cases, epochs=args.epochs,
                    base_filters=args.base_filters, seed=args.seed)


def synthetic_slides(args) -> None:
    from common.slides import synthetic as generator

    ids = generator.write_cohort(args.out, slides_per_lab=args.slides, seed=args.seed, size=args.size)
    print(f"wrote {len(ids)} slides to {args.out}")


def triplets(args) -> None:
    from common.slides import wsi

    manifest = wsi.prepare_triplets(args.slides, args.out, tile_size=args.tile_size,
                                    max_per_slide=args.max_per_slide, seed=args.seed,
                                    magnification=args.magnification)
    total = sum(sum(e["counts"]) for e in manifest["slides"].values())
    print(f"wrote {total} triplets of {len(manifest['slides'])} slides to {args.out}")


def tri_al(args) -> None:
    from common.studies import tri_al as tri_al_study
    from common.studies import tri_al_report
    from tri_al import active_learning

    train = active_learning.TrainConfig(learning_rate=args.learning_rate, momentum=args.momentum,
                                        batch_size=args.batch_size, epochs=args.epochs, patience=args.patience)
    config = tri_al_study.StudyConfig(
        data=args.data, out=args.out, strategies=tuple(args.strategy), runs=args.runs, fractions=args.fractions,
        width=args.width, backbone_weights=args.backbone_weights, source_lab=args.source_lab,
        target_lab=args.target_lab, target_split=args.target_split, iterations=args.iterations,
        budget=args.budget, candidates=args.candidates,
        initial_per_class=args.initial_per_class, source_epochs=args.source_epochs, seed=args.seed, train=train)
    print(tri_al_report.table_ii(tri_al_study.run_study(config)))


def tri_al_report(args) -> None:
    import keras

    from common.studies import tri_al as tri_al_study
    from common.studies import tri_al_report as report

    study = pathlib.Path(args.study)
    results = tri_al_study.collect_results(study)
    if not results:
        raise errors.DataError(f"{study}: no finished TRI-AL runs (run `zoo tri-al` first)")
    table = report.table_ii(results)
    with atomic.atomic_path(study / "table_ii.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    if (study / "ITER").exists():
        plan = json.loads((study / "study.json").read_text(encoding="utf-8"))
        data = pathlib.Path(plan["settings"]["data"])
        manifest = json.loads((data / "triplets.json").read_text(encoding="utf-8"))
        counts = [manifest["slides"][s]["counts"] for s in plan["target"]["train"]]
        report.plot_shares(study / "fig2_class_shares.png", report.iteration_shares(study, "ITER"),
                           reference=[sum(c) / max(1, sum(map(sum, counts))) for c in zip(*counts)])
        print(f"wrote {study / 'fig2_class_shares.png'}")
        slide = args.slide or manifest["slides"][plan["target"]["test"][0]]["slide"]
        model = keras.models.load_model(study / "ITER" / "run_0" / "model.keras", compile=False)
        grid, thumb = report.predict_slide(model, slide)
        report.plot_slide_map(study / "fig3_slide_map.png", grid, thumb)
        print(f"wrote {study / 'fig3_slide_map.png'} ({pathlib.Path(slide).name})")


def synthetic_pose(args) -> None:
    from common.pose import synthetic as generator

    counts = generator.write_dataset(args.out, num_images=args.images, seed=args.seed, size=args.size)
    print(f"wrote {sum(counts.values())} images to {args.out} ({counts['train']} train, {counts['valid']} valid)")


def train_pose(args) -> None:
    from common.train import pose as pose_training

    pose_training.train_pose(pose_training.PoseTrainConfig(
        data=args.data, out=args.out, attention=args.attention, num_stacks=args.stacks, features=args.features,
        input_size=args.input_size, batch_size=args.batch_size, stage_factor=args.stage_factor, seed=args.seed,
        verbose=1 if sys.stdout.isatty() else 2,
    ))


def _pose_run(path, input_size):
    model, config = load_run(path)
    if not any(n.startswith("prediction_") for n in model.output_names):
        raise errors.DataError(f"{path}: not a pose model (no prediction_<i> outputs)")
    size = input_size or config.get("input_size") or model.input_shape[1]
    if not size:
        raise ValueError("--input-size: the model does not fix its input size; give it")
    return model, size


def eval_pose(args) -> None:
    from common.pose import data as pose_data
    from common.pose import evaluate as pose_eval

    records = pose_data.load_split(args.data, args.split)  # bad data fails before the model loads
    model, size = _pose_run(args.run, args.input_size)
    run = pathlib.Path(args.run)
    suffix = ""
    if args.stage:
        weights = run / f"stage_{args.stage}.weights.h5"
        if not weights.exists():
            raise errors.DataError(f"{weights}: no such file (stage {args.stage} not trained in this run)")
        model.load_weights(weights)
        suffix = f"_stage_{args.stage}"
    result = pose_eval.evaluate(model, records, size, args.batch_size)
    if run.is_dir():
        atomic.write_json(run / f"pckh_{args.split}{suffix}.json", result)
    name = args.name or (run.name if run.is_dir() else run.name.removesuffix(".keras"))
    print(pose_eval.format_table({name: result}))


def pose_pictures(args) -> None:
    from common.pose import data as pose_data
    from common.studies import pose_pictures as pose_report

    records = pose_data.load_split(args.data, args.split)  # bad data fails before the model loads
    model, size = _pose_run(args.run, args.input_size)
    if not 0 <= args.index < len(records):
        raise ValueError(f"--index: {args.index} is outside the {len(records)} annotations of {args.split}")
    written = pose_report.write_pictures(model, records[args.index], args.out, size)
    print("wrote " + ", ".join(str(p) for p in written))
