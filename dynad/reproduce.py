"""`dynad reproduce`: run the notebook sequence for every data set and category, then the paper's tables and figures.

    reproduce("demo")                                    # make demo: the synthetic data set, both categories
    reproduce("visa", roots={"visa": "/data/VisA"}, jobs=2)
    reproduce("mvtec", roots={"mvtec": "/data/mvtec"}, executor="ray", address="auto")   # one Ray task per category

For each category the notebooks 01-05 run with papermill into `runs/<preset>/<dataset>/<category>/`:

    01_train_latent_diffusion  02_domain_adaptation  03_knn_binning  04_evaluate  05_ablations (unless ablations=False)

each saved executed as `<run_dir>/notebooks/<name>.ipynb`. A notebook ends by writing `<run_dir>/<name>.done.json`
with its parameters; a notebook whose marker records the same parameters is skipped, so after an interruption only
what was missing runs again (and the library resumes an interrupted training from its checkpoint). A category that
fails (a missing folder, an exception in a notebook) is recorded and the others go on. Then notebook 06 regenerates
`results/<preset>/` from all runs (again only when a run's results changed) and notebook 07 draws the step-size grid
of the first category into `results/<preset>/figures/`. Returns the exit code: 1 when anything failed.

Executors: "local" runs the categories here, `jobs` at a time. "ray" makes each category's notebook sequence one
Ray task (one GPU each where the cluster has GPUs) on the cluster at `address` ("auto": the one this machine
belongs to; None: a local one started here). Every machine needs dynad installed and the data at the same path.
The runs folder is best on a shared filesystem (then a category resumes wherever it runs); without one, each task
sends its run folder (all but the trained models) back to the driver, which writes it under `runs/`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dynad.config import ExperimentConfig

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


def preset_name(preset: str) -> str:
    """The folder name of a preset's runs and results: a shipped preset's name, or a YAML file's stem."""
    return Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset


def default_datasets(preset: str) -> list[str]:
    """demo/tiny (and YAML presets): the synthetic data set; a data-set preset: that data set."""
    name = preset_name(preset)
    return [name] if name in ("mvtec", "visa", "btad", "mtd") else ["synthetic"]


def default_categories(dataset: str, root: str | Path | None = None) -> list[str]:
    """Every category of `dataset`; a `folder` data set's are the sub-folders of its root."""
    if dataset == "synthetic":
        from dynad.synthetic import CATEGORIES

        return list(CATEGORIES)
    from dynad.data import KNOWN_CATEGORIES, category_folders

    if dataset == "folder":
        return category_folders(root) if root is not None else []
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


# jupyter_client's errors for a kernel that never answered its first request: no cell has run, so a new start is safe.
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")
KERNEL_START_ATTEMPTS = 2


def kernel_options() -> dict[str, Any]:
    """papermill's options for each notebook's kernel: CurveZMQ transport encryption (Jupyter's transport-encryption
    proposal) where jupyter_client and libzmq offer it. ipykernel 7.4 warns on every start of a kernel over plain
    TCP, which put twelve warnings across `make demo`'s progress bar; "auto" encrypts only when the kernelspec
    declares support, as ipykernel's does."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def execute(stem: str, output: Path, parameters: dict[str, Any], cwd: Path) -> None:
    """Run notebooks/<stem>.ipynb with papermill (kernel python3 = this interpreter) and save it to `output`.

    A kernel that dies before it answers (seen under Ray on a loaded machine) is started once more."""
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)
    output.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
        try:
            papermill.execute_notebook(
                str(notebooks_dir() / f"{stem}.ipynb"), str(output), parameters=parameters, kernel_name=KERNEL,
                progress_bar=False, cwd=str(cwd), log_output=False, **kernel_options(),
            )  # fmt: skip
            return
        except RuntimeError as e:
            if attempt == KERNEL_START_ATTEMPTS or not str(e).startswith(KERNEL_START_FAILURES):
                raise
            print(f"{stem}: {e}; starting the kernel again", file=sys.stderr)


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


def _all_done(task: Task) -> Outcome | None:
    """The outcome of a task whose notebooks are all done already (checked here, before handing it to Ray)."""
    from dynad.results import marker_matches

    params = task.parameters()
    if not all(marker_matches(Path(task.run_dir), stem, params) for stem in task.notebooks):
        return None
    return Outcome(task.dataset, task.category, task.run_dir, skipped=list(task.notebooks))


def _ray_run_category(task: Task, driver_token: str) -> tuple[Outcome, dict[str, bytes]]:
    """A Ray task: run_category, plus the run folder's files when the driver cannot see this machine's disk."""
    try:
        outcome = run_category(task)
    except Exception as e:  # noqa: BLE001
        outcome = Outcome(task.dataset, task.category, task.run_dir, failed="setup", error=error_line(e))
    run_dir = Path(task.run_dir)
    if Path(driver_token).is_file() or not run_dir.is_dir():  # a shared filesystem: the driver sees the files
        return outcome, {}
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
             if p.is_file() and "models" not in p.relative_to(run_dir).parts}  # fmt: skip
    return outcome, files


def _run_ray(tasks: list[Task], notify: Callable[[str], None], address: str | None, runs: Path) -> list[Outcome]:
    """Each task as a Ray task; outcomes in the order of `tasks`. A local cluster started here is stopped again."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("--executor ray needs Ray: pip install -e '.[cluster]'") from e
    from dynad.provenance import atomic_write

    started = not ray.is_initialized()
    if started:
        # Ray's default 10 s for the local node to come up is too short on a loaded machine (measured: at load 20
        # on 2 cores it timed out); a cluster that is already running is not affected.
        wait = os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError:  # no cluster at `address`: Ray's message says so
            raise
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception when its node does not come up in time
            raise ConnectionError(
                f"Ray did not start, so no category ran ({error_line(e)}); on a loaded machine set "
                f"RAY_raylet_start_wait_time_s above {wait} s, or use --executor local"
            ) from e
    runs.mkdir(parents=True, exist_ok=True)
    token = runs / f".ray-driver-{os.getpid()}"  # a worker that sees this file shares the driver's filesystem
    token.write_text("dynad reproduce driver\n")
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        outcomes: dict[int, Outcome] = {}
        refs = {}
        for i, t in enumerate(tasks):
            if t.error:  # a setup error is reported here: no Ray worker needed
                outcomes[i] = run_category(t, notify)
                continue
            done = _all_done(t)
            if done is not None:
                outcomes[i] = done
                for stem in t.notebooks:
                    notify(f"{t.dataset}/{t.category} {stem} (done)")
                continue
            remote = ray.remote(num_cpus=t.threads or 1, num_gpus=gpus, max_retries=0)(_ray_run_category)
            refs[remote.remote(t, str(token))] = i
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = refs[ready[0]]
            t = tasks[i]
            try:
                outcome, files = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a crashed worker or a lost node: this category only
                outcome, files = Outcome(t.dataset, t.category, t.run_dir, failed="setup", error=error_line(e)), {}
            for rel, data in files.items():
                with atomic_write(Path(t.run_dir) / rel, "wb") as f:
                    f.write(data)
            outcomes[i] = outcome
            for _ in t.notebooks or [None]:
                notify(f"{t.dataset}/{t.category}")
        return [outcomes[i] for i in range(len(tasks))]
    finally:
        token.unlink(missing_ok=True)
        if started:
            ray.shutdown()


def _run_category_queued(task: Task, queue) -> Outcome:
    """run_category in a worker process, reporting progress through a Manager queue."""
    try:
        return run_category(task, notify=queue.put)
    except Exception as e:  # noqa: BLE001
        return Outcome(task.dataset, task.category, task.run_dir, failed="setup", error=error_line(e))


def _run_local(tasks: list[Task], notify: Callable[[str], None], jobs: int) -> list[Outcome]:
    """The tasks here, `jobs` processes at a time (in this process when 1); outcomes in the order of `tasks`."""
    if jobs == 1:
        return [run_category(t, notify) for t in tasks]
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    outcomes: list[Outcome] = []
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
    return outcomes


# ------------------------------------------------------------------------------------------------------------------
# The whole reproduction.


def _tasks(preset, datasets, categories, roots, runs, overrides, notebooks, models, threads) -> list[Task]:
    from dynad.data import DatasetError, is_a_category_folder
    from dynad.paths import default_synthetic_root
    from dynad.results import ensure_data

    tasks, name = [], preset_name(preset)
    owners = _owners(datasets, categories, roots)
    for dataset in datasets:
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
        if not (error or categories) and dataset == "folder":  # its train/, test/ would be taken for categories
            error = is_a_category_folder(root) or None
        cats = [c for c in categories if dataset in owners[c]] if categories else default_categories(
            dataset, None if error else root)
        if categories and not cats:  # every named category belongs to another of the data sets
            continue
        # Each category's files are checked here, so that a category missing from the folder (a partial download, a
        # mistyped name, a root one level up) fails in a line instead of starting a notebook kernel.
        cat_errors = {} if error else {cat: _index_error(dataset, root, cat) for cat in cats}
        if not error and len(cats) > 1 and all(cat_errors.values()):  # one line for the data set, as for a missing root
            error = f"none of its {len(cats)} categories can run; {cats[0]}: {cat_errors[cats[0]]}"
        if error or not cats:
            # One line per data set, not one per category: nothing of it can run.
            error = error or (f"no categories known for data set {dataset!r}: pass categories=[...] "
                              f"(CLI: --categories NAME ...)")
            tasks.append(Task(preset, dataset, "(all)" if cats else "(none)", None, str(runs / name / dataset),
                              list(overrides), [], error=error))  # fmt: skip
            continue
        for cat in cats:
            run_dir = (runs / name / dataset / cat).resolve()
            models_dir = str(Path(models).resolve()) if models else ""
            tasks.append(Task(preset, dataset, cat, str(Path(root).resolve()), str(run_dir),
                              list(overrides), list(notebooks), models_dir, cat_errors[cat], threads))  # fmt: skip
    return tasks


def _owners(datasets, categories, roots) -> dict[str, list[str]]:
    """Per named category, the data sets that run it: with several data sets (`--categories 01 pcb1` for BTAD and
    VisA), those whose categories include it; one that none has runs in every data set, whose error then lists
    what each root holds."""
    categories = list(categories or [])
    if len(datasets) < 2:
        return {c: list(datasets) for c in categories}
    have = {d: set(default_categories(d, roots.get(d))) for d in datasets}
    return {c: [d for d in datasets if c in have[d]] or list(datasets) for c in categories}


def _refuse_other_settings(tasks: list[Task], cfg: ExperimentConfig) -> None:
    """Fail each category whose run folder holds a finished evaluation of other settings, before any notebook; only
    warn where every notebook is done with the same parameters (the preset file or dynad changed since): kept."""
    for t in tasks:
        other = None if t.error else _other_settings(Path(t.run_dir), cfg, t.dataset, t.category)
        if other and _all_done(t) is None:
            t.error = other
        elif other:
            print(f"WARNING ({t.dataset}/{t.category}): {other}; its notebooks ran with the same parameters (the "
                  f"preset file or dynad changed since), so it is kept as it is", file=sys.stderr)  # fmt: skip


def _other_settings(run_dir: Path, cfg: ExperimentConfig, dataset: str, category: str) -> str | None:
    """The category's error when run_dir/eval holds a finished run of other settings (another --set or --threads):
    notebooks 01-03 would redo their parts beside it, and 04 would refuse it. Said before any starts."""
    from dynad import run_folder
    from dynad.experiment import run_identity

    eval_dir, identity = run_dir / "eval", run_identity(cfg, dataset, category)
    if run_folder.identity_of(eval_dir) in (None, identity) or not run_folder.is_complete(eval_dir):  # cheap first
        return None
    what = run_folder.describe_difference(eval_dir, identity, cfg.for_category(category).to_dict())
    return (f"{run_dir} holds a finished run of other settings ({what}): pass --runs DIR to keep both, or delete "
            f"{run_dir} to replace it")


def _index_error(dataset: str, root: Path, category: str) -> str | None:
    """The DatasetError a category's files give (checked as notebook 01 would, without loading an image), else None."""
    from dynad.data import DatasetError, make_index

    try:
        make_index(dataset, root, category)
    except DatasetError as e:
        return str(e)
    return None


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
    executor: str = "local",
    address: str | None = None,
) -> int:
    """Run notebooks 01-05 per data set and category, then 06 (results/<preset>/) and 07; returns the exit code.

    `models`: one folder of trained models shared by every run (and between reproductions: model files are named by
    a hash of their data and settings, so sharing is safe); by default each run keeps its own in <run_dir>/models.
    `datasets`: by default those `roots` names, else the preset's. `categories`: by default every category (a
    `folder` data set's: the sub-folders of its root); with several data sets, each named category runs in those that
    have it (in all, if none has it: their errors say what each holds).
    `threads`: torch threads of every run (the config's `threads`, passed to each notebook; None: the preset's). Torch's
    CPU results depend on the thread count (reductions split differently), so a reproduction is bit-identical on the
    same CPU at the same count, and equals `dynad run` and notebook 00 at that count.
    A wrong override or data folder is reported before any notebook starts.
    `executor`: "local" (`jobs` processes here) or "ray" (one Ray task per category on the cluster at `address`;
    `jobs` is then Ray's business, and `threads` also sets the CPUs each task asks for).
    """
    from tqdm.auto import tqdm

    from dynad import run_folder
    from dynad.checks import check_buildable, check_config
    from dynad.config import ConfigError, load_preset
    from dynad.results import eval_fingerprint, inputs_fingerprint, marker_matches

    # A wrong key, type or range is a ConfigError now, not once in each category's first notebook.
    cfg = check_config(load_preset(preset, [*overrides, *([f"threads={threads}"] if threads is not None else [])]))
    check_buildable(cfg)
    threads = cfg.threads  # the count every run uses, passed to (and recorded by) each notebook
    if preset.endswith((".yaml", ".yml")):  # a preset file: the notebooks' kernels start in another folder
        preset = str(Path(preset).resolve())
    name = preset_name(preset)  # runs/<name>/..., results/<name>/
    roots = dict(roots or {})
    runs, results = Path(runs).resolve(), Path(results).resolve()
    for folder, what in ((runs, "runs folder"), (results, "results folder")):
        run_folder.check_not_a_file(folder, what)  # not after hours of notebooks
    # `--root folder=PATH` alone means that folder: running the preset's default data set instead ignored it.
    datasets = list(datasets or roots or default_datasets(preset))
    notebooks = list(CATEGORY_NOTEBOOKS if ablations else CATEGORY_NOTEBOOKS[:-1])
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if jobs < 1:  # not "all cores" (as -1 is in joblib) nor a silent 1
        raise ConfigError(f"jobs must be >= 1 (categories run at once), got {jobs}")
    tasks = _tasks(preset, datasets, categories, roots, runs, list(overrides), notebooks, models, threads)
    _refuse_other_settings(tasks, cfg)
    total = sum(max(len(t.notebooks), 1) for t in tasks) + 2
    # The bar as a context: an error that escapes (Ray that does not start) closes it, so the error starts on a line
    # of its own.
    with tqdm(total=total, desc="notebooks", unit="nb", disable=not progress, file=sys.stdout) as bar:

        def notify(label: str) -> None:
            bar.set_postfix_str(label[-60:], refresh=False)
            bar.update(1)

        if executor == "ray":
            outcomes = _run_ray(tasks, notify, address, runs)
        else:
            outcomes = _run_local(tasks, notify, jobs)

        # ---- 06: the paper's tables and figures from every run of this preset; 07: the step-size grid.
        summary: list[Outcome] = []
        out_dir = results / name
        done = [o for o in outcomes if o.ok and o.category != "(none)"]
        have_runs = (runs / name).is_dir() and any((runs / name).glob("*/*/eval/metrics.json"))
        for stem, params, run_dir, target in _summary_jobs(name, runs, results, done, have_runs):
            o = Outcome("results", stem, str(run_dir))
            fp = inputs_fingerprint(runs, name) if stem == SUMMARY_NOTEBOOK else eval_fingerprint(params["run_dir"])
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
    _print_summary(outcomes + summary, out_dir)
    return 1 if any(not o.ok for o in outcomes + summary) else 0


def _summary_jobs(name: str, runs: Path, results: Path, done: list[Outcome], have_runs: bool):
    """(stem, parameters, marker folder, executed-notebook path) of notebooks 06 and 07; `name`: `preset_name`."""
    if not have_runs:
        return []
    out_dir = results / name
    jobs = [(SUMMARY_NOTEBOOK, {"runs_dir": str(runs), "results_dir": str(results), "preset": name}, out_dir,
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

