"""The U-Transformer paper's comparisons as one command: Tables 1 and 3 by cross-validation.

Each setting is a ``build_model`` configuration trained and scored by
``common.train.crossval.run_cv`` in its own folder (so an interrupted study resumes
where it stopped), on the same folds; the table reports mean Dice (± std over
units: folds x repeats, each from its own seed) and the paired t-test p-value of
each setting against the U-Net over the same units.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

from common import atomic, stats, tables
from common.train import crossval
from common.train import segmentation as training

logger = logging.getLogger(__name__)

# name -> (variant, build_model options); paper Table 1 (variants) and Table 3 (ablation).
TABLE_1 = {
    "U-Net": ("unet", {}),
    "Attn U-Net": ("attention_unet", {}),
    "MHSA": ("mhsa", {}),
    "MHCA": ("mhca", {}),
    "U-Transformer": ("u_transformer", {}),
}
TABLE_3 = {
    "U-Net": ("unet", {}),
    "Attn U-Net": ("attention_unet", {}),
    "MHSA wo PE": ("mhsa", {"positional_encoding": False}),
    "MHSA w PE": ("mhsa", {"positional_encoding": True}),
    "MHCA 1 lvl wo PE": ("mhca", {"mhca_levels": 1, "positional_encoding": False}),
    "MHCA 1 lvl w PE": ("mhca", {"mhca_levels": 1, "positional_encoding": True}),
    "MHCA multi-lvl w PE": ("mhca", {"mhca_levels": 3, "positional_encoding": True}),
}
TABLES = {"table1": TABLE_1, "table3": TABLE_3}


def folder_name(setting: str) -> str:
    return setting.lower().replace(" ", "_").replace("-", "_")


def run_study(config: training.TrainConfig, out, table: str = "table1", folds: int = 5, repeats: int = 1,
              seeds=None) -> str:
    """Cross-validates every setting of ``table`` and returns the Markdown table (also in ``out``)."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {tuple(TABLES)}, got {table!r}")
    out = pathlib.Path(out)
    for setting, (variant, options) in TABLES[table].items():
        logger.info(f"== {setting}")
        setting_config = dataclasses.replace(config, model=variant,
                                             model_options={**config.model_options, **options})
        crossval.run_cv(setting_config, out / folder_name(setting), folds, repeats, seeds)
    markdown = format_study(out, TABLES[table])
    with atomic.atomic_path(out / f"{table}.md") as tmp:
        tmp.write_text(markdown + "\n", encoding="utf-8")
    return markdown


def format_study(out, settings) -> str:
    """One row of mean Dice % (± std over folds) per setting, with the paired t-test against U-Net."""
    out = pathlib.Path(out)
    baseline = out / folder_name("U-Net")
    rows = []
    for setting in settings:
        units = crossval.load_units(out / folder_name(setting))
        dice = [crossval.unit_mean(u, "dice") for u in units]
        p = "—" if setting == "U-Net" else f"{crossval.compare(baseline, out / folder_name(setting))['p_value']:.3g}"
        rows.append([setting, tables.mean_std(*stats.mean_std(dice), scale=100), p])
    return tables.markdown(["setting", "Dice % (mean ± std over folds)", "p vs U-Net (paired t-test)"], rows,
                           caption=tables.spread("folds"))
