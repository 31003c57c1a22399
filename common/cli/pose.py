"""Pose: ``zoo synthetic-pose``, ``train-pose``, ``eval-pose``, ``pose-pictures``."""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from common import atomic, errors
from common.cli import options, verbosity

logger = logging.getLogger(__name__)


def _add_synthetic_pose(sub):
    p = sub.add_parser("synthetic-pose", help="write synthetic stick-figure pose data (images/, annot/*.json)")
    p.add_argument("out", help="data folder to write")
    p.add_argument("--images", type=int, default=200, help="images (the last 20%% are the valid split)")
    options.renamed(p, "--size", "--image-size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clutter", choices=("none", "shapes", "figures"), default="none",
                   help="none: the original images, byte for byte; shapes: textured background and loose limbs of the "
                        "figures' colours and widths; figures: shapes plus unannotated partial second figures "
                        "(default none; recorded in DATA/dataset.json)")
    p.set_defaults(handler=synthetic_pose)


def _add_train_pose(sub):
    """``--model`` is a pose model of the registry (``zoo models``); the options its paper's recipe sets default to
    that recipe (``PoseTrainConfig``). As ``zoo train``'s, this parser imports no registry (``zoo --help`` and argument
    errors never wait for TensorFlow): the names are checked when the command runs, a ValueError listing them."""
    p = sub.add_parser("train-pose", help="train a pose model by its paper's staged procedure (stages A/B/C) on "
                                          "MPII-style data")
    p.add_argument("data", help="data folder: images/ and annot/train.json (HRNet's MPII, zoo synthetic-pose) or "
                                "annotations/mpii_train.json (mmpose's)")
    p.add_argument("out", help="run folder (rerun the same command to resume)")
    p.add_argument("--model", help="a pose model of `zoo models` (default: the first pose model it lists)")
    # Kept one release: the registry's first pose model (with attention masks) or its second (the plain network
    # it builds on), resolved when the command runs (``_attention_model``).
    p.add_argument("--attention", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
    recipe = "(default: the model's recipe, which `zoo models` lists)"
    p.add_argument("--stacks", type=int, help=f"stacked stages of the network {recipe}")
    options.renamed(p, "--features", "--base-filters", type=int,
                    help=f"the channel count the model's other widths are fixed multiples of {recipe}")
    p.add_argument("--input-size", type=int, help=f"crop side, a multiple of the model's stride {recipe}")
    p.add_argument("--batch-size", type=int, help=f"crops per step {recipe}")
    p.add_argument("--stage-factor", type=float, default=1.0,
                   help="multiplies every stage's epochs and drop epochs (1: the paper's)")
    p.add_argument("--lr-scale", type=options.positive(float), default=1.0,
                   help="multiplies every stage's learning rate, drops kept (1: the paper's; zoo sweep-lr sets it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, metavar="MODEL.keras",
                   help="start from this pose model's weights and skip the stages that train the heatmaps (e.g. a "
                        "released checkpoint from `zoo convert`); its stacks, base filters and model must match")
    p.add_argument("--overwrite", action="store_true",
                   help="train afresh in a run folder that holds a run (by default a rerun of the same options "
                        "resumes it, and one of other options is refused); the old files are replaced as the new "
                        "ones are written")
    p.set_defaults(handler=train_pose)


def _add_eval_pose(sub):
    p = sub.add_parser("eval-pose", help="PCKh@0.5 of a pose run (flip test), the paper's Table 1 columns, Mean@0.1")
    p.add_argument("run", help="run folder (zoo train-pose) or .keras file")
    p.add_argument("data", help="data folder")
    p.add_argument("--split", default="valid",
                   help="the split to score: annot/SPLIT.json, or mmpose's annotations/mpii_val.json for valid "
                        "(default valid)")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the run's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--name", default=None, help="row name in the table (default: the run folder's name)")
    p.add_argument("--stage", choices=("A", "B", "C"), default=None,
                   help="score the weights the run had after this training stage (RUN/stage_X.weights.h5)")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the flipped crop's heatmaps, flipped back (Newell, HRNet, mmpose; default on)")
    p.add_argument("--flip-shift", type=int, choices=(0, 1), default=0,
                   help="shift the flipped-back heatmaps right by this many pixels (HRNet/mmpose: 1; default 0, "
                        "this code's pixel-centre targets need none)")
    p.set_defaults(handler=eval_pose)


def _add_compare_pose(sub):
    p = sub.add_parser("compare-pose", help="PCKh of two folders of pose runs (one per seed) paired by run name: "
                                            "mean ± std, 95%% CI, paired t-test")
    p.add_argument("runs_a", help="folder of runs (e.g. STUDY/MODEL with seed_0/, seed_1/, ...), each scored "
                                  "by zoo eval-pose")
    p.add_argument("runs_b", help="folder of the other method's runs, the same run names")
    p.add_argument("--column", default="Total", help="the Table 1 column to compare (default Total)")
    p.add_argument("--split", default="valid", help="the split the runs were scored on (default valid)")
    p.set_defaults(handler=compare_pose)


def _add_pose_pictures(sub):
    p = sub.add_parser("pose-pictures", help="skeleton overlay, heatmaps (Fig. 1) and attention masks (Fig. 6) as PNG")
    p.add_argument("run", help="run folder (zoo train-pose) or .keras file")
    p.add_argument("data", help="data folder")
    p.add_argument("out", help="folder for the PNG files")
    p.add_argument("--split", default="valid")
    p.add_argument("--index", type=int, default=0, help="which annotation of the split")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the run's)")
    p.add_argument("--mask-contrast", action="store_true",
                   help="also print, per stage, the mask's mean on the annotated limbs and elsewhere and its AUC "
                        "over the whole split (0.5: blind to the figure), and write them to OUT/mask_contrast.json")
    p.set_defaults(handler=pose_pictures)


def synthetic_pose(args) -> None:
    from common.pose import synthetic as generator

    counts = generator.write_dataset(args.out, num_images=args.images, seed=args.seed, size=args.image_size,
                                     clutter=args.clutter)
    logger.info(f"wrote {sum(counts.values())} images to {args.out} ({counts['train']} train, {counts['valid']} "
                f"valid; clutter {args.clutter})")


def _attention_model(args) -> str | None:
    """``--model``, or what the deprecated ``--attention`` / ``--no-attention`` stand for, with a line saying so."""
    from common import registry

    if args.attention is None:
        return args.model
    flag = "--attention" if args.attention else "--no-attention"
    model = registry.names("pose")[0 if args.attention else 1]
    print(f"zoo train-pose: {flag} is deprecated and goes in the next release; use --model {model}", file=sys.stderr)
    if args.model not in (None, model):
        raise ValueError(f"{flag}: the old spelling of --model {model}, which --model {args.model} contradicts; "
                         "give --model only")
    return model


def train_pose(args) -> None:
    from common.train import pose as pose_training

    pose_training.train_pose(pose_training.PoseTrainConfig(
        data=args.data, out=args.out, model=_attention_model(args), num_stacks=args.stacks,
        base_filters=args.base_filters,
        input_size=args.input_size, batch_size=args.batch_size, stage_factor=args.stage_factor, lr_scale=args.lr_scale,
        seed=args.seed,
        init=args.init, verbose=verbosity.progress(),
    ), overwrite=args.overwrite)


def _pose_run(path, input_size):
    from common import registry

    model, config = registry.load_run(path)
    entry = registry.entry_of(model, config)
    if entry.task != "pose":
        raise errors.DataError(f"{path}: a {entry.task} model ({entry.name}); this command takes a pose model")
    size = input_size or config.get("input_size") or model.input_shape[1]
    if not size:
        raise ValueError("--input-size: the model does not fix its input size; give it")
    return model, size


def eval_pose(args) -> None:
    from common.pose import data as pose_data
    from common.pose import evaluate as pose_eval
    from common.studies import pose_pictures as pose_report

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
    suffix += "" if args.flip_test else "_noflip"
    suffix += f"_shift{args.flip_shift}" if args.flip_test and args.flip_shift else ""
    result = pose_eval.evaluate(model, records, size, args.batch_size, flip_test=args.flip_test,
                                shift=args.flip_shift)
    name = args.name or (run.name if run.is_dir() else run.name.removesuffix(".keras"))
    if run.is_dir():
        atomic.write_json(run / f"pckh_{args.split}{suffix}.json", pose_eval.json_ready(result))
        curve = pose_report.pckh_curve_figure({name: (result["curve"]["thresholds"], result["curve"]["Total"])})
        atomic.write_image(run / f"pckh_{args.split}{suffix}.png", curve, rgb=True)
    print(pose_eval.format_table({name: result}))


def compare_pose(args) -> None:
    from common import stats
    from common.pose import evaluate as pose_eval
    from common.train import convergence
    from common.train import pose as pose_training

    result = pose_eval.compare_groups(args.runs_a, args.runs_b, args.column, args.split)
    print(f"| run | {args.runs_a} | {args.runs_b} | difference |\n|---|---|---|---|")
    for name, a, b, d in zip(result["runs"], result["a"], result["b"], result["paired"]["difference"]):
        print(f"| {name} | {a:.2f} | {b:.2f} | {d:+.2f} |")
    # The rule on every stage of every run, and on its last stage (the model it ends with) beside the mean.
    histories = {folder: {run: pose_training.stage_histories(pathlib.Path(folder) / run) for run in result["runs"]}
                 for folder in (args.runs_a, args.runs_b)}
    last = {folder: convergence.summary({run: list(h.values())[-1] for run, h in runs.items()})
            for folder, runs in histories.items()}
    for folder, values in ((args.runs_a, result["a"]), (args.runs_b, result["b"])):
        print(f"{folder}: {args.column} {stats.format_summary(values)} (mean ± sample std, ddof 1 [95% CI])"
              f"{convergence.beside_mean(last[folder])}")
    print(f"{args.runs_b} - {args.runs_a}: {stats.format_paired(result['paired'])}")
    for folder, runs in histories.items():
        for stage in dict.fromkeys(name for h in runs.values() for name in h):
            arm = convergence.summary({run: h[stage] for run, h in runs.items() if stage in h})
            print(f"{folder}: stage {stage}: {convergence.describe(arm)}")
    for folder, arm in last.items():
        print(f"{folder}: {convergence.describe(arm)} (its last stage)")
    print(convergence.RULE)


def pose_pictures(args) -> None:
    from common.pose import data as pose_data
    from common.studies import pose_pictures as pose_report

    records = pose_data.load_split(args.data, args.split)  # bad data fails before the model loads
    model, size = _pose_run(args.run, args.input_size)
    if not 0 <= args.index < len(records):
        raise ValueError(f"--index: {args.index} is outside the {len(records)} annotations of {args.split}")
    written = pose_report.write_pictures(model, records[args.index], args.out, size)
    logger.info("wrote " + ", ".join(str(p) for p in written))
    if args.mask_contrast:
        contrast = pose_report.mask_contrast(model, records, size)
        atomic.write_json(pathlib.Path(args.out) / "mask_contrast.json", contrast)
        for row in contrast:
            print(f"{row['stage']}: mask {row['figure']:.3f} on the figure, {row['background']:.3f} elsewhere, "
                  f"AUC {row['auc']:.3f} ({row['records']} crops of {args.split})")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_synthetic_pose, _add_train_pose, _add_eval_pose, _add_compare_pose, _add_pose_pictures)
