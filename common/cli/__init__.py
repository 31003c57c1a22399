"""The zoo command line: prepare, train, cross-validate, evaluate, predict, export, serve.

Bad input ends the command with a one-line message naming the file or the
argument and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import errors

# Before TensorFlow is imported anywhere: oneDNN is faster on AVX2 CPUs (SPEC,
# "speed defaults") and TensorFlow's start-up chatter hides our own output.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _numbers(cast, names: str):
    """An argparse type for comma-separated numbers, e.g. ``_numbers(int, "ROW,COL")``."""
    count = len(names.split(","))

    def parse(text: str) -> tuple:
        try:
            values = tuple(cast(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {names}, got {text!r}")
        return values

    return parse


_window = _numbers(float, "LOW,HIGH")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _case_list(text: str) -> list[str]:
    return [c for c in text.split(",") if c]


def _add_prepare(sub):
    p = sub.add_parser("prepare", help="write each case of a cohort once to its own TFRecord shard")
    p.add_argument("cohort", help="folder with images/ and labels/")
    p.add_argument("out", help="prepared folder to write")
    p.add_argument("--num-classes", type=int, help="classes incl. background (default: cohort dataset.json)")
    p.add_argument("--window", type=_window, default=None, help="HU window LOW,HIGH (default -160,240)")
    p.add_argument("--min-label-fraction", type=float, default=None,
                   help="keep slices with at least this labelled share (default 0: every slice)")
    p.add_argument("--preset", choices=("lits", "lits_tumour"),
                   help="a paper's recipe: lits = EAS U-Net's LiTS preprocessing (window -200,250, slices with "
                        ">= 1.5%% liver, tumour merged into liver); lits_tumour keeps the tumour as class 2")


def _train_options(p):
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
    p.add_argument("--model-options", type=_json_object,
                   help='more build_model arguments as JSON, e.g. \'{"mhca_levels": 1, "heads": 4}\'')
    p.add_argument("--epochs", type=int, help="default 50")
    p.add_argument("--batch-size", type=int, help="default 8")
    p.add_argument("--crop-size", type=int, help="square training crops (multiple of 16)")
    p.add_argument("--learning-rate", type=float, help="default 1e-4")
    p.add_argument("--lr-decay", type=float, help="learning-rate factor per epoch (default 0.95)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help="default adam")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (default 0)")
    p.add_argument("--side-weight", type=float, help="loss weight of deep-supervision side outputs (default 0.4)")
    p.add_argument("--loss", choices=("ce_dice", "dice"), help="default ce_dice")
    p.add_argument("--precision", help="auto, float32, mixed_float16 or mixed_bfloat16 (default auto)")
    p.add_argument("--test-fraction", type=float, help="cases held out for evaluation (default 0.2)")
    p.add_argument("--test-cases", type=_case_list, help="held-out case ids, comma-separated")
    p.add_argument("--seed", type=int, help="default 0")


def _metric_names(text: str) -> tuple[str, ...]:
    from common.ct.metrics import METRIC_NAMES

    names = tuple(n for n in text.split(",") if n)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"metrics must be among {', '.join(METRIC_NAMES)}, got {text!r}")
    return names


_METRICS_HELP = ("table columns, comma-separated (default dice,hd95,assd; the EAS U-Net paper's Table 1: "
                 "dice,voe,assd,precision,recall,hd)")


def _add_train(sub):
    _train_options(sub.add_parser("train", help="train a segmentation model on prepared shards"))


def _add_cv(sub):
    p = sub.add_parser("cv", help="K-fold cross-validation by case (or repeated runs), mean ± std")
    _train_options(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=None,
                   help="instead of folds: one fixed split (--test-fraction/--test-cases), N seeds")
    p.add_argument("--metrics", type=_metric_names, default=("dice", "hd95", "assd"), help=_METRICS_HELP)


def _add_ablation(sub):
    p = sub.add_parser("ablation", help="U-Transformer paper Tables 1/3: every setting by cross-validation")
    _train_options(p)
    p.add_argument("--table", default="table1", choices=("table1", "table3"))
    p.add_argument("--folds", type=int, default=5)


def _add_compare(sub):
    p = sub.add_parser("compare", help="per-fold differences and paired t-test between two cv folders")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--metric", default="dice", help="the metric of the paired t-test (default dice)")
    p.add_argument("--metrics", type=_metric_names, default=None,
                   help="also print both runs as rows of a table with these columns, e.g. "
                        "dice,voe,assd,precision,recall,hd (the EAS U-Net paper's Table 1)")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a run's held-out cases on whole volumes")
    p.add_argument("run", help="run folder (zoo train)")
    p.add_argument("--cohort", help="cohort folder (default: the one the run was prepared from)")
    p.add_argument("--cases", type=_case_list, help="case ids (default: the run's held-out cases)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--metrics", type=_metric_names, default=("dice",), help=_METRICS_HELP.replace(
        "default dice,hd95,assd", "default dice"))


def _add_predict(sub):
    p = sub.add_parser("predict", help="segment one volume; the output keeps the input's geometry")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("input", help="CT volume (NIfTI, MHA/MHD, NRRD or a DICOM folder)")
    p.add_argument("output", help="label volume to write (e.g. .nii.gz)")
    p.add_argument("--window", type=_window, default=None, help="HU window LOW,HIGH (default: the run's)")
    p.add_argument("--batch-size", type=int, default=8)


def _add_export(sub):
    p = sub.add_parser("export", help="write a versioned SavedModel for TF Serving")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("base_dir", help="folder the model server watches")
    p.add_argument("--name", default=None, help="model name (default: the run folder's or file's name)")
    p.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    p.add_argument("--server-base-path", default=None,
                   help="where the server sees BASE_DIR/NAME, e.g. /models/NAME in docker")


def _add_request(sub):
    p = sub.add_parser("request", help="send one CT slice to TF Serving over gRPC, write its label map")
    p.add_argument("server", help="model server gRPC address, e.g. localhost:8500")
    p.add_argument("name", help="model name on the server")
    p.add_argument("input", help="CT volume")
    p.add_argument("output", help="label map to write (.png of class indices, or .npy)")
    p.add_argument("--slice", type=int, default=None, help="axial slice index (default: the middle one)")
    p.add_argument("--window", type=_window, default=None, help="HU window LOW,HIGH (default -160,240)")


def _add_attention_map(sub):
    p = sub.add_parser("attention-map", help="cross-attention of each MHCA level for one pixel, as a PNG")
    p.add_argument("model", help="run folder or .keras file of an mhca / u_transformer model")
    p.add_argument("input", help="CT volume")
    p.add_argument("output", help="PNG to write")
    p.add_argument("--slice", type=int, default=None, help="axial slice index (default: the middle one)")
    p.add_argument("--pixel", type=_numbers(int, "ROW,COL"), required=True, help="ROW,COL of the query pixel in the slice")
    p.add_argument("--window", type=_window, default=None, help="HU window LOW,HIGH (default: the run's)")


def _add_synthetic_ct(sub):
    p = sub.add_parser("synthetic-ct", help="write a synthetic abdominal CT cohort (images/, labels/)")
    p.add_argument("out", help="cohort folder to write")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_numbers(int, "X,Y,Z"), default=(128, 128, 32), help="voxels X,Y,Z")
    p.add_argument("--spacing", type=_numbers(float, "X,Y,Z"), default=None,
                   help="mm X,Y,Z (default: drawn per case, 2.5-3.0 in-plane, 3-5 between slices)")
    p.add_argument("--layout", choices=("msd", "lits"), default="msd",
                   help="msd: images/ + labels/ with 7 organs; lits: volume-N.nii + segmentation-N.nii "
                        "with liver (1) and tumours (2), as the LiTS challenge ships them")


def _add_demo(sub):
    p = sub.add_parser("demo", help="synthetic cohort -> prepare -> train -> evaluate, end to end")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--cases", type=int, default=14)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)


def _add_synthetic_slides(sub):
    p = sub.add_parser("synthetic-slides", help="write synthetic two-lab whole slides (tiled TIFF + QuPath GeoJSON)")
    p.add_argument("out", help="folder to write")
    p.add_argument("--slides", type=int, default=6, help="slides per laboratory (labs A and B)")
    p.add_argument("--size", type=_numbers(int, "H,W"), default=(2048, 2048), help="level-0 pixels H,W at 40x")
    p.add_argument("--seed", type=int, default=0)


def _add_triplets(sub):
    p = sub.add_parser("triplets", help="sample triplets (2.5x, 10x, 40x) in annotated slides, one shard per slide")
    p.add_argument("slides", help="folder of slides with <name>.geojson annotations beside them")
    p.add_argument("out", help="triplet folder to write (a rerun skips written slides)")
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--max-per-slide", type=int, default=500)
    p.add_argument("--magnification", type=float, default=None,
                   help="objective power of level 0 (default: from the slide's properties)")
    p.add_argument("--seed", type=int, default=0)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _add_tri_al(sub):
    p = sub.add_parser("tri-al", help="TRI-AL study: source model, TRI-SL baselines, ITER/OOD/ENT (resumes)")
    p.add_argument("data", help="triplet folder (zoo triplets) with slides of two labs")
    p.add_argument("out", help="study folder (rerun the same command to resume)")
    p.add_argument("--strategy", nargs="+", default=["supervised", "ITER", "OOD", "ENT"],
                   choices=("supervised", "ITER", "OOD", "ENT"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fractions", type=_fractions, default=(0.2, 0.4, 0.6, 0.8, 1.0), help="TRI-SL data shares")
    p.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier (<1: CPU-sized deviation)")
    p.add_argument("--backbone-weights", default=None, help="local VGG16 no-top weights file (width 1 only)")
    p.add_argument("--source-lab", default="A")
    p.add_argument("--target-lab", default="B")
    p.add_argument("--target-split", type=_numbers(float, "TRAIN,VAL,TEST"), default=(0.7, 0.15, 0.15),
                   help="shares of the target lab's slides (split by slide)")
    p.add_argument("--iterations", type=int, default=5, help="J of ITER and ENT")
    p.add_argument("--budget", type=int, default=20000, help="S, samples drawn per iteration")
    p.add_argument("--candidates", type=int, default=30000, help="ENT candidates per iteration")
    p.add_argument("--initial-per-class", type=int, default=25000, help="X0 per class")
    p.add_argument("--epochs", type=int, default=100, help="most epochs per round (early stopping, patience)")
    p.add_argument("--source-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1.5e-4)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)


def _add_tri_al_report(sub):
    p = sub.add_parser("tri-al-report", help="Table II (Markdown), Fig. 2 and Fig. 3 (PNG) of a TRI-AL study")
    p.add_argument("study", help="study folder (zoo tri-al)")
    p.add_argument("--slide", default=None, help="slide for Fig. 3 (default: the first target test slide)")


def _add_synthetic_pose(sub):
    p = sub.add_parser("synthetic-pose", help="write synthetic stick-figure pose data (images/, annot/*.json)")
    p.add_argument("out", help="data folder to write")
    p.add_argument("--images", type=int, default=200, help="images (the last 20%% are the valid split)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)


def _add_train_pose(sub):
    p = sub.add_parser("train-pose", help="ACNN staged training A/B/C (or the plain hourglass) on MPII-style data")
    p.add_argument("data", help="data folder with annot/train.json and images/ (MPII or zoo synthetic-pose)")
    p.add_argument("out", help="run folder (rerun the same command to resume)")
    p.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                   help="ACNN's attention masks (--no-attention: the plain stacked hourglass)")
    p.add_argument("--stacks", type=int, default=4)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--input-size", type=int, default=256, help="crop side, a multiple of 64")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--stage-factor", type=float, default=1.0,
                   help="multiplies every stage's epochs and drop epochs (paper: 200, 200, 100)")
    p.add_argument("--seed", type=int, default=0)


def _add_eval_pose(sub):
    p = sub.add_parser("eval-pose", help="PCKh@0.5 of a pose run, with the paper's Table 1 columns")
    p.add_argument("run", help="run folder (zoo train-pose) or .keras file")
    p.add_argument("data", help="data folder")
    p.add_argument("--split", default="valid", help="annotation file annot/SPLIT.json (default valid)")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the run's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--name", default=None, help="row name in the table (default: the run folder's name)")
    p.add_argument("--stage", choices=("A", "B", "C"), default=None,
                   help="score the weights the run had after this training stage (RUN/stage_X.weights.h5)")


def _add_pose_pictures(sub):
    p = sub.add_parser("pose-pictures", help="skeleton overlay, heatmaps (Fig. 1) and attention masks (Fig. 6) as PNG")
    p.add_argument("run", help="run folder (zoo train-pose) or .keras file")
    p.add_argument("data", help="data folder")
    p.add_argument("out", help="folder for the PNG files")
    p.add_argument("--split", default="valid")
    p.add_argument("--index", type=int, default=0, help="which annotation of the split")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the run's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_synthetic_ct, _add_prepare, _add_train, _add_cv, _add_ablation, _add_compare,
                _add_evaluate, _add_predict, _add_export, _add_request, _add_attention_map,
                _add_synthetic_slides, _add_triplets, _add_tri_al, _add_tri_al_report,
                _add_synthetic_pose, _add_train_pose, _add_eval_pose, _add_pose_pictures):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common.cli import commands
    from common.ct import volumes

    try:
        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except (errors.DataError, ValueError, OSError) as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
