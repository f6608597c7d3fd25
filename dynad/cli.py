"""The `dynad` command line: `synth`, `run`, `reproduce`. Each subcommand has --help."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynad.paths import SYNTHETIC_ROOT, default_synthetic_root

DESCRIPTION = """\
DynAD: Dynamic Addition of Noise in a Diffusion Model for Anomaly Detection (Tebbe & Tayyub, CVPR 2024 W).
Trains a latent diffusion model on normal images, picks each test image's noise level by kNN binning (DIC),
and scores it by its reconstruction. Relative paths are relative to the working folder."""

EPILOG = """\
examples:
  dynad run --preset demo --category board --out runs/board     # the synthetic data set, made when missing
  dynad run --preset mvtec --dataset mvtec --root /data/mvtec_ad --category bottle --out runs/bottle --threads 4
  dynad reproduce --preset demo --threads 1                     # = make demo: notebooks 01-07, results/demo/
  dynad synth --out data/synthetic"""


def _synth(args: argparse.Namespace) -> int:
    from dynad import synthetic

    cfg = synthetic.SynthConfig(
        image_size=args.size, n_train=args.n_train, n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect, seed=args.seed,
    )  # fmt: skip
    out = synthetic.ensure(args.out, cfg)
    print(f"synthetic data set (MVTec layout) in {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dynad.config import load_preset
    from dynad.experiment import run_experiment

    from dynad.results import ensure_data

    cfg = load_preset(args.preset, [*args.set, *([f"threads={args.threads}"] if args.threads is not None else [])])
    if args.root is None and args.dataset != "synthetic":
        print(f"error: --root is required for --dataset {args.dataset}", file=sys.stderr)
        return 2
    # The synthetic set is made when missing, at its default place only (a mistyped --root is an error).
    root = ensure_data(args.dataset, Path(args.root).resolve() if args.root else default_synthetic_root())
    result = run_experiment(cfg, args.dataset, root, args.category, args.out, models_dir=args.models)
    keys = ("image_auroc", "pixel_auroc", "pro", "knn_baseline_image_auroc")
    print(json.dumps({k: round(result[k], 4) for k in keys if k in result}))
    print(f"results in {args.out} (metrics.json, per_image.csv, per_defect.csv, figures/)")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from dynad.reproduce import reproduce

    roots = {k: str(Path(v).resolve()) for k, v in (args.root or [])}
    return reproduce(
        preset=args.preset, datasets=args.datasets, categories=args.categories, roots=roots,
        runs=args.runs, results=args.results, jobs=args.jobs, overrides=args.set, ablations=not args.no_ablations,
        threads=args.threads,
    )  # fmt: skip


def _root_pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError("expected DATASET=PATH, e.g. mvtec=/data/mvtec_ad")
    k, v = text.split("=", 1)
    return k, v


def build_parser() -> argparse.ArgumentParser:
    from dynad.data import DATASETS

    p = argparse.ArgumentParser(prog="dynad", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the built-in synthetic data set (MVTec layout)")
    s.add_argument("--out", type=Path, default=Path(SYNTHETIC_ROOT), help="output folder (default: %(default)s)")
    s.add_argument("--size", type=int, default=128, help="image size in px (default: %(default)s)")
    s.add_argument("--n-train", type=int, default=120)
    s.add_argument("--n-test-good", type=int, default=20)
    s.add_argument("--n-test-per-defect", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)

    r = sub.add_parser("run", help="train, adapt, fit the kNN and evaluate one category")
    r.add_argument("--preset", default="demo", help="demo, mvtec, visa, btad, mtd, tiny, or a YAML file")
    r.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="the folder layout of --root (default: %(default)s, the built-in data set)")
    r.add_argument("--root", help="data set folder (synthetic: the project's data/synthetic, generated when omitted)")
    r.add_argument("--category", required=True,
                   help="a category folder inside --root, e.g. bottle (mvtec), board or tiles (synthetic)")
    r.add_argument("--out", type=Path, required=True, help="output folder")
    r.add_argument("--models", type=Path, help="folder of trained models to reuse (default: OUT/models)")
    r.add_argument("--threads", type=int, help="torch CPU threads (= --set threads=N; the preset's by default, 1; "
                   "CPU numbers depend on it, 0: all cores)")  # fmt: skip
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    r.set_defaults(func=_run)

    q = sub.add_parser("reproduce", help="run the notebook sequence for every data set and category, then results/")
    q.add_argument("--preset", default="demo")
    q.add_argument("--datasets", nargs="+", help="default: the preset's data sets")
    q.add_argument("--categories", nargs="+", help="default: every category of each data set")
    q.add_argument("--root", action="append", type=_root_pair, metavar="DATASET=PATH", help="data set folder")
    q.add_argument("--runs", type=Path, default=Path("runs"), help="where the runs go (default: %(default)s)")
    q.add_argument("--results", type=Path, default=Path("results"), help="tables and figures (default: %(default)s)")
    q.add_argument("--jobs", type=int, default=1, help="categories run in parallel")
    q.add_argument("--threads", type=int, help="torch CPU threads of every run (= --set threads=N; the preset's by "
                   "default, 1; CPU numbers depend on it)")  # fmt: skip
    q.add_argument("--no-ablations", action="store_true", help="skip the ablation notebook")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    q.set_defaults(func=_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dynad.config import ConfigError
    from dynad.data import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
