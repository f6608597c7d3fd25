r"""Does a run's map point at the defect, or raise the whole defective image? A diagnosis of one run's test maps.

    python benchmarks/localization.py RUN [--out benchmarks/results/localization_NAME]

Pixel AUROC pools every pixel of every test image, and so mixes two things a user wants apart. For each defect type:

    pixel AUROC   the type's images with the normal ones, as in the run's per_defect.csv
    background    the non-defect pixels of the type's defective images against the pixels of the normal images:
                  above 0.5 when the map is raised over the whole defective image, which image AUROC rewards
                  and pooled pixel AUROC penalises (those pixels count as normal)
    within        the type's defect pixels against the non-defect pixels of the same images: whether the map
                  points at the defect inside its image (0.5: it does not)
    share         the type's part of all defect pixels: the pooled number is mostly the types with large masks

Reads RUN/maps.npz and RUN/per_image.csv (written by every `dynad run`); recomputes and chooses nothing. Writes
<out>.csv and <out>.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dynad import metrics
from dynad.provenance import atomic_write
from dynad.report.format import to_markdown

HERE = Path(__file__).resolve().parent


def _auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """AUROC of positives above negatives (1-D scores); NaN when either side is empty."""
    if negatives.size == 0 or positives.size == 0:
        return float("nan")
    labels = np.r_[np.zeros(negatives.size, bool), np.ones(positives.size, bool)]
    return metrics.image_auroc(labels, np.r_[negatives, positives])


def localization_table(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, types: np.ndarray) -> pd.DataFrame:
    """maps (N, H, W), masks (N, H, W) bool, labels (N,) 0/1, types (N,) -> a row per defect type and one for all
    (NaN where a type has no defect pixel: MTD and MVTec AD have defective images with empty masks)."""
    normal = labels == 0
    good = maps[normal].ravel()
    total = int(masks[~normal].sum())
    rows = []
    for defect in [*sorted(set(types[~normal])), "all"]:
        sel = ~normal if defect == "all" else (types == defect) & ~normal
        m, s = masks[sel], maps[sel]
        rows.append({
            "defect_type": defect,
            "images": int(sel.sum()),
            "share": float(m.sum() / max(total, 1)),
            "pixel_auroc": metrics.pixel_auroc(masks[sel | normal], maps[sel | normal]) if m.any() else float("nan"),
            "background": _auroc(good, s[~m]),
            "within": _auroc(s[~m], s[m]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a `dynad run` output folder (maps.npz, per_image.csv)")
    p.add_argument("--out", type=Path, help="path without suffix (default: benchmarks/results/localization_<run>)")
    args = p.parse_args()
    for name in ("maps.npz", "per_image.csv"):
        if not (args.run / name).is_file():
            raise SystemExit(f"{args.run / name}: not found; RUN must be a `dynad run` output folder")
    rows = pd.read_csv(args.run / "per_image.csv")
    with np.load(args.run / "maps.npz") as z:
        maps, masks = z["anomaly_map"].astype(np.float32), z["gt_mask"]
    if len(rows) != len(maps):
        raise SystemExit(f"{args.run}: per_image.csv has {len(rows)} rows but maps.npz {len(maps)} maps")
    if not masks[rows.label.to_numpy() == 1].any():
        raise SystemExit(f"{args.run}: no defect pixel in its test masks, so there is nothing to localize")
    table = localization_table(maps, masks, rows.label.to_numpy(), rows.defect_type.astype(str).to_numpy())
    out = args.out or HERE / "results" / f"localization_{args.run.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(f"{out}.csv"), "w") as f:
        table.to_csv(f, index=False)
    shown = table.copy()
    for c in ("share", "pixel_auroc", "background", "within"):
        shown[c] = (100 * shown[c]).round(1)
    made = ""
    if (args.run / "metrics.json").is_file():
        prov = json.loads((args.run / "metrics.json").read_text()).get("provenance", {})
        preset = prov.get("config", {}).get("preset")
        made = f" The run: preset {preset}, commit {prov.get('git_commit')}, {prov.get('created')}."
    note = (f"`python benchmarks/localization.py {args.run}`.{made} In percent. background: the non-defect pixels of "
            "the type's defective images against the normal images' pixels; within: defect pixels against the "
            "non-defect pixels of the same images; share: of all defect pixels. A diagnosis of test maps."
            " Nothing is chosen by it.")
    with atomic_write(Path(f"{out}.md"), "w") as f:
        f.write(to_markdown(shown, f"Where the map is raised: {args.run.name}") + "\n\n" + note + "\n")
    print(to_markdown(shown))


if __name__ == "__main__":
    main()
