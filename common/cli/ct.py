"""CT volumes: ``zoo synthetic-ct``, ``prepare``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import hashlib
import logging
import pathlib
import time

from common import atomic, errors
from common.cli import options
from common.ct import volumes

logger = logging.getLogger(__name__)


def _add_synthetic_ct(sub):
    p = sub.add_parser("synthetic-ct", help="write a synthetic abdominal CT cohort (images/, labels/)")
    p.add_argument("out", help="cohort folder to write")
    options.renamed(p, "--cases", "--num-cases", type=int, default=12, help="cases to write (default 12)")
    p.add_argument("--seed", type=int, default=0)
    options.renamed(p, "--size", "--shape", type=options.numbers(int, "X,Y,Z"), default=None,
                    help="voxels X,Y,Z (default 128,128,32; 128,128,24 for --layout context)")
    options.renamed(p, "--spacing", "--voxel-size", type=options.numbers(float, "X,Y,Z"), default=None,
                    help="mm X,Y,Z (default: drawn per case, 2.5-3.0 in-plane, 3-5 between slices)")
    p.add_argument("--layout", choices=("msd", "lits", "context"), default="msd",
                   help="msd: images/ + labels/ with 7 organs; lits: volume-N.nii + segmentation-N.nii "
                        "with liver (1) and tumours (2), as the LiTS challenge ships them; context: msd's "
                        "layout with organ look-alikes labelled background and a low-contrast pancreas, where "
                        "only position relative to the other organs tells them apart (distractors/ marks "
                        "them; common.ct.synthetic_context)")
    p.add_argument("--noise-hu", type=float, default=None,
                   help="standard deviation of the additive Gaussian noise in HU (default 20)")
    p.add_argument("--distractors", type=int, default=None,
                   help="--layout context only: unlabelled kidney- and spleen-like blobs per case, placed where "
                        "those organs never are (default 2)")
    p.add_argument("--cue-hu", type=float, default=None,
                   help="--layout context only: HU added to every distractor, making it locally "
                        "distinguishable: the study's positive control (default 0, locally identical)")
    p.set_defaults(handler=synthetic_ct)


def _add_prepare(sub):
    p = sub.add_parser("prepare", help="write each case of a cohort once to its own TFRecord shard")
    p.add_argument("cohort", help="cohort folder: the Decathlon's (imagesTr/, labelsTr/, dataset.json), nnU-Net v2's "
                                  "raw (<case>_0000 images), images/ + labels/, or LiTS's volume-N.nii")
    p.add_argument("out", help="prepared folder to write")
    p.add_argument("--num-classes", type=int, help="classes incl. background (default: cohort dataset.json)")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default -160,240)")
    p.add_argument("--min-label-fraction", type=float, default=None,
                   help="keep slices with at least this labelled share (default 0: every slice)")
    p.add_argument("--preset", choices=("lits", "lits_tumour"),
                   help="a paper's recipe: lits = EAS U-Net's LiTS preprocessing (window -200,250, slices with "
                        ">= 1.5%% liver, tumour merged into liver); lits_tumour keeps the tumour as class 2")
    p.set_defaults(handler=prepare)


def _tile(text: str):
    """--tile: "H,W", one side "S" for a square, or "whole"."""
    if text in ("whole", "auto"):
        return text
    try:
        sides = tuple(int(v) for v in text.split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W (or one side, or 'whole'), got {text!r}")
    return sides


def _step(text: str) -> float:
    try:
        step = float(text)
    except ValueError:
        step = -1.0
    if not 0 < step <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of the tile in (0, 1], got {text!r}")
    return step


def inference_options(p):
    """nnU-Net's inference options, shared by ``predict`` and ``evaluate`` (``common.ct.ensemble``)."""
    p.add_argument("--tile", type=_tile, default="auto",
                   help="sliding window H,W over each slice, Gaussian-weighted (sigma = tile/8), or 'whole' "
                        "(default: the training crop when the run trained on crops smaller than its slices)")
    p.add_argument("--step", type=_step, default=0.5, help="distance between tiles, fraction of the tile (0.5)")
    p.add_argument("--tta", choices=("none", "mirror"), default=None,
                   help="test-time mirroring along x, y and both (default: mirror when training flipped)")
    p.add_argument("--spacing", choices=("none", "auto"), default="none",
                   help="auto: predict at the training cohort's median in-plane spacing, resampling the image "
                        "and the probabilities back (default none: the volume's own)")
    p.add_argument("--postprocess", action="store_true",
                   help="keep the largest connected component of the classes where `zoo cv` found it raised the "
                        "held-out Dice (a zoo cv folder's postprocessing.json)")
    p.add_argument("--batch-size", type=options.positive(int), default=8,
                   help="slices per forward pass (8); with --pipeline, the chunk a request holds at once: its peak "
                        "memory grows with it, not with the volume's depth")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a run's held-out cases on whole volumes")
    p.add_argument("run", help="run folder (zoo train), or a zoo cv folder: the folds' ensemble on cases held "
                               "out of every fold")
    p.add_argument("--cohort", help="cohort folder (default: the one the run was prepared from)")
    p.add_argument("--cases", type=options.case_list,
                   help="case ids (default: the run's held-out cases; for a cv folder the cohort's cases no "
                        "fold trained on)")
    inference_options(p)
    p.add_argument("--metrics", type=options.metric_names, default=("dice",), help=options.METRICS_HELP.replace(
        "default dice,hd95,assd", "default dice"))
    p.set_defaults(handler=evaluate)


def _add_predict(sub):
    p = sub.add_parser("predict", help="segment a volume, or every volume of a folder; outputs keep their input's "
                                       "geometry")
    p.add_argument("model", help="run folder, .keras file, or zoo cv folder (the mean of its folds)")
    p.add_argument("input", help="CT volume (NIfTI, MHA/MHD, NRRD or a DICOM folder), or a folder of them, or a "
                                 "Decathlon or nnU-Net v2 dataset folder (its imagesTs)")
    p.add_argument("output", help="label volume to write (e.g. .nii.gz); for a folder in, a folder: "
                                  "OUTPUT/<case>.nii.gz as nnU-Net names them (channel suffix _0000 dropped)")
    p.add_argument("--overwrite", action="store_true",
                   help="folder in: predict cases whose outputs exist again (default: skip them, so a rerun "
                        "finishes an interrupted one); a single output file is always replaced")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default: the run's)")
    inference_options(p)
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write the class probabilities (before post-processing) as a float32 vector image "
                        "of the input's geometry, class axis last: OUTPUT's name (each case's) + _probabilities")
    p.set_defaults(handler=predict)


def synthetic_ct(args) -> None:
    from common.ct import synthetic, synthetic_context, synthetic_lits

    context = {"distractors": args.distractors, "cue_hu": args.cue_hu}
    if args.layout != "context":
        for name, value in context.items():
            if value is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to --layout context only, not --layout "
                                 f"{args.layout}")
    write = {"msd": synthetic.write_cohort, "lits": synthetic_lits.write_lits_cohort,
             "context": synthetic_context.write_context_cohort}[args.layout]
    # Options left out take the generator's own defaults.
    given = {"size": args.shape, "noise_hu": args.noise_hu, **context}
    ids = write(args.out, num_cases=args.num_cases, seed=args.seed, spacing=args.voxel_size,
                **{name: value for name, value in given.items() if value is not None})
    logger.info(f"wrote {len(ids)} cases to {args.out}")


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


def _loaded_with_options(path, args):
    """The model(s) at ``path`` and the inference options of ``args`` (defaults from their training)."""
    from common.ct import ensemble

    loaded = ensemble.load(path)
    _check_segmentation(loaded, pathlib.Path(path), args.command)
    if args.batch_size < 1:
        raise ValueError(f"batch-size must be >= 1, got {args.batch_size}")
    return loaded, ensemble.options_for(loaded, args.tile, args.step, args.tta, args.spacing, args.postprocess)


def _check_segmentation(loaded, path: pathlib.Path, command: str) -> None:
    """Refuses a pose or tile model in one line, before Keras meets a CT slice it cannot take."""
    from common import registry

    for model, name, config in zip(loaded.models, loaded.names, loaded.configs):
        entry = registry.entry_of(model, config)
        if entry.task != "segmentation":
            folder = loaded.folder / name if loaded.folder is not None else path
            file = folder / "model.keras" if folder.is_dir() else folder
            raise errors.DataError(f"{file}: a {entry.task} model; zoo {command} takes a segmentation model")


def _evaluated_cases(loaded, args, cohort) -> list:
    """The cases to score: --cases, else the run's held-out ones, else (cv folder) those no fold trained on."""
    from common.ct import ensemble, layouts

    found = layouts.read_cohort(cohort)
    logger.info(f"cohort layout: {found.layout.description}")
    cases = {c.case_id: c for c in found.cases}
    trained = ensemble.trained_cases(loaded)
    if args.cases:
        wanted = args.cases
    elif loaded.folder is None:
        wanted = loaded.config["split"]["test"]
    else:
        wanted = sorted(set(cases) - trained)
        if not wanted:
            raise ValueError(f"cases: every case of {cohort} trained a fold of {loaded.folder}; give cases "
                             "held out of every fold (--cases, --cohort)")
    missing = sorted(set(wanted) - set(cases))
    if missing:
        raise errors.DataError(f"{cohort}: cases {missing} not found")
    if loaded.folder is not None and set(wanted) & trained:
        logger.warning(f"warning: cases {sorted(set(wanted) & trained)} trained some fold; their scores are optimistic")
    return [cases[c] for c in wanted]


def evaluate(args) -> None:
    from common.ct import inference

    loaded, how = _loaded_with_options(args.run, args)
    config = loaded.config
    if not config:
        raise errors.DataError(f"{args.run}: not a run folder (no config.json)")
    cohort = args.cohort or config.get("source")
    if not cohort:
        raise ValueError("--cohort: the run does not record its cohort; give it")
    cases = _evaluated_cases(loaded, args, cohort)
    logger.info(f"evaluating {len(cases)} cases with {len(loaded.models)} model(s): {how.describe()}")
    results = inference.evaluate_cases(loaded.models, cases, config["num_classes"], config["hu_window"],
                                       args.batch_size, loaded.stride, label_map=config.get("label_map"),
                                       options=how)
    run = pathlib.Path(args.run)
    atomic.write_json(run / "evaluation.json", {case: {str(k): v for k, v in m.items()} for case, m in results.items()})
    # How it was measured, for the model card's eval_metrics; the digest ties it to this evaluation.json, so a
    # later evaluate that fails between the two writes leaves no options describing the wrong scores.
    atomic.write_json(run / "evaluation_options.json", {
        "evaluation_sha256": hashlib.sha256((run / "evaluation.json").read_bytes()).hexdigest(),
        "inference": how.describe(),
        "cohort": ("another cohort" if args.cohort else "the run's cohort") + (", cases given" if args.cases else "")})
    print(inference.format_table(results, config["class_names"], args.metrics))  # the result: stdout, even under -q


def _predict_case(loaded, how, args, hu_window, source) -> list:
    """The label image of one volume (and its probabilities with --save-probabilities), as a list."""
    from common.ct import inference

    image = volumes.read_volume(source)
    result = inference.predict_volume(loaded.models, image, hu_window, args.batch_size, loaded.stride, source, how,
                                      args.save_probabilities)
    return list(result) if args.save_probabilities else [result]


def predict(args) -> None:
    from common.ct import predictions

    output = pathlib.Path(args.output)
    if not output.name.endswith(predictions.SINGLE_FILE_SUFFIXES) and pathlib.Path(args.input).is_dir():
        return _predict_folder(args)
    if not output.name.endswith(predictions.SINGLE_FILE_SUFFIXES):
        raise ValueError(f"output: {output} needs one of the suffixes {', '.join(predictions.SINGLE_FILE_SUFFIXES)} "
                         "(a folder of outputs takes a folder of inputs)")
    written = predictions.outputs_of(output, args.save_probabilities)
    for path in written:
        if path.resolve() == pathlib.Path(args.input).resolve():
            raise ValueError(f"output: {path} is the input volume; choose another path")
    loaded, how = _loaded_with_options(args.model, args)
    hu_window = args.window or loaded.config.get("hu_window", volumes.DEFAULT_WINDOW)
    logger.info(f"predicting {args.input} with {len(loaded.models)} model(s): {how.describe()}")
    start = time.monotonic()
    result = _predict_case(loaded, how, args, hu_window, args.input)
    predictions.write_volumes(list(zip(written, result)))
    logger.info(f"wrote {', '.join(map(str, written))} ({'x'.join(map(str, result[0].GetSize()))}, spacing "
                f"{result[0].GetSpacing()}) in {time.monotonic() - start:.1f} s")


def _predict_folder(args) -> None:
    """Every volume of a folder (a dataset's imagesTs) to OUTPUT/<case>.nii.gz, resumable."""
    from common.ct import layouts, predictions

    description, cases = layouts.prediction_inputs(args.input, args.output)
    predictions.check_folder_target(cases, pathlib.Path(args.output))  # before the models load
    loaded, how = _loaded_with_options(args.model, args)
    hu_window = args.window or loaded.config.get("hu_window", volumes.DEFAULT_WINDOW)
    logger.info(f"input layout: {description}")
    logger.info(f"predicting {len(cases)} volumes of {args.input} with {len(loaded.models)} model(s): {how.describe()}")
    run = predictions.predict_folder(
        cases, args.output, lambda case: _predict_case(loaded, how, args, hu_window, case.image),
        args.save_probabilities, args.overwrite)
    replaced = f" ({run.replaced} replaced)" if run.replaced else ""
    skipped = f"; {run.skipped} skipped, their outputs exist (--overwrite predicts them again)" if run.skipped else ""
    logger.info(f"predicted {run.predicted} of {len(cases)} cases into {args.output}{replaced}{skipped}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_synthetic_ct, _add_prepare, _add_evaluate, _add_predict)
