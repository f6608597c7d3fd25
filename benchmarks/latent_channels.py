r"""Does any latent channel's reconstruction error point at a defect type that the latent map misses? A diagnosis.

    python benchmarks/latent_channels.py RUN [--out benchmarks/results/latent_channels_NAME]

The latent map is the mean over the C latent channels of |z0_hat - z0| (Eq. 9). When a defect type scores at chance
*within* its images (`benchmarks/localization.py`: Magnetic Tile's unevenness), the question is whether the mean hides
channels that do see it, which weighting the channels (by their training spread, say) would then recover. This
script reloads RUN/pipeline.pt, reconstructs the run's test images again with the run's own T_hat, and splits
each channel's |z0_hat - z0|, upsampled as the latent map is, with `dynad.metrics.localization_split`. Unsmoothed,
so that the channels are compared as they are. Writes <out>.csv (a row per channel and one for the channel mean)
and <out>.md (per defect type: the channel mean, the best and the median channel).

It reads test masks, so it chooses nothing: it only says whether a channel weighting is worth a validation run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dynad import metrics
from dynad.data import load_image
from dynad.pipeline import DynAD
from dynad.provenance import atomic_write, git_commit, set_threads
from dynad.report.format import to_markdown

HERE = Path(__file__).resolve().parent


def channel_errors(pipe: DynAD, paths: list[str], t_hat: np.ndarray, batch: int = 32) -> torch.Tensor:
    """(N, C, h, w) |z0_hat - z0| of the images at `paths`, each reconstructed from its own T_hat."""
    size, out = pipe.cfg.data.image_size, []
    for i in tqdm(range(0, len(paths), batch), desc="reconstruct", leave=False):
        x = torch.stack([load_image(p, size) for p in paths[i : i + batch]])
        r = pipe.infer(x, keep_latents=True)
        # One T_hat per image as the run had it (DIC is deterministic; this re-derives and checks it).
        if not np.array_equal(r["t_hat"], t_hat[i : i + batch]):
            raise SystemExit(f"T_hat of images {i}..{i + batch} differs from the run's per_image.csv")
        out.append((r["z0_hat"] - r["z0"]).abs())
    return torch.cat(out)


def split_rows(err: torch.Tensor, masks: np.ndarray, labels: np.ndarray, types: np.ndarray, size: int) -> list[dict]:
    """A row per channel and one for their mean: each defect type's `within` and `background`."""
    maps = {f"channel {c}": err[:, c] for c in range(err.shape[1])}
    maps = {"mean (the latent map)": err.mean(dim=1), **maps}
    rows = []
    for name, m in tqdm(maps.items(), desc="split", leave=False):
        up = F.interpolate(m[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
        for r in metrics.localization_split(up, masks, labels, types):
            rows.append({"map": name, **r})
    return rows


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per defect type: within of the channel mean, of the best and the median channel."""
    out = []
    for defect, g in table.groupby("defect_type", sort=False):
        mean = g[g["map"].str.startswith("mean")].iloc[0]
        ch = g[g["map"].str.startswith("channel")].dropna(subset=["within"])
        if ch.empty:
            continue
        best = ch.loc[ch.within.idxmax()]
        out.append({"defect_type": defect, "share": 100 * mean.share, "within, channel mean": 100 * mean.within,
                    "within, best channel": 100 * best.within, "best channel": best["map"].split()[-1],
                    "within, median channel": 100 * ch.within.median(),
                    "within, worst channel": 100 * ch.within.min()})  # fmt: skip
    return pd.DataFrame(out).round(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a `dynad run` output folder (pipeline.pt, per_image.csv, maps.npz)")
    p.add_argument("--out", type=Path, help="path without suffix (default: benchmarks/results/latent_channels_<run>)")
    p.add_argument("--threads", type=int, help="torch threads (default: the run's)")
    args = p.parse_args()
    for name in ("pipeline.pt", "per_image.csv", "maps.npz"):
        if not (args.run / name).is_file():
            raise SystemExit(f"{args.run / name}: not found; RUN must be a `dynad run` output folder")
    t0 = time.perf_counter()
    pipe = DynAD.load(args.run / "pipeline.pt", device="cpu")
    set_threads(args.threads or pipe.cfg.threads)
    rows = pd.read_csv(args.run / "per_image.csv", keep_default_na=False)  # a defect type may be called "NA"
    with np.load(args.run / "maps.npz") as z:
        masks = z["gt_mask"]
    err = channel_errors(pipe, list(rows.path), rows.t_hat.to_numpy())
    table = pd.DataFrame(split_rows(err, masks, rows.label.to_numpy(), rows.defect_type.to_numpy(), masks.shape[-1]))
    out = args.out or HERE / "results" / f"latent_channels_{args.run.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(f"{out}.csv"), "w") as f:
        table.to_csv(f, index=False)
    metrics_file = args.run / "metrics.json"
    prov = json.loads(metrics_file.read_text()).get("provenance", {}) if metrics_file.is_file() else {}
    note = (f"`python benchmarks/latent_channels.py {args.run}`, commit {git_commit()}, threads "
            f"{args.threads or pipe.cfg.threads}, {time.perf_counter() - t0:.0f} s. The run: preset "
            f"{prov.get('config', {}).get('preset')}, commit {prov.get('git_commit')}, {prov.get('created')}; "
            f"{err.shape[1]} latent channels. In percent; within: a type's defect pixels against the non-defect "
            "pixels of the same images, per channel's |z0_hat - z0| (unsmoothed). A diagnosis of test maps: nothing "
            "is chosen by it.")
    with atomic_write(Path(f"{out}.md"), "w") as f:
        f.write(to_markdown(summary(table), f"Latent channels within their images: {args.run.name}") + "\n\n" + note + "\n")
    print(Path(f"{out}.md").read_text())


if __name__ == "__main__":
    main()
