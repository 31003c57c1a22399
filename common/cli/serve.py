"""Serving: ``zoo export`` (SavedModel for TF Serving, ``--pipeline`` for the whole inference, ``--verify`` to check
one) and ``request`` (a gRPC client)."""

from __future__ import annotations

import pathlib

from common.cli import options
from common.ct import volumes


def _add_export(sub):
    from common.cli import ct

    p = sub.add_parser("export", help="write a versioned SavedModel for TF Serving, or check one (--verify)")
    p.add_argument("model", nargs="?", help="run folder or .keras file; with --pipeline also a zoo cv folder")
    p.add_argument("base_dir", nargs="?", help="folder the model server watches")
    p.add_argument("--name", default=None, help="model name (default: the run folder's or file's name)")
    p.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    p.add_argument("--server-base-path", default=None,
                   help="where the server sees BASE_DIR/NAME, e.g. /models/NAME in docker")
    p.add_argument("--version-label", action="append", default=[], metavar="LABEL",
                   help="name this version LABEL (e.g. stable, canary) in models.config; repeatable. The model's "
                        "policy then serves exactly its labelled versions")
    p.add_argument("--verify", metavar="DIR", default=None,
                   help="instead of exporting, check a served model folder (BASE_DIR/NAME, or one version): first "
                        "every op of its graphs against the ops of the zoo's own exports, before anything runs (any "
                        "other op, e.g. a file or Python op, is refused by name), then the signature against its "
                        "metadata.json and the warm-up requests through it; exit status 2 on any mismatch")
    pipeline = p.add_argument_group(
        "pipeline", "--pipeline: one SavedModel from a raw HU volume [z, y, x] (LPS) to its uint8 labels, holding "
                    "zoo predict's inference with these options (common.serve.pipeline)")
    pipeline.add_argument("--pipeline", action="store_true", help="export the whole inference, not the network")
    pipeline.add_argument("--probabilities", action="store_true",
                          help="the pipeline also returns the probabilities [z, y, x, C]")
    ct.inference_options(pipeline)
    p.set_defaults(handler=export)


# The pipeline's options (common.cli.ct.inference_options) with their defaults: a plain export takes none.
PIPELINE_DEFAULTS = {"tile": "auto", "step": 0.5, "tta": None, "spacing": "none", "postprocess": False,
                     "batch_size": 8, "probabilities": False}


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

    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    if args.pipeline:
        return export_pipeline(args, name)
    given = [f"--{key.replace('_', '-')}" for key, value in PIPELINE_DEFAULTS.items() if getattr(args, key) != value]
    if given:
        raise ValueError(f"{', '.join(given)}: options of --pipeline exports; add --pipeline or drop them")
    model, config = registry.load_run(args.model)
    entry = registry.entry_of(model, config)
    kwargs = {"outputs": entry.serving_outputs(model)} if entry.serving_outputs else {}
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path,
                                                   facts=card.run_facts(entry.name, entry.task, config),
                                                   version_labels=args.version_label, **kwargs)
    print(f"exported {version_dir}")


def export_pipeline(args, name: str) -> None:
    """``zoo export --pipeline``: the run's, or a cv folder's, inference with ``zoo predict``'s options."""
    from common import registry
    from common.ct import ensemble
    from common.serve import card, pipeline

    if args.spacing == "auto":
        raise ValueError(pipeline.SPACING_REFUSED)
    loaded = ensemble.load(args.model)
    entry = registry.entry_of(loaded.models[0], loaded.config)
    if entry.task != "segmentation":
        raise ValueError(f"--pipeline: {args.model} is a {entry.task} model; the pipeline segments CT volumes")
    options = ensemble.options_for(loaded, args.tile, args.step, args.tta, args.spacing, args.postprocess)
    hu_window = loaded.config.get("hu_window", volumes.DEFAULT_WINDOW)
    version_dir = pipeline.export_pipeline(
        loaded.models, args.base_dir, name, options, hu_window, loaded.stride, args.batch_size, args.probabilities,
        args.version, args.server_base_path, card.run_facts(entry.name, entry.task, loaded.config),
        loaded.names, args.version_label)
    print(f"exported {version_dir}: raw HU volume [z, y, x] (LPS) -> uint8 labels, {len(loaded.models)} model(s), "
          f"{options.describe()}")


def verify(args) -> None:
    ignored = [flag for flag, value in (("MODEL", args.model), ("BASE_DIR", args.base_dir), ("--name", args.name),
                                        ("--version", args.version),
                                        ("--server-base-path", args.server_base_path),
                                        ("--version-label", args.version_label or None),
                                        ("--pipeline", args.pipeline or None)) if value is not None]
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
