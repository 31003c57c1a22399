"""Whole slides, TRI-AL: ``zoo synthetic-slides``, ``triplets``, ``tri-al``, ``tri-al-report``, ``tri-al-predict``."""

from __future__ import annotations

import argparse
import collections
import json
import logging
import pathlib
import sys

from common import atomic, errors
from common.cli import options

logger = logging.getLogger(__name__)


def _add_synthetic_slides(sub):
    p = sub.add_parser("synthetic-slides", help="write synthetic two-lab whole slides (tiled TIFF + QuPath GeoJSON)")
    p.add_argument("out", help="folder to write")
    p.add_argument("--slides", type=int, default=6, help="slides per laboratory (labs A and B)")
    options.renamed(p, "--size", "--slide-size", type=options.numbers(int, "H,W"), default=(2048, 2048),
                    help="level-0 pixels H,W at 40x")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", choices=("stain", "hard"), default="stain",
                   help="stain: the labs differ in stain colour and intensity only; hard: also per-slide stains, "
                        "per-region concentrations, lab B out of focus with noise and with other blood and muscle "
                        "textures, rough annotations with label noise at boundaries (default stain)")
    p.add_argument("--target-slides", type=int, help="slides of lab B, the target (default --slides)")
    p.set_defaults(handler=synthetic_slides)


def _add_triplets(sub):
    p = sub.add_parser("triplets", help="sample triplets (2.5x, 10x, 40x) in annotated slides, one shard per slide",
                       description="Slides with their QuPath GeoJSON beside them (<name>.geojson); labs from "
                       "SLIDES/slides.json or, without one, a folder per lab (SLIDES/labA/..., lab 'A'). "
                       "Annotations are read in QuPath's frame (the slide's OpenSlide bounds, as for MRXS); "
                       "unclassified and unknown-class annotations, and polygons without area, are skipped and "
                       "counted; self-intersecting polygons are read by the even-odd rule (GEOS make_valid's repair) "
                       "and counted.")
    p.add_argument("slides", help="folder of slides with <name>.geojson beside them, or of lab folders of them")
    p.add_argument("out", help="triplet folder to write (a rerun skips written slides)")
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--max-per-slide", type=int, default=500)
    p.add_argument("--classes", default=None, metavar="NAME=CLASS,...|FILE.json",
                   help="your QuPath class names -> the model's (blood, damaged, muscle, stroma, urothelium), "
                        "e.g. 'Tumor=urothelium,Blood vessel=blood', or a JSON object file; case-insensitive")
    p.add_argument("--magnification", type=float, default=None,
                   help="objective power of level 0 for every slide (default: the slide's, checked against its "
                        "mpp; a slides.json entry's \"magnification\" overrides it for that slide)")
    p.add_argument("--no-upsample", dest="upsample", action="store_false",
                   help="refuse slides scanned below 40x instead of upsampling their 40x tiles")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=triplets)


def _stain_sigma(text: str) -> float:
    try:
        sigma = float(text)
    except ValueError:
        sigma = None
    if sigma is None or not 0 <= sigma < 1:
        raise argparse.ArgumentTypeError(f"expected a jitter size in [0, 1), got {text!r} (without a SIGMA, put "
                                         "--stain-augment after DATA and OUT: it takes the next word as its value)")
    return sigma


class _StrategyChoices:
    """``--strategy``'s choices, supervised and TRI-AL's ``STRATEGIES``, read when a value is checked or ``zoo tri-al
    --help`` lists them: reading them when the parser is built would make ``zoo --help`` import Keras (~5 s)."""

    def _names(self) -> tuple[str, ...]:
        from common.studies import tri_al as tri_al_study

        return ("supervised", *tri_al_study.STRATEGIES)

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


class _ModelHelp(str):
    """A help text naming TRI-CNN's defaults (``{base_filters}``, ``{head_units}``), filled in when --help prints it
    (argparse formats a help as ``help % params``): reading them when the parser is built would import Keras, as
    for ``_StrategyChoices``."""

    def __mod__(self, params) -> str:
        from common.studies import tri_al as tri_al_study

        text = self.format(base_filters=tri_al_study.BASE_FILTERS, head_units=tri_al_study.HEAD_UNITS)
        return str.__mod__(text, params)


class _Width(argparse.Action):
    """The old ``--width``, VGG16's widths' multiplier, kept one release: sets ``--base-filters`` to 64 x it and says
    so; a multiplier that gives no whole number of channels is one error line."""

    def __call__(self, parser, namespace, values, option_string=None):
        from common.studies import tri_al as tri_al_study

        try:
            width = float(values)
        except ValueError:
            width = values  # not a number: the check below names it
        try:
            filters = tri_al_study.base_filters_of_width(width)
        except ValueError as error:  # one line, as the zoo's errors are, not argparse's usage
            parser.exit(2, f"{parser.prog}: error: --width: {error}\n")
        print(f"{parser.prog}: --width is deprecated and goes in the next release; use --base-filters {filters}",
              file=sys.stderr)
        namespace.base_filters = filters


def _add_tri_al(sub):
    p = sub.add_parser("tri-al", help="TRI-AL study: source model, TRI-SL baselines, ITER/OOD/ENT/RANDOM (resumes)",
                       description="Defaults are the paper's (section III) and, where it reuses them, the original "
                       "TRI-CNN code's; the flags marked 'CPU deviation' shrink the model or the run for a CPU.")
    p.add_argument("data", help="triplet folder (zoo triplets) with slides of two labs")
    p.add_argument("out", help="study folder (rerun the same command to resume)")
    p.add_argument("--strategy", nargs="+", default=["supervised", "ITER", "OOD", "ENT"], choices=_StrategyChoices(),
                   metavar="STRATEGY", help="the columns of Table II to run, TRI-SL and TRI-AL's "
                   "query strategies: %(choices)s (default: the paper's, supervised ITER OOD ENT; RANDOM, "
                   "ITER's rounds with uniform draws, is not the paper's)")
    p.add_argument("--runs", type=int, default=5, help="runs per column (paper: 5)")
    p.add_argument("--fractions", type=options.fractions, default=(0.2, 0.4, 0.6, 0.8, 1.0),
                   help="TRI-SL data shares (paper: 0.2,0.4,0.6,0.8,1)")
    p.add_argument("--source-model", default=None,
                   help="an already trained TRI-CNN (.keras, e.g. STUDY/source/model.keras) to adapt: no source "
                        "lab, no source training; its architecture replaces --base-filters/--head-units/"
                        "--backbone-weights")
    p.add_argument("--base-filters", type=int, default=None,
                   help=_ModelHelp("channels of each VGG16's first block; its five blocks have 1, 2, 4, 8, 8 times "
                                   "as many (default {base_filters}, VGG16 itself; fewer: CPU deviation)"))
    p.add_argument("--width", action=_Width, dest="base_filters", help=argparse.SUPPRESS)  # before --base-filters
    p.add_argument("--head-units", type=int, default=None,
                   help=_ModelHelp("units of the two hidden dense layers (default {head_units}, the original's; "
                                   "fewer: CPU deviation)"))
    p.add_argument("--backbone-weights", default=None,
                   help=_ModelHelp("local ImageNet VGG16 no-top weights file, the original's start (VGG16's own "
                                   "widths only: base filters {base_filters})"))
    p.add_argument("--preprocessing", choices=("raw", "imagenet"), default=None,
                   help="what the VGG16s see: raw 0-255 RGB, as the original code feeds them even from ImageNet "
                        "weights (default), or ImageNet's caffe preprocessing (BGR, mean subtracted)")
    p.add_argument("--source-lab", default="A", help="lab the source model is trained on (not with --source-model); "
                   "a lab of `zoo triplets`: slides.json's, or the lab folder's name less a leading 'lab'")
    p.add_argument("--target-lab", default="B", help="lab adapted to (its slides split by --target-split)")
    p.add_argument("--target-split", type=options.numbers(float, "TRAIN,VAL,TEST"), default=(0.7, 0.15, 0.15),
                   help="shares of the target lab's slides (split by slide)")
    p.add_argument("--iterations", type=int, default=5, help="J of ITER and ENT (paper: 5)")
    p.add_argument("--budget", type=int, default=20000, help="S, samples drawn per iteration (paper: 20000)")
    p.add_argument("--candidates", type=int, default=30000, help="ENT candidates per iteration (paper: 30000)")
    p.add_argument("--initial-per-class", type=int, default=25000, help="X0 per class (paper: 25000)")
    p.add_argument("--epochs", type=int, default=100, help="most epochs per round (early stopping, patience)")
    p.add_argument("--source-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=5, help="early stopping on validation loss (paper: 5)")
    p.add_argument("--batch-size", type=int, default=128, help="the original's 128; smaller: CPU deviation")
    p.add_argument("--learning-rate", type=float, default=1.5e-4, help="SGD rate (paper: 1.5e-4)")
    p.add_argument("--lr-scale", type=options.positive(float), default=1.0, metavar="S",
                   help="multiplies --learning-rate for every training (source, TRI-SL, TRI-AL rounds): a "
                        "learning-rate sweep's factor; study.json records the product (default 1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (the original's 0.9)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                   help="Nesterov momentum (the original's)")
    p.add_argument("--decay", type=float, default=1e-6,
                   help="Keras 2 SGD decay, lr / (1 + decay * step) (the original's 1e-6; 0: constant rate)")
    p.add_argument("--stain-augment", type=_stain_sigma, nargs="?", const=0.05, default=0.0, metavar="SIGMA",
                   help="HED stain jitter of every training batch (Tellez et al.), the same on a triplet's three "
                        "tiles: each stain scaled by U(1-SIGMA, 1+SIGMA) and shifted by U(-SIGMA, SIGMA); "
                        "SIGMA 0.05 if not given. Not the paper's (off): the usual baseline against a stain shift")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=tri_al)


def _add_tri_al_report(sub):
    p = sub.add_parser("tri-al-report", help="Table II (Markdown), Fig. 2 and Fig. 3 (PNG) of a TRI-AL study")
    p.add_argument("study", nargs="+",
                   help="study folder (zoo tri-al), or several of one study whose arms ran in folders of their own "
                        "(each at its own rate; the same target split and --source-model): the report goes to the "
                        "first")
    p.add_argument("--slide", default=None, help="slide for Fig. 3 (default: the first target test slide)")
    p.add_argument("--margin", type=options.positive(float), default=1.0, metavar="M",
                   help="equivalence margin of each TRI-AL column against TRI-SL(100%%), in F1 points: a paired "
                        "TOST over runs, micro and macro F1 (default 1)")
    p.set_defaults(handler=tri_al_report)


def _add_tri_al_predict(sub):
    p = sub.add_parser("tri-al-predict", help="whole-slide TRI-CNN prediction in the tissue, as QuPath GeoJSON "
                       "(+ the colour map of Fig. 3)",
                       description="Classifies the triplet centred on every grid cell whose centre is in tissue "
                       "(Otsu on the optical density at 1.25x; glass left out) and writes one QuPath annotation per "
                       "class, its cells merged into a (Multi)Polygon in QuPath's coordinates (the slide's OpenSlide "
                       "bounds, as for MRXS). Import it in QuPath with File > Import objects, or drop it on the "
                       "viewer. Nothing existing is overwritten.")
    p.add_argument("model", help="a trained TRI-CNN (.keras), e.g. STUDY/ITER/run_0/model.keras of zoo tri-al")
    p.add_argument("slide", help="the whole slide (.svs, .mrxs, .scn, .tiff, ...)")
    p.add_argument("out", help="GeoJSON to write (.geojson or .json)")
    p.add_argument("--stride", type=int, default=None,
                   help="level-0 pixels between tile centres (default one 40x tile: tile size x base / 40)")
    p.add_argument("--magnification", type=float, default=None,
                   help="objective power of level 0 (default: the slide's, checked against its mpp)")
    p.add_argument("--png", default=None, help="also write the colour map of Fig. 3 (slide beside its classes) here")
    p.add_argument("--classes", default=None, metavar="NAME=CLASS,...|FILE.json",
                   help="your QuPath class names for the model's, as for zoo triplets (the first name given to "
                        "a class names it; default Blood, Damaged, Muscle, Stroma, Urothelium)")
    p.add_argument("--object-type", choices=("annotation", "detection"), default="annotation",
                   help="QuPath object of each class region: annotation (editable) or detection (lighter)")
    p.add_argument("--batch-size", type=int, default=64, help="triplets per model call")
    p.add_argument("--no-upsample", dest="upsample", action="store_false",
                   help="refuse a slide scanned below 40x instead of upsampling its 40x tiles")
    p.set_defaults(handler=tri_al_predict)


def synthetic_slides(args) -> None:
    from common.slides import synthetic as generator

    ids = generator.write_cohort(args.out, slides_per_lab=args.slides, seed=args.seed, size=args.slide_size,
                                 shift=args.shift, target_slides=args.target_slides)
    logger.info(f"wrote {len(ids)} slides to {args.out}")


def _parse_classes(parse, spec):
    """``--classes`` through ``parse``; a bad mapping names the flag (a DataError already names its file)."""
    try:
        return parse(spec)
    except errors.DataError:
        raise
    except ValueError as error:
        raise ValueError(f"--classes: {error}") from None


def triplets(args) -> None:
    from common.slides import annotations, triplets

    classes = _parse_classes(annotations.class_map, args.classes)
    manifest = triplets.prepare_triplets(args.slides, args.out, tile_size=args.tile_size,
                                         max_per_slide=args.max_per_slide, seed=args.seed,
                                         magnification=args.magnification, classes=classes, upsample=args.upsample)
    slides = manifest["slides"].values()
    total = sum(sum(e["counts"]) for e in slides)
    skipped = collections.Counter()
    for entry in slides:
        skipped.update(entry["skipped"])
    repaired = sum(e["repaired"] for e in slides)
    notes = [f"repaired {repaired} self-intersecting polygons"] if repaired else []
    notes += [f"skipped {annotations.skipped_counts(skipped)} annotations"] if skipped else []
    listed = f" ({'; '.join(notes)}: per slide in {pathlib.Path(args.out) / triplets.MANIFEST})" if notes else ""
    logger.info(f"wrote {total} triplets of {len(manifest['slides'])} slides to {args.out}{listed}")


def _study_config(args):
    """The study ``zoo tri-al`` runs; every training of it (source, TRI-SL, TRI-AL rounds) at the rate
    --learning-rate x --lr-scale, the product study.json records."""
    from common.studies import tri_al as tri_al_study

    train = tri_al_study.TrainConfig(learning_rate=args.learning_rate * args.lr_scale, momentum=args.momentum,
                                     nesterov=args.nesterov, decay=args.decay, batch_size=args.batch_size,
                                     epochs=args.epochs, patience=args.patience,
                                     stain_augment=args.stain_augment)
    return tri_al_study.StudyConfig(
        data=args.data, out=args.out, strategies=tuple(args.strategy), runs=args.runs, fractions=args.fractions,
        base_filters=args.base_filters, head_units=args.head_units, backbone_weights=args.backbone_weights,
        preprocessing=args.preprocessing, source_model=args.source_model, source_lab=args.source_lab,
        target_lab=args.target_lab, target_split=args.target_split, iterations=args.iterations,
        budget=args.budget, candidates=args.candidates,
        initial_per_class=args.initial_per_class, source_epochs=args.source_epochs, seed=args.seed, train=train)


def tri_al(args) -> None:
    from common.studies import tri_al as tri_al_study
    from common.studies import tri_al_report

    print(tri_al_report.table_ii(tri_al_study.run_study(_study_config(args))))


def tri_al_report(args) -> None:

    from common.studies import tri_al as tri_al_study
    from common.studies import tri_al_report as report

    study = pathlib.Path(args.study[0])
    if len(args.study) == 1:
        results = tri_al_study.collect_results(study)
        where = dict.fromkeys(results, study)
    else:
        results, where = tri_al_study.collect_studies(args.study)
    if not results:
        raise errors.DataError(f"{study}: no finished TRI-AL runs (run `zoo tri-al` first)")
    table = report.report_text(results, args.margin)
    with atomic.atomic_path(study / "table_ii.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    if "TRI-AL_ITER" in results:
        _figures(args, study, where["TRI-AL_ITER"])


def _figures(args, study: pathlib.Path, arm: pathlib.Path) -> None:
    """Fig. 2 (ITER's class shares) and Fig. 3 (ITER run 0's map of a test slide) into ``study``; a study kept
    without its data or weights (docs/studies) gets its tables only, and a line saying why."""
    import keras

    from common.studies import tri_al_report as report

    plan = json.loads((arm / "study.json").read_text(encoding="utf-8"))
    data = pathlib.Path(plan["settings"]["data"])
    missing = [p for p in (data / "triplets.json", arm / "ITER" / "run_0" / "model.keras") if not p.exists()]
    if missing:
        logger.info(f"Fig. 2 and 3 not drawn: {', '.join(map(str, missing))} missing (the study's data and ITER "
                    "run 0's model)")
        return
    manifest = json.loads((data / "triplets.json").read_text(encoding="utf-8"))
    counts = [manifest["slides"][s]["counts"] for s in plan["target"]["train"]]
    report.plot_shares(study / "fig2_class_shares.png", report.iteration_shares(arm, "ITER"),
                       reference=[sum(c) / max(1, sum(map(sum, counts))) for c in zip(*counts)])
    logger.info(f"wrote {study / 'fig2_class_shares.png'}")
    slide = args.slide or manifest["slides"][plan["target"]["test"][0]]["slide"]
    model = keras.models.load_model(arm / "ITER" / "run_0" / "model.keras", compile=False)
    grid, thumb = report.predict_slide(model, slide)
    report.plot_slide_map(study / "fig3_slide_map.png", grid, thumb)
    logger.info(f"wrote {study / 'fig3_slide_map.png'} ({pathlib.Path(slide).name})")


def _check_outputs(args) -> list[pathlib.Path]:
    outputs = [pathlib.Path(args.out)] + ([pathlib.Path(args.png)] if args.png else [])
    if outputs[0].suffix.lower() not in (".geojson", ".json"):
        raise ValueError(f"out: {outputs[0]} needs the suffix .geojson (or .json)")
    if args.png and outputs[1].suffix.lower() != ".png":
        raise ValueError(f"--png: {outputs[1]} needs the suffix .png")
    for path in outputs:
        if path.exists():
            raise ValueError(f"{path} exists; nothing is overwritten: choose another path or remove it")
    for flag, value in (("--stride", args.stride), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be positive, got {value}")
    return outputs


def tri_al_predict(args) -> None:
    import numpy as np

    from common import registry
    from common.slides import predict
    from common.studies import tri_al_report as report

    outputs = _check_outputs(args)
    names = _parse_classes(predict.class_names, args.classes)
    model, _ = registry.load_run(args.model)
    try:
        predict.tile_size_of(model)
    except ValueError as error:
        raise errors.DataError(f"{args.model}: {str(error).removeprefix('model: ')}") from None
    if model.output_shape[-1] != len(names):
        raise errors.DataError(f"{args.model}: a model of {model.output_shape[-1]} classes; TRI-CNN's are "
                               f"{len(names)} ({', '.join(names)})")
    prediction = predict.predict_slide(model, args.slide, args.stride, args.magnification, args.batch_size,
                                       args.upsample)
    count = predict.write_geojson(outputs[0], prediction, names, report.QUPATH_COLOURS, args.object_type)
    tiles = np.bincount(prediction.grid[prediction.grid >= 0], minlength=len(names))
    logger.info(f"wrote {count} {args.object_type}s to {outputs[0]}: " +
                ", ".join(f"{name} {n} tiles" for name, n in zip(names, tiles.tolist()) if n))
    if args.png:
        report.plot_slide_map(outputs[1], prediction.grid, prediction.thumbnail)
        logger.info(f"wrote {outputs[1]}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_synthetic_slides, _add_triplets, _add_tri_al, _add_tri_al_report, _add_tri_al_predict)
