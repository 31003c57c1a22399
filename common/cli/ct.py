"""CT volumes: ``zoo synthetic-ct``, ``prepare``, ``evaluate``, ``predict``."""

from __future__ import annotations

import pathlib

from common import atomic, errors
from common.cli import options
from common.ct import volumes


def _add_synthetic_ct(sub):
    p = sub.add_parser("synthetic-ct", help="write a synthetic abdominal CT cohort (images/, labels/)")
    p.add_argument("out", help="cohort folder to write")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=options.numbers(int, "X,Y,Z"), default=(128, 128, 32), help="voxels X,Y,Z")
    p.add_argument("--spacing", type=options.numbers(float, "X,Y,Z"), default=None,
                   help="mm X,Y,Z (default: drawn per case, 2.5-3.0 in-plane, 3-5 between slices)")
    p.add_argument("--layout", choices=("msd", "lits"), default="msd",
                   help="msd: images/ + labels/ with 7 organs; lits: volume-N.nii + segmentation-N.nii "
                        "with liver (1) and tumours (2), as the LiTS challenge ships them")
    p.set_defaults(handler=synthetic_ct)


def _add_prepare(sub):
    p = sub.add_parser("prepare", help="write each case of a cohort once to its own TFRecord shard")
    p.add_argument("cohort", help="folder with images/ and labels/")
    p.add_argument("out", help="prepared folder to write")
    p.add_argument("--num-classes", type=int, help="classes incl. background (default: cohort dataset.json)")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default -160,240)")
    p.add_argument("--min-label-fraction", type=float, default=None,
                   help="keep slices with at least this labelled share (default 0: every slice)")
    p.add_argument("--preset", choices=("lits", "lits_tumour"),
                   help="a paper's recipe: lits = EAS U-Net's LiTS preprocessing (window -200,250, slices with "
                        ">= 1.5%% liver, tumour merged into liver); lits_tumour keeps the tumour as class 2")
    p.set_defaults(handler=prepare)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a run's held-out cases on whole volumes")
    p.add_argument("run", help="run folder (zoo train)")
    p.add_argument("--cohort", help="cohort folder (default: the one the run was prepared from)")
    p.add_argument("--cases", type=options.case_list, help="case ids (default: the run's held-out cases)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--metrics", type=options.metric_names, default=("dice",), help=options.METRICS_HELP.replace(
        "default dice,hd95,assd", "default dice"))
    p.set_defaults(handler=evaluate)


def _add_predict(sub):
    p = sub.add_parser("predict", help="segment one volume; the output keeps the input's geometry")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("input", help="CT volume (NIfTI, MHA/MHD, NRRD or a DICOM folder)")
    p.add_argument("output", help="label volume to write (e.g. .nii.gz)")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default: the run's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(handler=predict)


# Formats written as one file, so a temporary file renamed into place is atomic.
SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def synthetic_ct(args) -> None:
    from common.ct import synthetic as generator

    write = generator.write_lits_cohort if args.layout == "lits" else generator.write_cohort
    ids = write(args.out, num_cases=args.cases, seed=args.seed, size=args.size, spacing=args.spacing)
    print(f"wrote {len(ids)} cases to {args.out}")


def prepare(args) -> None:
    from common.ct import shards

    settings = dict(shards.PRESETS[args.preset]) if args.preset else {}
    if args.window is not None:
        settings["hu_window"] = args.window
    if args.min_label_fraction is not None:
        settings["min_label_fraction"] = args.min_label_fraction
    if args.num_classes is not None:
        settings["num_classes"] = args.num_classes
    shards.prepare(args.cohort, args.out, **settings)


def evaluate(args) -> None:
    from common import registry
    from common.ct import inference

    model, config = registry.load_run(args.run)
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

    from common import registry
    from common.ct import inference

    output = pathlib.Path(args.output)
    if output.resolve() == pathlib.Path(args.input).resolve():
        raise ValueError(f"output: {output} is the input volume; choose another path")
    if not output.name.endswith(SINGLE_FILE_SUFFIXES):
        raise ValueError(f"output: {output} needs one of the suffixes {', '.join(SINGLE_FILE_SUFFIXES)}")
    model, config = registry.load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_volume(args.input)
    labels = inference.predict_volume(model, image, hu_window, args.batch_size, source=args.input)
    with atomic.atomic_path(output) as tmp:
        sitk.WriteImage(labels, str(tmp), useCompression=True)
    print(f"wrote {output} ({'x'.join(map(str, labels.GetSize()))}, spacing {labels.GetSpacing()})")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_synthetic_ct, _add_prepare, _add_evaluate, _add_predict)
