"""`dynad reproduce` on the tiny preset: a failing category is recorded while the others complete, a second call
skips what is done, an interrupted run reruns only what is missing, and two reproductions, one of them with
`--executor ray`, give identical tables; notebook kernels start encrypted."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dynad.reproduce import CATEGORY_NOTEBOOKS, reproduce
from dynad.results import compare_tables

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, shared_data) -> dict:
    """The shared board category, and a `tiles` category whose files pass the layout check but one training image is
    cut short: it fails inside notebook 01 (the shared models are keyed on the files, so board's are reused)."""
    shared_root, models = shared_data
    base = tmp_path_factory.mktemp("reproduce")
    root = base / "data"
    shutil.copytree(shared_root / "board", root / "board")
    shutil.copytree(shared_root / "board", root / "tiles")
    broken = sorted((root / "tiles" / "train" / "good").glob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:100])
    return {"root": root, "models": models, "base": base, "broken": broken}


def _reproduce(env: dict, name: str, categories=("board",), **kw) -> int:
    return reproduce(
        preset="tiny", datasets=["synthetic"], categories=list(categories), roots={"synthetic": str(env["root"])},
        runs=env["base"] / name / "runs", results=env["base"] / name / "results", models=env["models"],
        progress=False, **kw,
    )  # fmt: skip


def _reproduce_quietly(env: dict, name: str, **kw) -> tuple[int, str]:
    """`_reproduce` with what it prints captured: (exit code, output)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _reproduce(env, name, **kw)
    return rc, buf.getvalue()


def _run_dir(env: dict, name: str, category: str = "board") -> Path:
    return env["base"] / name / "runs" / "tiny" / "synthetic" / category


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.ipynb"))}


def _notebook_mtimes(env: dict, name: str) -> dict[str, int]:
    """{relative path: mtime_ns} of every notebook reproduction `name` executed, for any category or table."""
    folder = env["base"] / name
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*.ipynb"))}


@pytest.fixture(scope="module")
def first(env: dict) -> dict:
    """Reproduction A: board (with ablations), tiles (a broken image) and a category that does not exist, two
    categories in parallel."""
    # threads=1 whatever the cores: torch's CPU results depend on the thread count, and the tables are compared with
    # reproduction B's, also on one thread.
    rc, out = _reproduce_quietly(env, "a", categories=("board", "tiles", "no_such_category"), jobs=2, ablations=True,
                                 threads=1)  # fmt: skip
    return {"rc": rc, "out": out}


def test_failing_category_is_recorded_and_the_others_complete(env: dict, first: dict) -> None:
    assert first["rc"] == 1
    out = first["out"]
    failed_nb = _run_dir(env, "a", "tiles") / "notebooks" / f"{CATEGORY_NOTEBOOKS[0]}.ipynb"
    assert "FAILED" in out
    assert str(failed_nb) in out and failed_nb.is_file()  # the executed notebook shows the traceback
    failure = [ln for ln in out.splitlines() if ln.strip().startswith("synthetic/tiles [")][0]
    assert f"[{CATEGORY_NOTEBOOKS[0]}]: DatasetError: cannot read image file {env['broken']}" in failure
    # A category with no folder fails in its line, before any kernel: no run folder, no notebook.
    missing = [ln for ln in out.splitlines() if ln.strip().startswith("synthetic/no_such_category [")][0]
    assert "[setup]: unknown synthetic category 'no_such_category'" in missing and "holds: board, tiles" in missing
    assert not _run_dir(env, "a", "no_such_category").exists()
    run = _run_dir(env, "a")
    for stem in CATEGORY_NOTEBOOKS:
        assert (run / f"{stem}.done.json").is_file() and (run / "notebooks" / f"{stem}.ipynb").is_file()
    res = env["base"] / "a" / "results" / "tiny"
    main = pd.read_csv(res / "tables" / "main_synthetic.csv")
    assert main.category.tolist() == ["board", "mean"]
    assert (res / "tables" / "table5_synthetic.md").is_file()
    assert (res / "figures" / "step_size_explorer.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (res / "notebooks" / "06_paper_tables_and_figures.ipynb").is_file()
    manifest = json.loads((res / "manifest.json").read_text())
    assert [r["device"].endswith(", 1 threads)") for r in manifest["runs"] if r["run"] == "eval"] == [True]


def test_second_call_skips_what_is_done(env: dict, first: dict, capsys: pytest.CaptureFixture) -> None:
    before = _notebook_mtimes(env, "a")
    assert _reproduce(env, "a", ablations=True) == 0
    assert _notebook_mtimes(env, "a") == before  # nothing re-executed
    out = capsys.readouterr().out
    assert "synthetic/board" in out and "FAILED" not in out


def test_interrupted_run_reruns_only_what_is_missing(env: dict, first: dict) -> None:
    run = _run_dir(env, "a")
    # As if killed during notebook 03: its marker and half of its outputs are missing.
    (run / "03_knn_binning.done.json").unlink()
    shutil.rmtree(run / "knn")
    before = _mtimes(run / "notebooks")
    res_before = _mtimes(env["base"] / "a" / "results" / "tiny" / "notebooks")
    assert _reproduce(env, "a", ablations=True) == 0
    after = _mtimes(run / "notebooks")
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["03_knn_binning.ipynb"]
    assert (run / "knn" / "bin_table.csv").is_file() and (run / "03_knn_binning.done.json").is_file()
    # No evaluation result changed, so the tables are not regenerated either.
    assert _mtimes(env["base"] / "a" / "results" / "tiny" / "notebooks") == res_before


def test_changed_parameters_rerun(env: dict, first: dict) -> None:
    """A marker only counts for the parameters it records: it does not match other overrides (so they rerun)."""
    run = _run_dir(env, "a")
    marker = json.loads((run / "04_evaluate.done.json").read_text())
    assert marker["parameters"]["overrides"] == [] and marker["parameters"]["category"] == "board"
    from dynad.results import marker_matches

    assert marker_matches(run, "04_evaluate", marker["parameters"])
    assert not marker_matches(run, "04_evaluate", {**marker["parameters"], "overrides": ["dic.k=5"]})


@pytest.fixture(scope="module")
def second(env: dict, first: dict) -> dict:
    """Reproduction B: the categories of A again, with the ablations by default, each as a Ray task on a local 2-CPU Ray
    cluster (`--executor ray`, with the `cluster` extra that `make install` installs; else the local executor)."""
    categories = ("board", "tiles")
    try:
        import ray
    except ImportError:
        rc, out = _reproduce_quietly(env, "b", categories=categories, jobs=2, threads=1)
        return {"rc": rc, "out": out, "ray": False}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_raylet_start_wait_time_s", "120")  # as reproduce does: shared CI machines are slow
        # Ray kills its workers when the whole machine passes 95 % memory; on a shared test machine other jobs' memory
        # did that (measured: both categories killed), which is not what these tests are about.
        mp.setenv("RAY_memory_monitor_refresh_ms", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            rc, out = _reproduce_quietly(env, "b", categories=categories, executor="ray", threads=1)
            # A second call finds every notebook done and hands nothing to Ray.
            before = _notebook_mtimes(env, "b")
            again, _ = _reproduce_quietly(env, "b", executor="ray", threads=1)
            untouched = _notebook_mtimes(env, "b") == before
        finally:
            ray.shutdown()
    return {"rc": rc, "out": out, "ray": True, "again": again, "untouched": untouched}


def test_ray_executor_isolates_the_failure_and_skips_what_is_done(env: dict, second: dict) -> None:
    if not second["ray"]:
        pytest.skip("Ray is not installed (pip install -e '.[cluster]'): reproduction B ran on the local executor")
    assert second["rc"] == 1 and "synthetic/tiles [01_" in second["out"] and "FAILED" in second["out"]
    run = _run_dir(env, "b")  # the category ran in a Ray worker process and its files are here
    assert (run / "04_evaluate.done.json").is_file() and (run / "eval" / "metrics.json").is_file()
    assert second["again"] == 0 and second["untouched"]


def test_two_reproductions_give_identical_tables(env: dict, first: dict, second: dict) -> None:
    a, b = env["base"] / "a" / "results" / "tiny", env["base"] / "b" / "results" / "tiny"
    assert len(list((a / "tables").glob("*.csv"))) >= 8
    # Both ran the ablations (B by reproduce's default): every table, the ablation tables included, is identical.
    assert {p.name.split("_")[0] for p in (b / "tables").glob("*.csv")} >= {"table4", "table5", "space"}
    assert compare_tables(a, b) == []
    assert (b / "tables" / "main_synthetic.csv").is_file()
    # compare_tables does see a difference.
    shutil.copytree(a / "tables", env["base"] / "c")
    (env["base"] / "c" / "main_synthetic.csv").write_text("category,image_auroc\nboard,1.00\n")
    (env["base"] / "c" / "space_synthetic.md").unlink()
    diffs = compare_tables(a, env["base"] / "c")
    assert any(d.startswith("main_synthetic.csv") for d in diffs) and any("space_synthetic.md" in d for d in diffs)


def test_a_data_set_without_folder_fails_with_a_clear_message(env: dict, capsys: pytest.CaptureFixture) -> None:
    rc = reproduce(preset="tiny", datasets=["btad"], categories=["01"], roots={}, runs=env["base"] / "x" / "runs",
                   results=env["base"] / "x" / "results", progress=False)  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out
    assert "btad/(all)" in out and "no data folder for data set 'btad'" in out
    assert not (env["base"] / "x" / "results").exists()  # nothing ran, nothing to summarise


def test_a_folder_data_set_runs_every_category_folder_of_its_root(tmp_path: Path, capsys, shared_data) -> None:
    """Its categories are the root's sub-folders (it used to fail with 'no categories known' unless named), and
    `--root folder=PATH` alone selects it (the preset's synthetic data set used to run instead). A sub-folder that is
    not a category fails in its line, before any kernel starts."""
    from dynad.reproduce import _tasks

    for name in ("cable", "screw"):
        shutil.copytree(shared_data[0] / "board", tmp_path / "data" / name)
    (tmp_path / "data" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    args = ("tiny", ["folder"], None)
    rest = (tmp_path / "runs", [], ["04_evaluate"], None, None)
    tasks = _tasks(*args, {"folder": str(tmp_path / "data")}, *rest)
    assert [(t.category, t.error) for t in tasks] == [("cable", None), ("screw", None)]
    (tmp_path / "data" / "notes").mkdir()
    tasks = _tasks(*args, {"folder": str(tmp_path / "data")}, *rest)
    assert [t.category for t in tasks] == ["cable", "notes", "screw"] and tasks[0].error is tasks[2].error is None
    assert tasks[1].error.startswith(f"no training images in {tmp_path / 'data' / 'notes' / 'train' / 'good'}")
    # A preset file (`dynad tune`'s tuned.yaml) names its runs' folder by its stem; its absolute path was joined
    # onto --runs and every category failed on runs/<path>/... ("Not a directory").
    yaml_args = (str(tmp_path / "tune" / "tuned.yaml"), ["folder"], None)
    assert [Path(t.run_dir) for t in _tasks(*yaml_args, {"folder": str(tmp_path / "data")}, *rest)] == [
        (tmp_path / "runs" / "tuned" / "folder" / c).resolve() for c in ("cable", "notes", "screw")]
    (task,) = _tasks(*args, {"folder": str(tmp_path / "empty")}, *rest)
    assert "no categories known for data set 'folder'" in task.error and "--categories" in task.error
    (task,) = _tasks(*args, {"folder": str(tmp_path / "data" / "cable")}, *rest)  # a category folder as the root
    assert task.error == f"{tmp_path / 'data' / 'cable'} is a category folder: the root is {tmp_path / 'data'}, the " \
                         f"category 'cable'"
    rc = reproduce(preset="tiny", roots={"folder": str(tmp_path / "empty")}, runs=tmp_path / "runs",
                   results=tmp_path / "results", progress=False)  # fmt: skip
    assert rc == 1 and "folder/(none)" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    # A mistyped data set name in --root or --datasets is refused by the command line, not run as a data set.
    from dynad.cli import main as cli_main

    for argv, message in ((["--root", f"fold={tmp_path}"], "unknown data set 'fold'"),
                          (["--datasets", "mvtc"], "invalid choice: 'mvtc'")):  # fmt: skip
        with pytest.raises(SystemExit):
            cli_main(["reproduce", "--preset", "tiny", "--runs", str(tmp_path / "runs"), *argv])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_root_and_bad_override_are_reported_once_before_any_kernel(env: dict, capsys, tmp_path: Path) -> None:
    from dynad.config import ConfigError

    runs = tmp_path / "runs"
    # MVTec AD's 15 categories, one missing folder: one line, not 15.
    rc = reproduce(preset="tiny", datasets=["mvtec"], roots={"mvtec": str(tmp_path / "typo")}, runs=runs,
                   results=tmp_path / "results", progress=False)  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1 and out.count("does not exist") == 1 and "mvtec/(all)" in out
    assert not runs.exists()  # no notebook started
    # A root one level above the categories (an archive unpacked into a folder of its own): one line saying where.
    (tmp_path / "download" / "mvtec_anomaly_detection" / "bottle").mkdir(parents=True)
    rc = reproduce(preset="tiny", datasets=["mvtec"], roots={"mvtec": str(tmp_path / "download")}, runs=runs,
                   results=tmp_path / "results", progress=False)  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1 and "mvtec/(all)" in out and out.count("does not exist") == 1 and not runs.exists()
    assert f"the root is {tmp_path / 'download' / 'mvtec_anomaly_detection'}, which holds 'bottle'" in out
    with pytest.raises(ConfigError, match="dic.kk"):
        _reproduce(env, "bad-set", overrides=["dic.kk=3"])
    with pytest.raises(ConfigError, match="threads"):
        _reproduce(env, "bad-threads", threads="two")
    # An out-of-range value too (it used to fail once in each category's first notebook).
    with pytest.raises(ConfigError, match="anomaly_map.kernel_size = 4: must be odd"):
        _reproduce(env, "bad-range", overrides=["anomaly_map.kernel_size=4"])
    with pytest.raises(ConfigError, match="threads = -1: must be >= 0"):
        _reproduce(env, "bad-range", threads=-1)
    # What only torch can check: a block the backbone lacks, weights that are not there (the mvtec preset's
    # resnet34 file), a UNet block diffusers lacks. Each failed in every category once its models were trained.
    with pytest.raises(ConfigError, match="features.layers: MobileNetV2 has no block named 'features.99'"):
        _reproduce(env, "bad-range", overrides=["features.layers=[features.3,features.6,features.99]"])
    with pytest.raises(FileNotFoundError, match="feature-extractor weights '/nowhere/resnet34-b627a593.pth' not"):
        _reproduce(env, "bad-range", overrides=["features.weights=/nowhere/resnet34-b627a593.pth"])
    with pytest.raises(ConfigError, match="FooBlock2D does not exist"):
        _reproduce(env, "bad-range", overrides=["denoiser.down_block_types=[DownBlock2D,FooBlock2D]"])
    with pytest.raises(FileNotFoundError, match="autoencoder.source = '/nowhere/sd-vae': no such file or folder"):
        _reproduce(env, "bad-range", overrides=["autoencoder.source=/nowhere/sd-vae"])
    for jobs in (0, -1):  # -1 is "all cores" to joblib; it ran one category at a time in silence
        with pytest.raises(ConfigError, match=f"jobs must be >= 1 \\(categories run at once\\), got {jobs}"):
            _reproduce(env, "bad-jobs", jobs=jobs)
    assert not any((env["base"] / name).exists() for name in ("bad-set", "bad-range", "bad-jobs"))
    # A mistyped synthetic root is an error, not a new data set generated there.
    rc = reproduce(preset="tiny", datasets=["synthetic"], roots={"synthetic": str(tmp_path / "synthetc")}, runs=runs,
                   results=tmp_path / "results", progress=False)  # fmt: skip
    assert rc == 1 and "synthetc" in capsys.readouterr().out and not (tmp_path / "synthetc").exists()


def test_notebook_kernels_start_encrypted_and_without_the_tcp_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """ipykernel 7.4 prints a warning each time a kernel starts over unencrypted TCP; `execute` asks for CurveZMQ,
    so the kernel's connection file holds a Curve key and nothing is printed."""
    import nbformat

    from dynad import reproduce as rep

    if not rep.kernel_options():
        pytest.skip("this jupyter_client has no transport_encryption option or this libzmq no CurveZMQ: plain TCP")
    probe = "import json; from ipykernel import get_connection_file\n"
    probe += "print('curve' if 'curve_secretkey' in json.load(open(get_connection_file())) else 'plain')"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)]), tmp_path / "probe.ipynb")
    monkeypatch.setattr(rep, "notebooks_dir", lambda: tmp_path)
    rep.execute("probe", tmp_path / "out" / "probe.ipynb", {}, tmp_path / "cwd")
    outputs = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4).cells[-1].outputs
    assert [o.get("text", "").strip() for o in outputs] == ["curve"]
    assert "without encryption" not in capfd.readouterr().err
