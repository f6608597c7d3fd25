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

Reads RUN/maps.npz and RUN/per_image.csv (written by every `dynad run`) with `dynad.results.localization_table`,
which notebook 04 also plots; recomputes and chooses nothing. Writes <out>.csv and <out>.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynad.provenance import atomic_write
from dynad.report.format import to_markdown
from dynad.results import localization_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a `dynad run` output folder (maps.npz, per_image.csv)")
    p.add_argument("--out", type=Path, help="path without suffix (default: benchmarks/results/localization_<run>)")
    args = p.parse_args()
    for name in ("maps.npz", "per_image.csv"):
        if not (args.run / name).is_file():
            raise SystemExit(f"{args.run / name}: not found; RUN must be a `dynad run` output folder")
    table = localization_table(args.run)
    if table.share.sum() == 0:
        raise SystemExit(f"{args.run}: no defect pixel in its test masks, so there is nothing to localize")
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
