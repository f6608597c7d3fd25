r"""Wall time of `dynad reproduce` over two synthetic categories (tiles, board) with each executor.

    python benchmarks/bench_executors.py [--preset tiny] [--runs local1 local2 ray] [--n-train 24]
    python benchmarks/bench_executors.py --preset demo --demo-data --ablations \
        --out benchmarks/results/executors_demo.json

Each executor runs in a fresh folder (nothing reused: every model is trained) on its own synthetic set, one torch
thread per notebook kernel: `--executor local --jobs 1`, `--jobs 2`, and `--executor ray` on a local Ray cluster of
the machine's cores. The default is the tiny preset on a small 64 px synthetic set; `--demo-data --ablations` with
the demo preset is what `make demo` runs (the built-in data set at its default size, notebooks 01-07). Results go
to benchmarks/results/executors.json, written after every run and merged with the runs already there (so
`--runs ray` adds the Ray run to earlier local ones).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

from dynad import synthetic
from dynad.provenance import environment, write_json
from dynad.reproduce import reproduce
from dynad.synthetic import SynthConfig

HERE = Path(__file__).resolve().parent
RUNS = {"local1": {"executor": "local", "jobs": 1}, "local2": {"executor": "local", "jobs": 2}, "ray": {"executor": "ray"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--ablations", action="store_true", help="also run notebook 05")
    p.add_argument("--demo-data", action="store_true", help="the built-in data set at its default size (make demo's)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "executors.json")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dynad-bench-executors-"))
    data = SynthConfig() if args.demo_data else SynthConfig(image_size=64, n_train=args.n_train, n_test_good=4,
                                                             n_test_per_defect=2)  # fmt: skip
    result = {"preset": args.preset, "categories": ["tiles", "board"], "ablations": args.ablations,
              "n_train": data.n_train, "demo_data": args.demo_data, "cpu_count": os.cpu_count(),
              **environment(), "runs": {}}  # fmt: skip
    if args.out.is_file():
        result["runs"] = json.loads(args.out.read_text()).get("runs", {})
    for name in args.runs:
        root = synthetic.ensure(base / name / "synthetic", data, progress=False)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = reproduce(preset=args.preset, datasets=["synthetic"], categories=["tiles", "board"],
                           roots={"synthetic": str(root)}, runs=base / name / "runs", results=base / name / "results",
                           ablations=args.ablations, progress=False, threads=1, **RUNS[name])  # fmt: skip
        seconds = time.perf_counter() - t0
        result["runs"][name] = {**RUNS[name], "exit_code": rc, "wall_seconds": round(seconds, 1),
                                "load_average_before": round(load, 2), "load_average_after": round(os.getloadavg()[0], 2)}  # fmt: skip
        print(f"{name}: {seconds:.1f} s (exit {rc}, load {load:.1f})", flush=True)
        write_json(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
