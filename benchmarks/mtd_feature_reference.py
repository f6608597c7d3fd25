"""How far the MTD preset's features go on Magnetic Tile without any reconstruction: a reference for `dynad run`.

    python benchmarks/mtd_feature_reference.py [--root ../shared/data/magnetic-tile] [--sizes 128] [--bank 60000]

Not the paper's method: a PatchCore-style patch kNN (no coreset) with the backbone and map blocks of the `mtd`
preset (MobileNetV2 ImageNet weights, the one offline source on this machine). Every training patch feature
(the map blocks, 3 x 3 average-pooled, upsampled to the first block's grid and concatenated) goes into a memory
bank, randomly subsampled to `--bank` rows; a test patch scores its L2 distance to the nearest bank row; the map
is upsampled to the image and smoothed, and the image score is its maximum. DynAD's feature map compares an
image with its reconstruction under the same features, so when these features cannot separate a defect from
normal texture, neither can DynAD's feature term. Results go to benchmarks/results/mtd_feature_reference.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from dynad import metrics
from dynad.config import load_preset
from dynad.data import make_index
from dynad.experiment import load_split
from dynad.features import build_extractor
from dynad.provenance import git_commit, versions, write_json

HERE = Path(__file__).resolve().parent


def patch_features(extractor, images: torch.Tensor, layers, batch: int = 32) -> torch.Tensor:
    """(N, 3, S, S) -> (N, C, h, w): the blocks pooled 3 x 3, upsampled to the first block's grid, concatenated."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            f = extractor(images[i : i + batch])
            h = f[layers[0]].shape[-1]
            out.append(torch.cat([F.interpolate(F.avg_pool2d(f[n], 3, 1, 1), size=h, mode="bilinear") for n in layers], 1))
    return torch.cat(out)


def run(root: Path, size: int, bank_size: int, seed: int) -> dict:
    t0 = time.perf_counter()
    cfg = load_preset("mtd", [f"data.image_size={size}", "features.input_size=null"])
    index = make_index("mtd", root, "magnetic_tile")
    train, test = load_split(index, "train", cfg, False), load_split(index, "test", cfg, False)
    extractor = build_extractor(cfg.features).eval()
    layers = list(cfg.features.map_layers)
    f_train = patch_features(extractor, train["images"], layers)
    f_test = patch_features(extractor, test["images"], layers)
    n, c, h, _ = f_test.shape
    bank = f_train.permute(0, 2, 3, 1).reshape(-1, c)  # (N_train * h * h, C)
    bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:bank_size]]
    queries = f_test.permute(0, 2, 3, 1).reshape(-1, c)  # (N_test * h * h, C)
    dist = torch.cat([torch.cdist(q, bank).min(dim=1).values for q in queries.split(4096)]).reshape(n, 1, h, h)
    maps = F.interpolate(dist, size=size, mode="bilinear")
    sigma = 4 * size / 256  # the paper's sigma 4 at 256 px, scaled
    maps = gaussian_blur(maps, kernel_size=2 * int(4 * sigma) + 1, sigma=sigma)[:, 0].numpy()  # (N, S, S)
    res = metrics.evaluate(test["labels"], maps.reshape(n, -1).max(axis=1), test["masks"].numpy(), maps)
    return {"image_size": size, "bank": int(len(bank)), "layers": layers, "weights": extractor.weights_label,
            "image_auroc": res["image_auroc"], "pixel_auroc": res["pixel_auroc"], "pro": res["pro"],
            "seconds": time.perf_counter() - t0}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=HERE.parent.parent / "shared" / "data" / "magnetic-tile")
    p.add_argument("--sizes", type=int, nargs="+", default=[128])
    p.add_argument("--bank", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "mtd_feature_reference.json")
    args = p.parse_args()
    if not args.root.is_dir():
        print(f"no Magnetic Tile data at {args.root} (pass --root); nothing measured", file=sys.stderr)
        return 2
    rows = []
    for size in args.sizes:
        rows.append(run(args.root, size, args.bank, args.seed))
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    write_json(args.out, {"results": rows, "threads": torch.get_num_threads(), "git_commit": git_commit(),
                          "versions": versions()})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
