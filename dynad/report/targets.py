"""The paper's numbers (dynad/targets.yaml) and the names and order of its rows: what every table sets ours beside."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

METRICS = ("image_auroc", "pixel_auroc", "pro")

# Variant names of dynad.ablations.ablation_variants, in the order of the paper's tables.
FULL = "DIC (full method)"
TABLE4_ORDER = ("fixed 25% T_max", "fixed 50% T_max", "fixed 75% T_max", "fixed 100% T_max", FULL)
TABLE5_ORDER = ("neither (noise, no DA)", "DS only", "DA only", FULL)
SPACE_ORDER = (FULL, "pixel space")
TABLE5_FLAGS = {  # (noiseless scaling, domain adaptation)
    "neither (noise, no DA)": ("no", "no"),
    "DS only": ("yes", "no"),
    "DA only": ("no", "yes"),
    FULL: ("yes", "yes"),
}
ABLATION_TITLES = {
    "table4": "Table 4: fixed steps vs DIC",
    "table5": "Table 5: noiseless scaling (DS) and domain adaptation (DA)",
    "space": "Latent vs pixel space",
}
FIG6_VARIANTS = ("fixed 100% T_max", "fixed 75% T_max", "fixed 50% T_max", "fixed 25% T_max", FULL)


def load_targets() -> dict[str, Any]:
    """The paper's numbers (dynad/targets.yaml, in percent)."""
    return yaml.safe_load((resources.files("dynad") / "targets.yaml").read_text())
