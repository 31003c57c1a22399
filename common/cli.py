"""The zoo command line: prepare, train, cross-validate, evaluate, predict, export, serve.

Bad input ends the command with a one-line message naming the file or the
argument and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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
    p.add_argument("--min-label-fraction", type=float, default=0.0, help="keep slices with at least this labelled share")


def _train_options(p):
    p.add_argument("data", help="prepared folder (zoo prepare)")
    p.add_argument("out", help="output folder (rerun the same command to resume)")
    p.add_argument("--model", default="unet", help="model variant (default unet)")
    p.add_argument("--base-filters", type=int, default=64)
    p.add_argument("--model-options", type=_json_object, default={},
                   help='more build_model arguments as JSON, e.g. \'{"mhca_levels": 1, "heads": 4}\'')
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=None, help="square training crops (multiple of 16)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--loss", default="ce_dice", choices=("ce_dice", "dice"))
    p.add_argument("--precision", default="auto", help="auto, float32, mixed_float16 or mixed_bfloat16")
    p.add_argument("--test-fraction", type=float, default=0.2, help="cases held out for evaluation")
    p.add_argument("--test-cases", type=_case_list, default=None, help="held-out case ids, comma-separated")
    p.add_argument("--seed", type=int, default=0)


def _add_train(sub):
    _train_options(sub.add_parser("train", help="train a segmentation model on prepared shards"))


def _add_cv(sub):
    p = sub.add_parser("cv", help="K-fold cross-validation by case (or repeated runs), mean ± std")
    _train_options(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=None,
                   help="instead of folds: one fixed split (--test-fraction/--test-cases), N seeds")


def _add_ablation(sub):
    p = sub.add_parser("ablation", help="U-Transformer paper Tables 1/3: every setting by cross-validation")
    _train_options(p)
    p.add_argument("--table", default="table1", choices=("table1", "table3"))
    p.add_argument("--folds", type=int, default=5)


def _add_compare(sub):
    p = sub.add_parser("compare", help="per-fold differences and paired t-test between two cv folders")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--metric", default="dice")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="score a run's held-out cases on whole volumes")
    p.add_argument("run", help="run folder (zoo train)")
    p.add_argument("--cohort", help="cohort folder (default: the one the run was prepared from)")
    p.add_argument("--cases", type=_case_list, help="case ids (default: the run's held-out cases)")
    p.add_argument("--batch-size", type=int, default=8)


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


def _add_demo(sub):
    p = sub.add_parser("demo", help="synthetic cohort -> prepare -> train -> evaluate, end to end")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--cases", type=int, default=14)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_synthetic_ct, _add_prepare, _add_train, _add_cv, _add_ablation, _add_compare,
                _add_evaluate, _add_predict, _add_export, _add_request, _add_attention_map):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common import commands, volumes

    try:
        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except (volumes.DataError, ValueError, OSError) as error:
        print(f"zoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
