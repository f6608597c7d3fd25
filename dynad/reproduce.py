"""`dynad reproduce`: run the notebook sequence for every data set and category, then the paper's tables and figures.

    reproduce("demo")                                    # make demo: the synthetic data set, both categories
    reproduce("visa", roots={"visa": "/data/VisA"}, jobs=2)

For each category the notebooks 01-05 run with papermill into `runs/<preset>/<dataset>/<category>/`:

    01_train_latent_diffusion  02_domain_adaptation  03_knn_binning  04_evaluate  05_ablations (unless ablations=False)

each saved executed as `<run_dir>/notebooks/<name>.ipynb`. A notebook ends by writing `<run_dir>/<name>.done.json`
with its parameters; a notebook whose marker records the same parameters is skipped, so after an interruption only
what was missing runs again (and the library resumes an interrupted training from its checkpoint). A category that
fails (a missing folder, an exception in a notebook) is recorded and the others go on. Then notebook 06 regenerates
`results/<preset>/` from all runs (again only when a run's results changed) and notebook 07 draws the step-size grid
of the first category into `results/<preset>/figures/`. Returns the exit code: 1 when anything failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

CATEGORY_NOTEBOOKS = (
    "01_train_latent_diffusion",
    "02_domain_adaptation",
    "03_knn_binning",
    "04_evaluate",
    "05_ablations",
)
SUMMARY_NOTEBOOK = "06_paper_tables_and_figures"
EXPLORER_NOTEBOOK = "07_step_size_explorer"
KERNEL = "python3"


def notebooks_dir() -> Path:
    """The notebooks of this checkout (repo/notebooks), or the copies shipped in the package (dynad/notebooks)."""
    here = Path(__file__).resolve().parent
    for d in (here.parent / "notebooks", here / "notebooks"):
        if (d / f"{SUMMARY_NOTEBOOK}.ipynb").is_file():
            return d
    raise FileNotFoundError(f"the dynad notebooks were not found (looked in {here.parent / 'notebooks'})")


def default_datasets(preset: str) -> list[str]:
    """demo/tiny (and YAML presets): the synthetic data set; a data-set preset: that data set."""
    name = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    return [name] if name in ("mvtec", "visa", "btad", "mtd") else ["synthetic"]


def default_categories(dataset: str) -> list[str]:
    if dataset == "synthetic":
        from dynad.synthetic import CATEGORIES

        return list(CATEGORIES)
    from dynad.data import KNOWN_CATEGORIES

    return list(KNOWN_CATEGORIES.get(dataset, ()))


# ------------------------------------------------------------------------------------------------------------------
# One category: its notebooks in order.


@dataclasses.dataclass
class Task:
    preset: str
    dataset: str
    category: str
    root: str | None
    run_dir: str
    overrides: list[str]
    notebooks: list[str]
    models_dir: str = ""
    error: str | None = None  # known before running anything (no data folder)
    threads: int | None = None  # torch threads of the runs (the config's `threads`; None: the preset's)

    def parameters(self) -> dict[str, Any]:
        p = {"preset": self.preset, "dataset": self.dataset, "root": self.root or "", "category": self.category,
             "run_dir": self.run_dir, "quick": False, "overrides": list(self.overrides),
             "threads": self.threads}  # fmt: skip
        if self.models_dir:
            p["models_dir"] = self.models_dir
        return p


@dataclasses.dataclass
class Outcome:
    dataset: str
    category: str
    run_dir: str
    executed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: str | None = None  # the notebook (stem) that failed, or "setup"
    notebook: str | None = None  # the executed copy of the failing notebook
    error: str | None = None  # the error's last line
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed is None


def execute(stem: str, output: Path, parameters: dict[str, Any], cwd: Path) -> None:
    """Run notebooks/<stem>.ipynb with papermill (kernel python3 = this interpreter) and save it to `output`."""
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    output.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebooks_dir() / f"{stem}.ipynb"), str(output), parameters=parameters, kernel_name=KERNEL,
        progress_bar=False, cwd=str(cwd), log_output=False,
    )  # fmt: skip


def error_line(e: BaseException) -> str:
    """The last line of an error: `Name: message` (for a notebook, the exception raised inside it)."""
    try:
        from papermill.exceptions import PapermillExecutionError
    except ImportError:  # pragma: no cover
        PapermillExecutionError = ()  # type: ignore[assignment]
    if isinstance(e, PapermillExecutionError):
        text = f"{e.ename}: {e.evalue}"
    else:
        text = f"{type(e).__name__}: {e}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def run_category(task: Task, notify: Callable[[str], None] | None = None) -> Outcome:
    """Run (or skip) the task's notebooks in order; stop at the first failure. `notify(label)` after each notebook."""
    from dynad.results import marker_matches

    notify = notify or (lambda _label: None)
    if task.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(task.threads)
    t0 = time.perf_counter()
    out = Outcome(task.dataset, task.category, task.run_dir)
    label = f"{task.dataset}/{task.category}"
    if task.error:
        out.failed, out.error = "setup", task.error
        for _ in task.notebooks:
            notify(label)
        return out
    run_dir = Path(task.run_dir)
    params = task.parameters()
    for i, stem in enumerate(task.notebooks):
        if marker_matches(run_dir, stem, params):
            out.skipped.append(stem)
            notify(f"{label} {stem} (done)")
            continue
        target = run_dir / "notebooks" / f"{stem}.ipynb"
        try:
            execute(stem, target, params, run_dir)
        except Exception as e:  # noqa: BLE001 - recorded; the other categories go on
            out.failed, out.notebook, out.error = stem, str(target), error_line(e)
            for _ in task.notebooks[i:]:
                notify(label)
            break
        out.executed.append(stem)
        notify(f"{label} {stem}")
    out.seconds = time.perf_counter() - t0
    return out


def _run_category_queued(task: Task, queue) -> Outcome:
    """run_category in a worker process, reporting progress through a Manager queue."""
    try:
        return run_category(task, notify=queue.put)
    except Exception as e:  # noqa: BLE001
        return Outcome(task.dataset, task.category, task.run_dir, failed="setup", error=error_line(e))


# ------------------------------------------------------------------------------------------------------------------
# The whole reproduction.


def _tasks(preset, datasets, categories, roots, runs, overrides, notebooks, models, threads) -> list[Task]:
    from dynad.data import DatasetError
    from dynad.paths import default_synthetic_root
    from dynad.results import ensure_data

    tasks = []
    for dataset in datasets:
        cats = list(categories) if categories else default_categories(dataset)
        error, root = None, roots.get(dataset)
        if root is None and dataset != "synthetic":
            error = (f"no data folder for data set {dataset!r}: pass roots={{'{dataset}': PATH}} "
                     f"(CLI: --root {dataset}=PATH)")
        else:
            # The synthetic set is generated when missing, at its default place only (a mistyped root is an error).
            try:
                root = ensure_data(dataset, Path(root).resolve() if root is not None else default_synthetic_root())
            except DatasetError as e:
                error = str(e)
        if error or not cats:
            # One line per data set, not one per category: nothing of it can run.
            error = error or f"no categories known for data set {dataset!r}: pass categories=[...]"
            tasks.append(Task(preset, dataset, "(all)" if cats else "(none)", None, str(runs / preset / dataset),
                              list(overrides), [], error=error))  # fmt: skip
            continue
        for cat in cats:
            run_dir = (runs / preset / dataset / cat).resolve()
            models_dir = str(Path(models).resolve()) if models else ""
            tasks.append(Task(preset, dataset, cat, str(Path(root).resolve()) if root else None, str(run_dir),
                              list(overrides), list(notebooks), models_dir, error, threads))  # fmt: skip
    return tasks


def reproduce(
    preset: str,
    datasets: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    roots: dict[str, str | Path] | None = None,
    runs: str | Path = Path("runs"),
    results: str | Path = Path("results"),
    jobs: int = 1,
    overrides: Sequence[str] = (),
    ablations: bool = True,
    models: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> int:
    """Run notebooks 01-05 per data set and category, then 06 (results/<preset>/) and 07; returns the exit code.

    `models`: one folder of trained models shared by every run (and between reproductions: model files are named by
    a hash of their data and settings, so sharing is safe); by default each run keeps its own in <run_dir>/models.
    `categories` apply to every data set in `datasets`.
    `threads`: torch threads of every run (the config's `threads`, passed to each notebook; None: the preset's). Torch's
    CPU results depend on the thread count (reductions split differently), so a reproduction is bit-identical on the
    same CPU at the same count, and equals `dynad run` and notebook 00 at that count.
    A wrong override or data folder is reported before any notebook starts.
    """
    from tqdm.auto import tqdm

    from dynad.config import load_preset
    from dynad.results import eval_fingerprint, inputs_fingerprint, marker_matches

    cfg = load_preset(preset, [*overrides, *([f"threads={threads}"] if threads is not None else [])])  # ConfigError now
    threads = cfg.threads  # the count every run uses, passed to (and recorded by) each notebook
    roots = dict(roots or {})
    runs, results = Path(runs).resolve(), Path(results).resolve()
    datasets = list(datasets) if datasets else default_datasets(preset)
    notebooks = list(CATEGORY_NOTEBOOKS if ablations else CATEGORY_NOTEBOOKS[:-1])
    jobs = max(1, int(jobs))
    tasks = _tasks(preset, datasets, categories, roots, runs, list(overrides), notebooks, models, threads)
    total = sum(max(len(t.notebooks), 1) for t in tasks) + 2
    bar = tqdm(total=total, desc="notebooks", unit="nb", disable=not progress, file=sys.stdout)

    def notify(label: str) -> None:
        bar.set_postfix_str(label[-60:], refresh=False)
        bar.update(1)

    outcomes: list[Outcome] = []
    if jobs == 1:
        for t in tasks:
            outcomes.append(run_category(t, notify))
    else:
        import multiprocessing as mp
        import queue as queue_mod
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            q = manager.Queue()
            futures = {pool.submit(_run_category_queued, t, q): t for t in tasks}
            pending = set(futures)
            while pending:
                try:
                    notify(q.get(timeout=0.5))
                except queue_mod.Empty:
                    pass
                pending = {f for f in pending if not f.done()}
            while True:
                try:
                    notify(q.get_nowait())
                except queue_mod.Empty:
                    break
            for f, t in futures.items():
                try:
                    outcomes.append(f.result())
                except Exception as e:  # noqa: BLE001 - a crashed worker
                    outcomes.append(Outcome(t.dataset, t.category, t.run_dir, failed="setup", error=error_line(e)))

    # ---- 06: the paper's tables and figures from every run of this preset; 07: the step-size grid.
    summary: list[Outcome] = []
    out_dir = results / preset
    done = [o for o in outcomes if o.ok and o.category != "(none)"]
    have_runs = (runs / preset).is_dir() and any((runs / preset).glob("*/*/eval/metrics.json"))
    for stem, params, run_dir, target in _summary_jobs(preset, runs, results, done, have_runs):
        o = Outcome("results", stem, str(run_dir))
        fp = inputs_fingerprint(runs, preset) if stem == SUMMARY_NOTEBOOK else eval_fingerprint(params["run_dir"])
        if marker_matches(run_dir, stem, params, inputs=fp):
            o.skipped.append(stem)
        else:
            t0 = time.perf_counter()
            try:
                execute(stem, target, params, Path(run_dir))
                o.executed.append(stem)
            except Exception as e:  # noqa: BLE001
                o.failed, o.notebook, o.error = stem, str(target), error_line(e)
            o.seconds = time.perf_counter() - t0
        summary.append(o)
        notify(f"{stem}")
    bar.close()
    _print_summary(outcomes + summary, out_dir)
    return 1 if any(not o.ok for o in outcomes + summary) else 0


def _summary_jobs(preset: str, runs: Path, results: Path, done: list[Outcome], have_runs: bool):
    """(stem, parameters, marker folder, executed-notebook path) of notebooks 06 and 07."""
    if not have_runs:
        return []
    out_dir = results / preset
    jobs = [(SUMMARY_NOTEBOOK, {"runs_dir": str(runs), "results_dir": str(results), "preset": preset}, out_dir,
             out_dir / "notebooks" / f"{SUMMARY_NOTEBOOK}.ipynb")]  # fmt: skip
    first = next((o for o in done if (Path(o.run_dir) / "eval" / "pipeline.pt").is_file()), None)
    if first is not None:
        run_dir = Path(first.run_dir)
        params = {"run_dir": str(run_dir), "interactive": False,
                  "static_path": str(out_dir / "figures" / "step_size_explorer.png")}  # fmt: skip
        jobs.append((EXPLORER_NOTEBOOK, params, run_dir, run_dir / "notebooks" / f"{EXPLORER_NOTEBOOK}.ipynb"))
    return jobs


def _print_summary(outcomes: list[Outcome], out_dir: Path) -> None:
    rows = [("run", "status", "executed", "skipped", "seconds")]
    for o in outcomes:
        status = "ok" if o.ok else f"FAILED ({o.failed})"
        counts = (str(len(o.executed)), str(len(o.skipped)), f"{o.seconds:.0f}")
        rows.append((f"{o.dataset}/{o.category}", status, *counts))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    failures = [o for o in outcomes if not o.ok]
    if failures:
        print(f"\n{len(failures)} failed:")
        for o in failures:
            where = f"\n    executed notebook: {o.notebook}" if o.notebook else ""
            print(f"  {o.dataset}/{o.category} [{o.failed}]: {o.error}{where}")
    if (out_dir / "manifest.json").is_file():
        print(f"\ntables and figures: {out_dir}")
    sys.stdout.flush()

