"""The end-to-end demo and the U-Transformer studies: ``zoo demo``, ``ablation``, ``attention-map``."""

from __future__ import annotations

import logging
import pathlib

from common.cli import options
from common.cli.train import repeat_options, train_config, train_options
from common.ct import volumes

logger = logging.getLogger(__name__)


def _add_demo(sub):
    p = sub.add_parser("demo", help="synthetic cohort -> prepare -> train -> evaluate, end to end")
    p.add_argument("--out", default="demo_output")
    options.renamed(p, "--cases", "--num-cases", type=int, default=14, help="synthetic cases (default 14)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=demo)


def _add_ablation(sub):
    p = sub.add_parser("ablation", help="U-Transformer paper Tables 1/3: every setting by cross-validation "
                                        "(default --preset u_transformer: Adam 1e-4, no flips or rotations)")
    train_options(p)
    p.add_argument("--table", default="table1", choices=("table1", "table3"))
    repeat_options(p)
    p.set_defaults(handler=ablation)


def _add_attention_map(sub):
    p = sub.add_parser("attention-map", help="cross-attention of each MHCA level for one pixel, as a PNG")
    p.add_argument("model", help="run folder or .keras file of an mhca / u_transformer model")
    p.add_argument("input", help="CT volume")
    p.add_argument("output", help="PNG to write")
    p.add_argument("--slice", type=int, default=None, help="axial slice index (default: the middle one)")
    p.add_argument("--pixel", type=options.numbers(int, "ROW,COL"), required=True,
                   help="ROW,COL of the query pixel in the slice")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default: the run's)")
    p.set_defaults(handler=attention_map)


def _add_organ_diagnosis(sub):
    p = sub.add_parser("organ-diagnosis", help="why runs miss an organ: MHCA gates, attention entropy and the organ's "
                                               "share of the CE + Dice gradient, runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder (zoo train, or a zoo cv unit such as "
                                                          "S/u_transformer/fold_1) or .keras file")
    p.add_argument("--organ", required=True, help="the organ: a class name of the data, or its label number")
    p.add_argument("--cases", type=options.case_list,
                   help="case ids, comma-separated (default: the runs' held-out cases)")
    p.add_argument("--data", help="prepared folder (default: the one the runs trained on; a bare .keras file needs "
                                  "it, and --cases)")
    p.add_argument("--batch-size", type=options.positive(int), default=4,
                   help="slices per forward pass, and per batch the loss's Dice pools over (default 4)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(handler=organ_diagnosis)


def demo(args) -> None:
    from common.cli import verbosity
    from common.studies import demo as demo_module

    demo_module.run(pathlib.Path(args.out), num_cases=args.num_cases, epochs=args.epochs,
                    base_filters=args.base_filters, seed=args.seed,
                    verbose=2 if verbosity.progress() else 0)  # a line per epoch, as always; none under -q


def ablation(args) -> None:
    from common.studies import ablation as ablation_module

    args.preset = args.preset or "u_transformer"  # the paper's recipe: Adam 1e-4, no flips or rotations
    print(ablation_module.run_study(train_config(args), args.out, args.table, args.folds, args.repeats, args.seeds))


def attention_map(args) -> None:
    import numpy as np

    from common import registry
    from common.studies import attention_maps

    model, config = registry.load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_slice(args.input, args.slice, hu_window)
    height, width = image.shape
    stride = registry.entry_of(model, config).stride
    padded = np.pad(image, ((0, -height % stride), (0, -width % stride)))
    maps = attention_maps.cross_attention_maps(model, padded, tuple(args.pixel))
    maps = {name: m[:height, :width] for name, m in maps.items()}
    attention_maps.render(args.output, image, maps, tuple(args.pixel))
    logger.info(f"wrote {args.output}: {', '.join(maps)}")


def organ_diagnosis(args) -> None:
    from common import atomic, registry
    from common.studies import organ_diagnosis as diagnosis

    runs = [(run, *registry.load_run(run)) for run in args.runs]
    result = diagnosis.diagnose_runs(runs, args.organ, data=args.data, cases=args.cases, batch_size=args.batch_size)
    print(diagnosis.format_report(result))
    if args.json:
        atomic.write_json(args.json, result)
        logger.info(f"wrote {args.json}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_demo, _add_ablation, _add_attention_map, _add_organ_diagnosis)
