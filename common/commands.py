"""What each ``zoo`` subcommand does, given its parsed arguments (see ``common.cli``)."""

from __future__ import annotations

import json
import pathlib
import sys

from common import atomic, volumes

# Formats written as one file, so a temporary file renamed into place is atomic.
SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


def synthetic_ct(args) -> None:
    from common import synthetic_ct as generator

    ids = generator.write_cohort(args.out, num_cases=args.cases, seed=args.seed, size=args.size,
                                 spacing=args.spacing)
    print(f"wrote {len(ids)} cases to {args.out}")


def prepare(args) -> None:
    from common import shards

    shards.prepare(args.cohort, args.out, num_classes=args.num_classes,
                   hu_window=args.window or volumes.DEFAULT_WINDOW,
                   min_label_fraction=args.min_label_fraction)


def _train_config(args):
    from common import training

    return training.TrainConfig(
        data=args.data, out=args.out, model=args.model, base_filters=args.base_filters,
        model_options=args.model_options,
        epochs=args.epochs, batch_size=args.batch_size, crop_size=args.crop_size,
        learning_rate=args.learning_rate, loss=args.loss, precision=args.precision,
        test_fraction=args.test_fraction, test_cases=args.test_cases, seed=args.seed,
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on a terminal, a line per epoch in logs
    )


def train(args) -> None:
    from common import training

    training.train(_train_config(args))


def cv(args) -> None:
    from common import crossval

    config = _train_config(args)
    if args.repeats:
        summary = crossval.run_repeats(config, args.out, args.repeats)
    else:
        summary = crossval.run_cv(config, args.out, args.folds)
    print(crossval.format_summary(summary))


def ablation(args) -> None:
    from common import ablation as ablation_module

    print(ablation_module.run_study(_train_config(args), args.out, args.table, args.folds))


def compare(args) -> None:
    from common import crossval

    result = crossval.compare(args.run_a, args.run_b, args.metric)
    print(f"| unit | {args.run_a} | {args.run_b} | difference |\n|---|---|---|---|")
    for name, a, b, d in zip(result["units"], result["a"], result["b"], result["difference"]):
        print(f"| {name} | {a:.4f} | {b:.4f} | {d:+.4f} |")
    print(f"paired t-test on mean {args.metric}: t = {result['t']:.3f}, p = {result['p_value']:.4g}")


def load_run(path) -> tuple[object, dict]:
    """Loads a model from a run folder or a ``.keras`` file, with the run's config if any."""
    import keras

    import common.losses  # noqa: F401  (registers the losses a saved model refers to)
    import unet_transformer  # noqa: F401  (registers its layers)

    path = pathlib.Path(path)
    model_path = path / "model.keras" if path.is_dir() else path
    config_path = model_path.parent / "config.json"
    if not model_path.exists():
        raise volumes.DataError(f"{model_path}: no such model (train one with `zoo train`)")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except (ValueError, OSError, KeyError) as error:
        raise volumes.DataError(f"{model_path}: cannot be loaded as a Keras model ({error})") from None
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    return model, config


def evaluate(args) -> None:
    from common import inference

    model, config = load_run(args.run)
    if not config:
        raise volumes.DataError(f"{args.run}: not a run folder (no config.json)")
    cohort = args.cohort or config.get("source")
    if not cohort:
        raise ValueError("--cohort: the run does not record its cohort; give it")
    wanted = args.cases or config["split"]["test"]
    cases = {c.case_id: c for c in volumes.find_cases(cohort)}
    missing = sorted(set(wanted) - set(cases))
    if missing:
        raise volumes.DataError(f"{cohort}: cases {missing} not found")
    results = inference.evaluate_cases(model, [cases[c] for c in wanted], config["num_classes"],
                                       config["hu_window"], args.batch_size)
    atomic.write_json(pathlib.Path(args.run) / "evaluation.json",
                             {case: {str(k): v for k, v in m.items()} for case, m in results.items()})
    print(inference.format_table(results, config["class_names"]))


def predict(args) -> None:
    import SimpleITK as sitk

    from common import inference

    output = pathlib.Path(args.output)
    if output.resolve() == pathlib.Path(args.input).resolve():
        raise ValueError(f"output: {output} is the input volume; choose another path")
    if not output.name.endswith(SINGLE_FILE_SUFFIXES):
        raise ValueError(f"output: {output} needs one of the suffixes {', '.join(SINGLE_FILE_SUFFIXES)}")
    model, config = load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_volume(args.input)
    labels = inference.predict_volume(model, image, hu_window, args.batch_size, source=args.input)
    with atomic.atomic_path(output) as tmp:
        sitk.WriteImage(labels, str(tmp), useCompression=True)
    print(f"wrote {output} ({'x'.join(map(str, labels.GetSize()))}, spacing {labels.GetSpacing()})")


def export(args) -> None:
    from common import export as export_module

    model, _ = load_run(args.model)
    path = pathlib.Path(args.model)
    name = args.name or (path.name if path.is_dir() else path.name.removesuffix(".keras"))
    version_dir = export_module.export_saved_model(model, args.base_dir, name, args.version,
                                                   server_base_path=args.server_base_path)
    print(f"exported {version_dir}")


def request(args) -> None:
    from common import serving_client

    image = volumes.read_slice(args.input, args.slice, args.window or volumes.DEFAULT_WINDOW)
    labels = serving_client.predict_labels(args.server, args.name, image)
    serving_client.write_labels(args.output, labels)
    print(f"wrote {args.output}: classes {sorted(set(labels.ravel().tolist()))}")


def attention_map(args) -> None:
    import numpy as np

    from common import attention_maps

    model, config = load_run(args.model)
    hu_window = args.window or config.get("hu_window", volumes.DEFAULT_WINDOW)
    image = volumes.read_slice(args.input, args.slice, hu_window)
    height, width = image.shape
    padded = np.pad(image, ((0, -height % 16), (0, -width % 16)))  # the model's stride
    maps = attention_maps.cross_attention_maps(model, padded, tuple(args.pixel))
    maps = {name: m[:height, :width] for name, m in maps.items()}
    attention_maps.render(args.output, image, maps, tuple(args.pixel))
    print(f"wrote {args.output}: {', '.join(maps)}")


def demo(args) -> None:
    from common import demo as demo_module

    demo_module.run(pathlib.Path(args.out), num_cases=args.cases, epochs=args.epochs,
                    base_filters=args.base_filters, seed=args.seed)
