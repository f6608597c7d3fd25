"""The `dynad` command line: `synth`, `run`, `tune`, `reproduce`, `predict`. Each subcommand has --help."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dynad.paths import SYNTHETIC_ROOT, default_synthetic_root

SURFACES_ROOT = "data/surfaces"  # dynad synth --from-images

DESCRIPTION = """\
DynAD: Dynamic Addition of Noise in a Diffusion Model for Anomaly Detection (Tebbe & Tayyub, CVPR 2024 W).
Trains a latent diffusion model on normal images, picks each test image's noise level by kNN binning (DIC),
and scores it by its reconstruction. Relative paths are relative to the working folder."""

EPILOG = """\
examples:
  dynad run --preset demo --category board --out runs/board     # the synthetic data set, made when missing
  dynad run --preset mvtec --dataset mvtec --root /data/mvtec_ad --category bottle --out runs/bottle --threads 4
  dynad reproduce --preset demo --threads 1 --jobs 2            # = make demo: notebooks 01-07, results/demo/
  dynad synth --out data/synthetic"""


def _synth(args: argparse.Namespace) -> int:
    from dynad import synthetic
    from dynad.config import ConfigError

    counts = {k: getattr(args, k) for k in ("n_train", "n_test_good", "n_test_per_defect")
              if getattr(args, k) is not None}
    if args.from_images is not None:
        if not args.from_images.is_dir():
            raise ConfigError(f"dynad synth --from-images: {args.from_images} is not a folder")
        from dynad.predict import expand_inputs  # the folder -> image files rule of `dynad predict`

        files, _ = expand_inputs([args.from_images])  # an empty folder: on_photographs says how many it needs
        try:
            size = 256 if args.size is None else args.size
            out = synthetic.on_photographs(files, args.out or SURFACES_ROOT, args.category, size, seed=args.seed,
                                           **counts)  # fmt: skip
        except (ValueError, FileExistsError) as e:
            raise ConfigError(f"dynad synth --from-images: {e}") from None
        used = len((out / "sources.txt").read_text().splitlines())  # which photograph became which image
        left_out = (out / "left_out.txt").read_text().splitlines() if (out / "left_out.txt").exists() else []
        if left_out:
            print(f"{len(left_out)} files were left out as masks or blank frames, of at most two colours "
                  f"({left_out[0].rsplit(': ', 1)[0]}, ...; left_out.txt)")  # fmt: skip
        if used + len(left_out) < len(files):
            print(f"{used} of the {len(files)} {'files' if left_out else 'photographs'} were used, the first in path "
                  f"order (sources.txt); --n-train, --n-test-good and --n-test-per-defect take more")  # fmt: skip
        print(f"{args.from_images}'s photographs with painted defects (folder data set, MVTec layout) in {out}:\n"
              f"  dynad run --preset cpu --dataset folder --root {out.parent} --category {args.category} "
              f"--out runs/{args.category}")
        return 0
    try:
        cfg = synthetic.SynthConfig(image_size=128 if args.size is None else args.size, seed=args.seed, **counts)
    except ValueError as e:  # out-of-range sizes and counts: one line, not a traceback
        raise ConfigError(f"dynad synth: {e}") from None
    out = synthetic.ensure(args.out or Path(SYNTHETIC_ROOT), cfg)
    print(f"synthetic data set (MVTec layout) in {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dynad.checks import check_config
    from dynad.config import load_preset
    from dynad.experiment import run_experiment

    from dynad.results import ensure_data

    cfg = load_preset(args.preset, [*args.set, *([f"threads={args.threads}"] if args.threads is not None else [])])
    if args.dry_run:
        return _dry_run(cfg, args)
    if args.category is None or args.out is None:
        print("error: dynad run needs --category and --out (or --dry-run)", file=sys.stderr)
        return 2
    cfg = check_config(cfg.for_category(args.category))
    if args.root is None and args.dataset != "synthetic":
        print(f"error: --root is required for --dataset {args.dataset}", file=sys.stderr)
        return 2
    from dynad import distributed

    # The synthetic set is made when missing, at its default place only (a mistyped --root is an error); under
    # `accelerate launch`, one process writes it.
    with distributed.state().main_process_first():
        root = ensure_data(args.dataset, Path(args.root).resolve() if args.root else default_synthetic_root())
    result = run_experiment(cfg, args.dataset, root, args.category, args.out, models_dir=args.models,
                            overwrite=args.overwrite)  # fmt: skip
    if not result:  # another process than the main one of `accelerate launch`: the main one reports
        return 0
    keys = ("image_auroc", "pixel_auroc", "pro", "knn_baseline_image_auroc")
    # None: a pixel metric of a test set with image labels only
    print(json.dumps({k: None if result[k] is None else round(result[k], 4) for k in keys if k in result}))
    print(f"results in {args.out} (metrics.json, per_image.csv, per_defect.csv, figures/)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from dynad.config import load_preset
    from dynad.results import ensure_data
    from dynad.tuning import TuneError, parse_grid, tune

    cfg = load_preset(args.preset, args.set)
    if args.root is None and args.dataset != "synthetic":
        print(f"error: --root is required for --dataset {args.dataset}", file=sys.stderr)
        return 2
    grid = parse_grid(args.grid)
    root = ensure_data(args.dataset, Path(args.root).resolve() if args.root else default_synthetic_root())
    try:
        best = tune(cfg, args.dataset, root, args.category, args.out, models_dir=args.models, grid=grid,
                    budget_minutes=args.budget_minutes)  # fmt: skip
    except TuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}))
    print(f"every grid point in {args.out / 'tune.csv'}; the chosen preset in {args.out / 'tuned.yaml'}")
    return 0


def _dry_run(cfg, args: argparse.Namespace) -> int:
    from dynad import distributed
    from dynad.dryrun import dry_run, format_report
    from dynad.provenance import write_json

    report = dry_run(cfg, steps=args.dry_run_steps, batch=args.dry_run_batch, n_test=args.dry_run_images)
    if distributed.state().is_main_process:
        print(format_report(report))
        if args.out is not None:
            write_json(args.out / "dry_run.json", report)
            print(f"report in {args.out / 'dry_run.json'}")
    return 0 if report["maps_finite"] else 1


def _reproduce(args: argparse.Namespace) -> int:
    from dynad.reproduce import reproduce

    roots = {k: str(Path(v).resolve()) for k, v in (args.root or [])}
    return reproduce(
        preset=args.preset, datasets=args.datasets, categories=args.categories, roots=roots,
        runs=args.runs, results=args.results, jobs=args.jobs, overrides=args.set, ablations=not args.no_ablations,
        threads=args.threads, executor=args.executor, address=args.address,
    )  # fmt: skip


def _predict(args: argparse.Namespace) -> int:
    from dynad.predict import PredictError, predict

    try:
        s = predict(args.run_dir, args.images, args.out, threshold=args.threshold, quantile=args.quantile,
                    batch_size=args.batch_size, device=args.device)  # fmt: skip
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    speed = "" if s["images_per_second"] is None else f"; {s['images_per_second']:.2f} images/s"
    print(f"{s['n_images']} images scored, {s['n_anomalous']} anomalous at threshold {s['threshold']:.4g} "
          f"({s['threshold_source']}); {len(s['skipped'])} skipped{speed}")
    print(f"results in {args.out} (predictions.csv, overlays/, masks/, summary.json, summary.png)")
    return 1 if s["skipped"] else 0


def _category(text: str) -> str:
    """A category name as typed; the shell's tab completion ends a folder name with '/', which is not part of it."""
    return text.rstrip("/\\") or text


def _root_pair(text: str) -> tuple[str, str]:
    from dynad.data import DATASETS

    if "=" not in text:
        raise argparse.ArgumentTypeError("expected DATASET=PATH, e.g. mvtec=/data/mvtec_ad")
    k, v = text.split("=", 1)
    if k not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown data set {k!r} in {text!r}; choose one of: {', '.join(DATASETS)}")
    return k, v


class _Version(argparse.Action):
    """`dynad --version`: the package version and the checkout's commit, what a bug report needs."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print dynad's version and commit, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from dynad import __version__
        from dynad.provenance import git_commit  # a git call, only when asked

        print(f"dynad {__version__} (commit {git_commit()})")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from dynad.data import DATASETS

    p = argparse.ArgumentParser(prog="dynad", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the built-in synthetic data set (MVTec layout), or paint its defects "
                                     "on your own normal photographs (--from-images)")  # fmt: skip
    s.add_argument("--out", type=Path,
                   help=f"output folder (default: {SYNTHETIC_ROOT}; {SURFACES_ROOT} with --from-images)")
    s.add_argument("--size", type=int, help="image size in px (default: 128; 256 with --from-images)")
    s.add_argument("--n-train", type=int, help="normal training images (default: 120; 150 with --from-images)")
    s.add_argument("--n-test-good", type=int, help="normal test images (default: 20; 40 with --from-images)")
    s.add_argument("--n-test-per-defect", type=int,
                   help="test images per defect type (default: 10; 15 with --from-images)")
    s.add_argument("--seed", type=int, default=0,
                   help="random seed of the images and defects (default: %(default)s)")
    s.add_argument("--from-images", type=Path, metavar="DIR",
                   help="a folder of normal photographs, taken in path order: the first become training images, "
                        "the next normal test images, the next get one defect type each (spot, scratch, patch, "
                        "missing) with its mask; writes OUT/CATEGORY")
    s.add_argument("--category", default="surface", type=_category,
                   help="with --from-images: the category folder (default: %(default)s)")
    s.set_defaults(func=_synth)

    r = sub.add_parser("run", help="train, adapt, fit the kNN and evaluate one category")
    r.add_argument("--preset", default="demo", help="demo, cpu, mvtec, visa, btad, mtd, tiny, or a YAML file")
    r.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="the folder layout of --root (default: %(default)s, the built-in data set)")
    r.add_argument("--root", help="data set folder (synthetic: the project's data/synthetic, generated when omitted)")
    r.add_argument("--category", type=_category,
                   help="a category folder inside --root, e.g. bottle (mvtec), board or tiles (synthetic); required "
                        "unless --dry-run")
    r.add_argument("--out", type=Path, help="output folder (required unless --dry-run)")
    r.add_argument("--models", type=Path, help="folder of trained models to reuse (default: OUT/models)")
    r.add_argument("--threads", type=int, help="torch CPU threads (= --set threads=N; the preset's by default, 1; "
                   "CPU numbers depend on it, 0: all cores)")  # fmt: skip
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    r.add_argument("--overwrite", action="store_true", help="replace the results of another run in OUT")
    r.add_argument("--dry-run", action="store_true",
                   help="build the preset's real architectures and run a few steps of every stage on synthetic images "
                        "(no data or weights needed; random weights labelled so); print seconds per step and memory")
    r.add_argument("--dry-run-steps", type=int, default=3, help="optimizer steps per trained stage (default: 3)")
    r.add_argument("--dry-run-batch", type=int, default=1, help="batch size of the dry run (default: 1)")
    r.add_argument("--dry-run-images", type=int, default=2, help="test images inferred by the dry run (default: 2)")
    r.set_defaults(func=_run)

    t = sub.add_parser("tune", help="choose T_max, eta, lambda, sigma and training settings on validation "
                                    "pseudo-defects (no test labels)")  # fmt: skip
    t.add_argument("--preset", default="cpu", help="the preset to start from (its training settings are kept "
                                                   "unless a --grid axis names one)")  # fmt: skip
    t.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="the folder layout of --root (default: %(default)s)")
    t.add_argument("--root", help="data set folder")
    t.add_argument("--category", required=True, type=_category, help="a category folder inside --root")
    t.add_argument("--out", type=Path, required=True, help="output folder: tune.csv, tuned.yaml, models/, scored/")
    t.add_argument("--models", type=Path, help="folder of trained models to reuse (default: OUT/models)")
    t.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="replace one axis of the grid, e.g. dic.t_max=40,80 (repeatable); any other config key is a "
                        "training setting, fitted once per value: denoiser.epochs=60,120, autoencoder.source=taef2,"
                        "train, 'denoiser.block_out_channels=[32,64,64],[64,128,128]'")
    t.add_argument("--budget-minutes", type=float, metavar="M",
                   help="a training setting whose fit takes longer than M minutes is scored and listed but not chosen")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.set_defaults(func=_tune)

    q = sub.add_parser("reproduce", help="run the notebook sequence for every data set and category, then results/")
    q.add_argument("--preset", default="demo", help="the preset of every run (default: %(default)s)")
    q.add_argument("--datasets", nargs="+", choices=DATASETS, metavar="DATASET",
                   help=f"{', '.join(DATASETS)} (default: those --root names, else the preset's)")
    q.add_argument("--categories", nargs="+", type=_category,
                   help="default: every category of each data set (folder: each sub-folder of its root); with "
                        "several data sets, each runs in those that have it")
    q.add_argument("--root", action="append", type=_root_pair, metavar="DATASET=PATH", help="data set folder")
    q.add_argument("--runs", type=Path, default=Path("runs"), help="where the runs go (default: %(default)s)")
    q.add_argument("--results", type=Path, default=Path("results"), help="tables and figures (default: %(default)s)")
    q.add_argument("--jobs", type=int, default=1, help="categories run in parallel (local executor)")
    q.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: processes on this machine; ray: one Ray task per category "
                        "(pip install -e '.[cluster]')")
    q.add_argument("--address", help="Ray cluster address (default: start a local one; 'auto': the one running here)")
    q.add_argument("--threads", type=int, help="torch CPU threads of every run (= --set threads=N; the preset's by "
                   "default, 1; CPU numbers depend on it)")  # fmt: skip
    q.add_argument("--no-ablations", action="store_true", help="skip the ablation notebook")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    q.set_defaults(func=_reproduce)

    d = sub.add_parser("predict", help="score new images with a fitted run (predictions.csv, overlays, masks)")
    d.add_argument("run_dir", type=Path, help="a `dynad run` output folder (holds pipeline.pt), or its parent of eval/")
    d.add_argument("images", nargs="+", help="image files, folders (recursive) or glob patterns (quote them)")
    d.add_argument("--out", type=Path, required=True, help="output folder")
    d.add_argument("--threshold", type=float, help="image-score threshold (default: the run's, see dynad/predict.py)")
    d.add_argument("--quantile", type=float, help="training-score quantile when the run has no validation threshold "
                   "(default: the run's predict.threshold_quantile, 0.99)")  # fmt: skip
    d.add_argument("--batch-size", type=int, help="images per batch (default: the run's data.batch_size)")
    d.add_argument("--device", help="cpu, cuda, ... (default: the run's device setting)")
    d.set_defaults(func=_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dynad.config import ConfigError
    from dynad.data import DatasetError
    from dynad.run_folder import RunFolderError
    from dynad.training import CheckpointError, DivergedError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, RunFolderError, CheckpointError, DivergedError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback from wherever torch was
        print(f"\ninterrupted: {INTERRUPTED[args.command]}", file=sys.stderr)
        return 130


# What each command keeps when Ctrl-C stops it, and what running it again does.
INTERRUPTED = {
    "run": "what was written is kept (results only when complete, checkpoints every checkpoint_every epochs); "
           "the same command goes on from there",
    "tune": "what was written is kept (trained models, checkpoints every checkpoint_every epochs, each scored "
            "setting's rows in OUT/scored/; tune.csv and tuned.yaml only at the end); the same command goes on from "
            "there",
    "reproduce": "finished notebooks are kept; the same command reruns only what is missing",
    "synth": "nothing was changed: the data set is written in a temporary folder and moved into place when complete",
    "predict": "the images scored so far are kept (predictions.partial.csv, overlays, masks); the same command "
               "scores only the others",
}


if __name__ == "__main__":
    sys.exit(main())
