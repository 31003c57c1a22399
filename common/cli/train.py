"""Training and the papers' protocol: ``zoo train``, ``cv``, ``compare``."""

from __future__ import annotations

from common.cli import options, verbosity


def train_options(p):
    """Training options; those left out come from --preset, else from TrainConfig's defaults."""
    p.add_argument("data", help="prepared folder (zoo prepare)")
    p.add_argument("out", help="output folder (rerun the same command to resume)")
    p.add_argument("--preset", choices=("u_transformer", "eas_unet"),
                   help="a paper's training recipe (eas_unet: SGD 0.01, momentum 0.9, weight decay 1e-4, "
                        "batch 32, 50 epochs, 256 crops); options given explicitly override it")
    p.add_argument("--epoch-scale", type=float, default=1.0,
                   help="multiplies the preset's epochs, for short runs (default 1)")
    p.add_argument("--model", help="unet, attention_unet, mhsa, mhca, u_transformer or eas_unet (default unet)")
    p.add_argument("--base-filters", type=int, help="width of the first level (default 64)")
    p.add_argument("--model-options", type=options.json_object,
                   help='more build_model arguments as JSON, e.g. \'{"mhca_levels": 1, "heads": 4}\'')
    p.add_argument("--epochs", type=int, help="default 50")
    p.add_argument("--batch-size", type=int, help="default 8")
    p.add_argument("--crop-size", type=int, help="square training crops (multiple of 16)")
    p.add_argument("--learning-rate", type=float, help="default 1e-4")
    p.add_argument("--lr-decay", type=float, help="learning-rate factor per epoch (default 0.95)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default adam")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float,
                   help="weight decay (default 0): with sgd PyTorch's L2 added to the gradient before momentum, "
                        "with adam Keras' decoupled decay")
    p.add_argument("--side-weight", type=float, help="loss weight of deep-supervision side outputs (default 0.4)")
    p.add_argument("--loss", choices=("ce_dice", "dice"), help="default ce_dice")
    p.add_argument("--precision", help="auto, float32, mixed_float16 or mixed_bfloat16 (default auto)")
    p.add_argument("--steps-per-execution", type=int, metavar="N",
                   help="training steps per compiled call; callbacks and logs run once per call (default: 1 on a "
                        "CPU, 10 on a GPU, where per-step host work was the gap; at most an epoch's steps)")
    p.add_argument("--test-fraction", type=float, help="cases held out for evaluation (default 0.2)")
    p.add_argument("--test-cases", type=options.case_list, help="held-out case ids, comma-separated")
    p.add_argument("--train-cases", type=int, metavar="N",
                   help="train on N of the training cases only, the same N for every model and seed on the same "
                        "held-out cases (a learning curve; a study's less-data arm); default all")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--augment", choices=("none", "flip", "flip-rot"),
                   help="training augmentation after the random crop (default flip-rot; the u_transformer preset: "
                        "none, as the fixed anatomical layout is what its positional encoding uses)")


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
    p.set_defaults(handler=compare)


TRAIN_FIELDS = ("model", "base_filters", "model_options", "epochs", "batch_size", "crop_size", "learning_rate",
                "lr_decay", "optimizer", "momentum", "weight_decay", "side_weight", "loss", "precision",
                "steps_per_execution", "test_fraction", "test_cases", "train_cases", "seed", "augment")


def train_config(args):
    from common.train import segmentation as training

    return training.preset_config(
        args.preset, args.epoch_scale, data=args.data, out=args.out,
        verbose=verbosity.progress(),
        **{field: getattr(args, field) for field in TRAIN_FIELDS},
    )


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
    from common.train import crossval

    classes = crossval.class_labels(args.run_a, args.classes) if args.classes else None
    result = crossval.compare(args.run_a, args.run_b, args.metric, classes)
    if args.metrics:
        print(crossval.format_runs({args.run_a: args.run_a, args.run_b: args.run_b}, args.metrics) + "\n")
    print(f"| unit | {args.run_a} | {args.run_b} | difference |\n|---|---|---|---|")
    for name, a, b, d in zip(result["units"], result["a"], result["b"], result["difference"]):
        print(f"| {name} | {a:.4f} | {b:.4f} | {d:+.4f} |")
    scale, over = metrics.scale_of(args.metric), f" over classes {','.join(args.classes)}" if classes else ""
    print(f"\nmean {args.metric}{over}, mean ± std [95% CI] over {len(result['units'])} units:")
    for folder, values in ((args.run_a, result["a"]), (args.run_b, result["b"])):
        print(f"  {folder}: {stats.format_summary(values, scale)}")
    print(f"{args.run_b} - {args.run_a}: {stats.format_paired(result['paired'], scale)}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_train, _add_cv, _add_compare)
