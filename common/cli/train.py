"""Training and the papers' protocol: ``zoo train``, ``cv``, ``compare``."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from common.cli import options, verbosity
from common.nn.recipe import FIELDS as RECIPE_FIELDS
from common.nn.recipe import Recipe


def train_options(p):
    """Training options. The recipe's (``common.nn.recipe.Recipe``'s fields, their help texts the fields' own) left
    out come from --preset's model, else from --model's: its paper's recipe, declared in its package (`zoo models`
    lists them). Nothing here imports the registry: `zoo --help` and argument errors never wait for TensorFlow;
    the names are checked when the command runs (a ValueError listing them)."""
    p.add_argument("data", help="prepared folder (zoo prepare)")
    p.add_argument("out", help="output folder (rerun the same command to resume)")
    p.add_argument("--model", help="a segmentation model of `zoo models` (default: the first it lists)")
    p.add_argument("--preset", metavar="MODEL",
                   help="train by this segmentation model's paper's recipe instead of --model's (and train it, "
                        "unless --model is given); options given explicitly override it")
    p.add_argument("--epoch-scale", type=float, default=1.0,
                   help="multiplies the recipe's epochs, for short runs (default 1)")
    p.add_argument("--model-options", type=options.json_object,
                   help='more build_model arguments as JSON, e.g. \'{"mhca_levels": 1, "heads": 4}\'')
    for field in dataclasses.fields(Recipe):
        meta = field.metadata
        p.add_argument("--" + field.name.replace("_", "-"), type=meta.get("type"), choices=meta.get("choices"),
                       help=f"{meta['help']} (default: the recipe's)".replace("%", "%%"))
    p.add_argument("--lr-scale", type=options.positive(float), default=1.0,
                   help="multiplies the learning rate, the recipe's or --learning-rate's (default 1; zoo sweep-lr "
                        "sets it)")
    p.add_argument("--test-fraction", type=float, help="cases held out for evaluation (default 0.2)")
    p.add_argument("--test-cases", type=options.case_list, help="held-out case ids, comma-separated")
    p.add_argument("--train-cases", type=int, metavar="N",
                   help="train on N of the training cases only, the same N for every model and seed on the same "
                        "held-out cases (a learning curve; a study's less-data arm); default all")
    p.add_argument("--validation-cases", type=int, metavar="N",
                   help="N of the training cases give a validation loss per epoch instead of training (val_loss "
                        "in history.csv, the same cases for every model and seed on the same held-out cases); "
                        "zoo compare checks each run's convergence on it (default 0: none)")
    p.add_argument("--seed", type=int, help="default 0")


def _add_models(sub):
    p = sub.add_parser("models", help="the registry's models: task and their paper's training recipe")
    p.set_defaults(handler=models)


def models(args) -> None:
    """One line per registered model and what its recipe sets (the defaults of `zoo train` and `zoo train-pose`)."""
    from common import registry

    for name in registry.names():
        entry = registry.get(name)
        recipe = entry.recipe
        settings = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(recipe).items() if v is not None) \
            if dataclasses.is_dataclass(recipe) else "its package's own training"
        print(f"{name} ({entry.task}): {settings}")  # the result: stdout, even under -q


def repeat_options(p):
    """How many trainings a cross-validation holds: folds x repeats, each from its own seed."""
    p.add_argument("--folds", type=int, default=5,
                   help="K-fold by case (default 5); 1: one fixed held-out set (--test-fraction/--test-cases)")
    p.add_argument("--repeats", type=int, default=1,
                   help="trainings per fold from other seeds (default 1); fold k of repeat r trains from "
                        "seed + r * folds + k")
    p.add_argument("--seeds", type=options.int_list, default=None,
                   help="the repeats' base seeds, comma-separated (instead of --repeats); fold k adds k")


def _add_train(sub):
    p = sub.add_parser("train", help="train a segmentation model on prepared shards")
    train_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="train afresh in an output folder that holds a run (by default a rerun of the same options "
                        "resumes it, and one of other options is refused); the old files are replaced as the new "
                        "ones are written")
    p.set_defaults(handler=train)


def _add_cv(sub):
    p = sub.add_parser("cv", help="K-fold cross-validation by case, every (fold, repeat) from its own seed, mean ± std")
    train_options(p)
    repeat_options(p)
    p.add_argument("--metrics", type=options.metric_names, default=("dice", "hd95", "assd"), help=options.METRICS_HELP)
    p.set_defaults(handler=cv)


def _add_compare(sub):
    p = sub.add_parser("compare", help="per-fold differences and paired t-test between two cv folders")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--metric", default="dice", help="the metric of the paired t-test (default dice)")
    p.add_argument("--metrics", type=options.metric_names, default=None,
                   help="also print both runs as rows of a table with these columns, e.g. "
                        "dice,voe,assd,precision,recall,hd (the EAS U-Net paper's Table 1)")
    p.add_argument("--classes", type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
                   help="average --metric over these classes only (names or label numbers, comma-separated), "
                        "e.g. spleen,kidney_right,kidney_left,pancreas; default every class")
    p.add_argument("--miss-below", type=float, metavar="DICE",
                   help="count, per arm and class, the units whose held-out Dice of the class is below this "
                        "fraction in (0, 1): an organ lost whole (default 0.5)")
    p.set_defaults(handler=compare)


def _add_sweep_lr(sub):
    p = sub.add_parser("sweep-lr", help="a learning-rate sweep: one training command at x1/3, x1, x3 of its rate, "
                                        "the best by validation loss (the studies' pre-registered sweep)",
                       usage="zoo sweep-lr [--scales S,S,S] OUT -- COMMAND ...")
    p.add_argument("--scales", type=lambda text: [options.positive(float)(v) for v in text.split(",") if v],
                   default=None, help="learning-rate multiples, comma-separated (default 0.333,1,3: x1/3, x1, x3); "
                                      "before OUT")
    p.add_argument("out", help="sweep folder: a run folder per scale (OUT/lr_x<scale>) and sweep.json; rerun the "
                               "same command to resume")
    # Not "command": that is the subcommand's name, which zoo's own messages print.
    p.add_argument("training", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="a zoo train, train-pose or tri-al command with one fold, seed (and column), its output "
                        "folder included (each scale writes to OUT/lr_x<scale> instead), e.g. -- train DATA RUN "
                        "--model unet --validation-cases 2 --test-cases case_000")
    p.set_defaults(handler=sweep_lr)


TRAIN_FIELDS = ("model", "model_options", *RECIPE_FIELDS, "test_fraction", "test_cases", "train_cases",
                "validation_cases", "seed")


def train_config(args):
    from common.train import segmentation as training

    config = training.preset_config(
        args.preset, args.epoch_scale, data=args.data, out=args.out,
        verbose=verbosity.progress(),
        **{field: getattr(args, field) for field in TRAIN_FIELDS},
    )
    return dataclasses.replace(config, learning_rate=config.learning_rate * args.lr_scale)


def train(args) -> None:
    from common.train import segmentation as training

    training.train(train_config(args), overwrite=args.overwrite)


def cv(args) -> None:
    from common.train import crossval

    summary = crossval.run_cv(train_config(args), args.out, args.folds, args.repeats, args.seeds)
    print(crossval.format_summary(summary, args.metrics))


def compare(args) -> None:
    from common import stats
    from common.ct import metrics
    from common.train import convergence, crossval

    classes = crossval.class_labels(args.run_a, args.classes) if args.classes else None
    miss_below = crossval.MISS_BELOW if args.miss_below is None else args.miss_below
    result = crossval.compare(args.run_a, args.run_b, args.metric, classes, miss_below)
    cohort, total = result["cohort"], len(result["units"])
    if cohort["differ"]:  # the numbers still follow, but they compare two cohorts
        print(f"WARNING cohort: {', '.join(cohort['differ'])} trained on other voxels in {args.run_b} than in "
              f"{args.run_a} (data_sha256 differ)")
    if cohort["same"]:
        digests = [digest[:12] for digest in dict.fromkeys(cohort["same"].values())]
        who = "every unit" if len(cohort["same"]) == total else f"{len(cohort['same'])} of {total} units"
        pairs = "" if len(digests) == 1 else f"pair by pair, {len(digests)} cohorts: "
        print(f"cohort: {who} of both arms on the same voxels ({pairs}data_sha256 {', '.join(digests)})")
    if cohort["unchecked"]:
        print(f"cohort: {len(cohort['unchecked'])} unit(s) without data_sha256 (prepared before digests): not checked")
    if args.metrics:
        print(crossval.format_runs({args.run_a: args.run_a, args.run_b: args.run_b}, args.metrics) + "\n")
    print(f"| unit | {args.run_a} | {args.run_b} | difference |\n|---|---|---|---|")
    for name, a, b, d in zip(result["units"], result["a"], result["b"], result["difference"]):
        print(f"| {name} | {a:.4f} | {b:.4f} | {d:+.4f} |")
    scale, over = metrics.scale_of(args.metric), f" over classes {','.join(args.classes)}" if classes else ""
    print(f"\nmean {args.metric}{over}, mean ± sample std (ddof 1) [95% CI] over {len(result['units'])} units:")
    arms = {folder: convergence.summary({u: pathlib.Path(folder) / u / "history.csv" for u in result["units"]})
            for folder in (args.run_a, args.run_b)}
    for folder, values in ((args.run_a, result["a"]), (args.run_b, result["b"])):
        print(f"  {folder}: {stats.format_summary(values, scale)}{convergence.beside_mean(arms[folder])}")
    print(f"{args.run_b} - {args.run_a}: {stats.format_paired(result['paired'], scale)}")
    below = f"class Dice < {miss_below:.2f}" if round(miss_below, 2) == miss_below else f"class Dice < {miss_below:g}"
    for folder, misses in ((args.run_a, result["misses_a"]), (args.run_b, result["misses_b"])):
        missed = [f"{name} {len(units)} ({', '.join(f'{unit} {dice:.2f}' for unit, dice in units)})"
                  for name, units in misses.items() if units]
        print(f"{folder}: whole-organ misses ({below}): {', '.join(missed)}" if missed else
              f"{folder}: no whole-organ miss ({below})")
    for folder, arm in arms.items():
        print(f"{folder}: {convergence.describe(arm)}")
    print(convergence.RULE)


def sweep_lr(args) -> None:
    """Runs the command once per scale (in this process, as ``zoo`` itself would), then writes sweep.json."""
    import copy

    from common import atomic, cli
    from common.nn.callbacks import NonFiniteLoss
    from common.train import sweep

    command = args.training[1:] if args.training[:1] == ["--"] else args.training  # argparse drops a leading --
    if command[:1] and command[0].startswith("-"):
        raise ValueError(f"sweep-lr's own options (--scales) go before OUT; after OUT: -- and the command to sweep, "
                         f"got {' '.join(command)}")
    if not command or command[0] not in sweep.COMMANDS:
        raise ValueError(f"command: give, after --, one of zoo {', '.join(sweep.COMMANDS)} with its arguments; "
                         f"got {' '.join(command) or 'nothing'}")
    inner = cli.parse_args(command)  # its own errors first, before anything trains
    if "--lr-scale" in command:
        raise ValueError("command: --lr-scale is what sweep-lr sets; leave it out")
    scales = args.scales or list(sweep.SCALES)
    out = pathlib.Path(args.out)
    losses = {}
    for scale in scales:
        run = copy.copy(inner)
        run.out, run.lr_scale = str(out / sweep.run_name(scale)), scale
        print(f"sweep-lr: x{scale:.3g} -> {run.out}", flush=True)
        try:
            run.handler(run)
        except NonFiniteLoss as error:
            print(f"sweep-lr: x{scale:.3g} diverged: {error}", flush=True)
            losses[scale] = None
            continue
        losses[scale] = sweep.final_val_loss(command[0], run.out)
    record = sweep.record(command, losses, out)
    atomic.write_json(out / "sweep.json", record)
    print(sweep.format_record(record))


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_models, _add_train, _add_cv, _add_compare, _add_sweep_lr)
