"""Serving: ``zoo export`` (SavedModel for TF Serving) and ``request`` (a gRPC client)."""

from __future__ import annotations

import pathlib

from common.cli import options
from common.ct import volumes


def _add_export(sub):
    p = sub.add_parser("export", help="write a versioned SavedModel for TF Serving")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("base_dir", help="folder the model server watches")
    p.add_argument("--name", default=None, help="model name (default: the run folder's or file's name)")
    p.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    p.add_argument("--server-base-path", default=None,
                   help="where the server sees BASE_DIR/NAME, e.g. /models/NAME in docker")
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
    from common import registry
    from common.serve import export as export_module

    model, config = registry.load_run(args.model)
    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    serving_outputs = registry.entry_of(model, config).serving_outputs
    kwargs = {"outputs": serving_outputs(model)} if serving_outputs else {}
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path, **kwargs)
    print(f"exported {version_dir}")


def request(args) -> None:
    from common.serve import client as serving_client

    image = volumes.read_slice(args.input, args.slice, args.window or volumes.DEFAULT_WINDOW)
    labels = serving_client.predict_labels(args.server, args.name, image)
    serving_client.write_labels(args.output, labels)
    print(f"wrote {args.output}: classes {sorted(set(labels.ravel().tolist()))}")


# Each subcommand's parser, in the order ``zoo --help`` lists them.
PARSERS = (_add_export, _add_request)
