"""``zoo convert``: the originals' released weights into the zoo's models (``common.convert``)."""

from __future__ import annotations

import logging
import pathlib

logger = logging.getLogger(__name__)


def _add_convert(sub):
    p = sub.add_parser("convert", help="an original implementation's weights into a zoo model (.keras)")
    source = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    hourglass = source.add_parser(
        "hourglass", help="princeton-vl's pytorch_stacked_hourglass checkpoint (needs PyTorch: pip install -e "
                          ".[convert]) into the zoo's hourglass, or ACNN with --attention")
    hourglass.add_argument("checkpoint", help="checkpoint.pt (torch.save({'state_dict': ...}) of that code's train.py)")
    hourglass.add_argument("out", help=".keras file to write")
    hourglass.add_argument("--attention", action="store_true",
                           help="into ACNN with every mask forced open (its outputs equal Newell's), so that "
                                "`zoo train-pose --init OUT` trains its stages B and C from it")
    hourglass.add_argument("--input-size", type=int, default=256, help="crop side the model takes (default 256)")
    hourglass.set_defaults(handler=convert)
    tri_cnn = source.add_parser("tri-cnn", help="the original TRI-CNN's Keras-2 HDF5 weights into tri_cnn, for "
                                                "`zoo tri-al --source-model OUT`")
    tri_cnn.add_argument("weights", help="HDF5 weights as the original code saves them (ModelCheckpoint or model.save)")
    tri_cnn.add_argument("out", help=".keras file to write")
    tri_cnn.add_argument("--tile-size", type=int, default=128, help="tile side in pixels (default 128, the original's)")
    tri_cnn.set_defaults(handler=convert)


def _check_paths(source, out) -> None:
    source, out = pathlib.Path(source), pathlib.Path(out)
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    if out.suffix != ".keras":
        raise ValueError(f"OUT: {out} must end in .keras")
    if out.exists():
        raise ValueError(f"OUT: {out} exists; give a new file (nothing was overwritten)")


def convert(args) -> None:
    if args.source == "hourglass":
        from common.convert import hourglass

        _check_paths(args.checkpoint, args.out)
        model = hourglass.convert(args.checkpoint, args.out, attention=args.attention, input_size=args.input_size)
    else:
        from common.convert import tri_cnn

        _check_paths(args.weights, args.out)
        model = tri_cnn.convert(args.weights, args.out, tile_size=args.tile_size)
    logger.info(f"wrote {args.out}: {model.name}, {model.count_params():,} parameters")


PARSERS = (_add_convert,)
