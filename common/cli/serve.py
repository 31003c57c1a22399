"""Serving: ``zoo export`` (SavedModel for TF Serving, ``--verify`` to check one) and ``request`` (a gRPC client)."""

from __future__ import annotations

import pathlib

from common.cli import options
from common.ct import volumes


def _add_export(sub):
    p = sub.add_parser("export", help="write a versioned SavedModel for TF Serving, or check one (--verify)")
    p.add_argument("model", nargs="?", help="run folder or .keras file")
    p.add_argument("base_dir", nargs="?", help="folder the model server watches")
    p.add_argument("--name", default=None, help="model name (default: the run folder's or file's name)")
    p.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    p.add_argument("--server-base-path", default=None,
                   help="where the server sees BASE_DIR/NAME, e.g. /models/NAME in docker")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="instead of exporting, check a served model folder (BASE_DIR/NAME, or one version) against "
                        "its metadata.json and warm-up requests; exit status 2 on any mismatch")
    p.set_defaults(handler=export)


def _add_request(sub):
    p = sub.add_parser("request", help="send one CT slice to TF Serving over gRPC, write its label map")
    p.add_argument("server", help="model server gRPC address, e.g. localhost:8500")
    p.add_argument("name", help="model name on the server")
    p.add_argument("input", help="CT volume")
    p.add_argument("output", help="label map to write (.png of class indices, or .npy)")
    p.add_argument("--slice", type=int, default=None, help="axial slice index (default: the middle one)")
    p.add_argument("--window", type=options.hu_window, default=None, help="HU window LOW,HIGH (default -160,240)")
    p.set_defaults(handler=request)


def export(args) -> None:
    if args.verify:
        return verify(args)
    for argument in ("model", "base_dir"):
        if getattr(args, argument) is None:
            raise ValueError(f"{argument.upper()}: required to export (or give --verify DIR)")
    from common import registry
    from common.serve import card
    from common.serve import export as export_module

    model, config = registry.load_run(args.model)
    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    entry = registry.entry_of(model, config)
    kwargs = {"outputs": entry.serving_outputs(model)} if entry.serving_outputs else {}
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path,
                                                   facts=card.run_facts(entry.name, entry.task, config), **kwargs)
    print(f"exported {version_dir}")


def verify(args) -> None:
    ignored = [flag for flag, value in (("MODEL", args.model), ("BASE_DIR", args.base_dir), ("--name", args.name),
                                        ("--version", args.version),
                                        ("--server-base-path", args.server_base_path)) if value is not None]
    if ignored:
        raise ValueError(f"--verify checks DIR only; drop {', '.join(ignored)}")
    from common.serve import card

    versions = card.verify(args.verify)
    print(f"verified {len(versions)} version(s) of {args.verify}: every check ok")


def request(args) -> None:
    from common.serve import client as serving_client

    image = volumes.read_slice(args.input, args.slice, args.window or volumes.DEFAULT_WINDOW)
    labels = serving_client.predict_labels(args.server, args.name, image)
    serving_client.write_labels(args.output, labels)
    print(f"wrote {args.output}: classes {sorted(set(labels.ravel().tolist()))}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_export, _add_request)
