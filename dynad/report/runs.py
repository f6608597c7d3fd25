"""Finding finished runs, and the notebooks' plumbing: data folders, models folders, markers, input fingerprints.

A run folder (`runs/<preset>/<dataset>/<category>`, written by notebooks 01-05) holds:
    eval/                 `dynad.experiment.run_experiment`: metrics.json, per_image.csv, dic.json, maps.npz,
                          pipeline.pt
    ablations/            `dynad.ablations.run_ablations`: ablations.csv and variants/<name>/ (each a run_experiment)
    <notebook>.done.json  the marker each notebook writes last (its parameters and outputs)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from dynad import run_folder, synthetic
from dynad.data import DatasetError
from dynad.experiment import is_complete
from dynad.paths import default_synthetic_root, project_path
from dynad.provenance import write_json


def ensure_data(dataset: str, root: str | Path) -> Path:
    """The data folder, absolute (a relative `root` is relative to the project root, see dynad/paths.py).

    The synthetic set is generated (default SynthConfig) only at its default place, data/synthetic: a mistyped root
    is an error, not a new data set. Other data sets must exist.
    """
    root = project_path(root)
    if dataset == "synthetic" and not root.exists():
        if root != default_synthetic_root():
            raise DatasetError(f"synthetic data folder {root} does not exist (it is generated only at "
                               f"{default_synthetic_root()}; write one elsewhere with `dynad synth --out {root}`)")
        synthetic.ensure(root)
    if root.is_file():
        raise DatasetError(f"data folder {root} (dataset {dataset!r}) is a file, not a folder (an archive must be "
                           f"unpacked first)")  # fmt: skip
    if not root.is_dir():
        raise DatasetError(f"data folder {root} (dataset {dataset!r}) does not exist")
    return root


def models_dir_for(run_dir: str | Path, models_dir: str | Path | None = "") -> Path:
    """Where trained models live: `models_dir` when given, else `run_dir/models` (shared by notebooks 01-05)."""
    return project_path(models_dir) if models_dir else project_path(run_dir) / "models"


def marker_path(run_dir: str | Path, stem: str) -> Path:
    return Path(run_dir) / f"{stem}.done.json"


def write_marker(run_dir: str | Path, stem: str, parameters: dict[str, Any], outputs: Iterable = (), **extra) -> Path:
    """The last thing a notebook does: record its parameters and outputs in `run_dir/<stem>.done.json` (atomic).

    Each output file's size and sha256 are recorded too: `marker_matches` redoes the notebook when one is missing
    or changed.
    """
    path = marker_path(run_dir, stem)
    outputs = sorted(str(o) for o in outputs)
    write_json(path, {
        "notebook": stem, "parameters": _jsonable(parameters), "outputs": outputs,
        "output_files": run_folder.stamp_outputs(outputs, run_dir),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    })  # fmt: skip
    return path


def read_marker(run_dir: str | Path, stem: str) -> dict[str, Any] | None:
    path = marker_path(run_dir, stem)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_matches(run_dir: str | Path, stem: str, parameters: dict[str, Any], **extra) -> bool:
    """True when the notebook finished with these parameters (and these extra recorded values, e.g. `inputs`), and
    every output it recorded is still there as it wrote it (a run folder among them still complete)."""
    m = read_marker(run_dir, stem)
    if m is None:
        return False
    recorded = m.get("parameters", {})
    if any(recorded.get(k) != v for k, v in _jsonable(parameters).items()):
        return False
    if not run_folder.outputs_intact(m, run_dir):
        return False
    return all(m.get(k) == v for k, v in extra.items())


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def fingerprint(paths: Iterable[Path], root: Path) -> str:
    """Hash of (relative path, size, mtime) of files: changes when any input was rewritten."""
    h = hashlib.sha256()
    for p in sorted(set(paths)):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def run_inputs(run_dir: str | Path) -> list[Path]:
    """The files of one run folder that the summary notebooks read."""
    run_dir = Path(run_dir)
    names = ("metrics.json", "per_image.csv", "dic.json", "maps.npz", "pipeline.pt")
    files = [run_dir / "eval" / n for n in names] + [run_dir / "ablations" / "ablations.csv"]
    files += sorted((run_dir / "ablations" / "variants").glob("*/metrics.json"))
    return files


def eval_fingerprint(run_dir: str | Path) -> str:
    """Fingerprint of one run's evaluation files (what notebook 07 reads)."""
    run_dir = Path(run_dir)
    return fingerprint(run_inputs(run_dir)[:5], run_dir)


def inputs_fingerprint(runs_dir: str | Path, preset: str) -> str:
    """Fingerprint of every run's result files under runs_dir/<preset>: 06 reruns only when one changed."""
    root = preset_runs_folder(runs_dir, preset)
    files = [f for run in sorted(root.glob("*/*")) if run.is_dir() for f in run_inputs(run)]
    return fingerprint(files, root) if root.is_dir() else "none"


def preset_runs_folder(runs_dir: str | Path, preset: str) -> Path:
    """runs_dir/<preset> when it exists, else runs_dir itself (already a preset folder)."""
    runs_dir = Path(runs_dir)
    return runs_dir / preset if (runs_dir / preset).is_dir() else runs_dir


@dataclasses.dataclass
class Run:
    dataset: str
    category: str
    folder: Path
    metrics: dict[str, Any]

    @property
    def eval(self) -> Path:
        return self.folder / "eval"

    @property
    def ablations(self) -> Path:
        return self.folder / "ablations" / "ablations.csv"


def find_runs(runs_root: str | Path) -> list[Run]:
    """Every complete evaluation under runs_root/<dataset>/<category>/eval, sorted."""
    runs = []
    root = Path(runs_root)
    if not root.is_dir():
        return runs
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        for cat in sorted(p for p in ds.iterdir() if p.is_dir()):
            if is_complete(cat / "eval"):
                runs.append(Run(ds.name, cat.name, cat, json.loads((cat / "eval" / "metrics.json").read_text())))
    return runs
