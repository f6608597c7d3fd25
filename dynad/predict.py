"""`dynad predict RUN_DIR IMAGES... --out DIR`: score new images with a fitted run.

    summary = predict("runs/board", ["new/*.png", "more_images/"], "predictions/board")

RUN_DIR is a `dynad run` output folder (or a `dynad reproduce` category folder, whose `eval/` holds it) with its
`pipeline.pt`. Images may be files, folders (searched recursively) or glob patterns, of any size: each is resized
to the run's image size, as training did, and scored in batches, so only one batch is in memory at a time. Maps
are normalised with the training statistics stored in the pipeline (Eq. 9 without a test set).

The threshold, in this order: `threshold` when given; the F1-optimal threshold on the run's validation
pseudo-defects (`metrics.json["validation"]["threshold"]`) when the run has them; else the `predict.threshold_quantile`
quantile (0.99 by default) of the scores of the training images the normalisation statistics came from. An image is
anomalous when its score (the map's maximum) reaches the threshold; its mask marks the pixels that do.

Writes into `out`:
    predictions.csv      path, name, score, is_anomalous, threshold, knn_distance, bin, t_hat
    overlays/<name>      the input at its own size with the anomaly map over it (jet; the threshold is mid-scale)
    masks/<name>         the binary mask at the threshold (255 = anomalous), at the input's own size
    summary.json         counts, threshold and where it came from, skipped files, images per second, peak memory,
                         aspect_ratio: the images of another width / height than the training images' (warned about)
    summary.png          the scores against the threshold, and the overlays of the eight highest scores (`highest`)
<name> is the image's path inside the folder given for it (a tree of day or camera folders keeps its shape:
day1/0001.png), else its file name, as .png; with -2, -3, ... when names repeat. A file that cannot be read is
skipped with one line naming it; the others are still scored. A second prediction into the same `out` replaces the
first's files.

An interrupted prediction resumes: each batch's rows are appended to `predictions.partial.csv` as it is scored, so
the same command again (the same run, threshold and image size; each earlier row's image among the inputs, under
the same name) scores only the images that are not there yet; any other command into that folder starts afresh.
The partial files are removed once predictions.csv is written.
"""

from __future__ import annotations

import glob
import io
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from dynad import plots, run_folder
from dynad.data import DatasetError, aspect_warning, load_image, open_rgb, other_aspect_ratios
from dynad.pipeline import DynAD
from dynad.provenance import atomic_write, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
COLUMNS = ["path", "name", "score", "is_anomalous", "threshold", "knn_distance", "bin", "t_hat"]


class PredictError(ValueError):
    """A run folder without a usable pipeline, no images, or no threshold; the message names the fault."""


def find_pipeline(run_dir: str | Path) -> Path:
    """RUN_DIR/pipeline.pt, or RUN_DIR/eval/pipeline.pt (a `dynad reproduce` category folder)."""
    run_dir = Path(run_dir)
    for p in (run_dir / "pipeline.pt", run_dir / "eval" / "pipeline.pt"):
        if p.is_file():
            return p
    raise PredictError(f"{run_dir}: no pipeline.pt (looked at {run_dir / 'pipeline.pt'} and "
                       f"{run_dir / 'eval' / 'pipeline.pt'}); `dynad run` writes it")  # fmt: skip


def expand_inputs(items: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files, folders (recursive; image suffixes only; hidden files and folders skipped, as the data sets' readers
    skip macOS's `._name.jpg` resource forks) and globs -> (image paths in order, problems)."""
    paths: list[Path] = []
    problems: list[dict[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))  # fmt: skip
            if not found:
                problems.append({"path": str(p), "error": "folder holds no image files"})
            paths += found
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not found:
                problems.append({"path": str(item), "error": "pattern matches no file"})
            paths += found
        else:
            problems.append({"path": str(item), "error": "no such file or folder"})
    return list(dict.fromkeys(paths)), problems  # each file once, first occurrence first


def _check_quantile(q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise PredictError(f"threshold quantile must lie in [0, 1], got {q}")
    return q


def run_threshold(pipeline_path: Path, pipe: DynAD, quantile: float | None = None) -> tuple[float, str]:
    """(threshold, where it came from) for a run without `--threshold`."""
    m = pipeline_path.parent / "metrics.json"
    validation = json.loads(m.read_text()).get("validation") if m.is_file() else None
    if validation and validation.get("threshold") is not None:
        return float(validation["threshold"]), f"F1-optimal on the run's validation pseudo-defects ({m})"
    if pipe.train_scores is None:
        raise PredictError(f"{pipeline_path}: the run has no validation threshold and the pipeline stores no "
                           "training scores (saved before `dynad predict` existed); pass --threshold")  # fmt: skip
    q = pipe.cfg.predict.threshold_quantile if quantile is None else _check_quantile(quantile)
    n = len(pipe.train_scores)
    return float(np.quantile(pipe.train_scores, q)), f"{q} quantile of {n} training images' scores"


def heat_overlay(image: Image.Image, amap: np.ndarray, threshold: float) -> Image.Image:
    """The RGB image with the map (H, W) over it, half and half: jet of map / (2 threshold), so the threshold is
    mid-scale. In 8-bit integers through jet's 256-colour table (matplotlib's own lookup, floor(x N)): on a 48 MP
    image, matplotlib's float RGBA copy took 11 s and 1.5 GB."""
    import matplotlib

    jet = matplotlib.colormaps["jet"]
    table = np.round(255 * jet(np.arange(jet.N))[:, :3]).astype(np.uint16)  # (256, 3)
    index = np.clip(amap * np.float32(jet.N / max(2 * threshold, 1e-12)), 0, jet.N - 1).astype(np.uint8)  # (H, W)
    rgb = np.asarray(image, dtype=np.uint16)  # (H, W, 3)
    return Image.fromarray(((rgb + table[index] + 1) >> 1).astype(np.uint8))


class _Partial:
    """predictions.partial.csv (the rows scored so far) and .json (what they were scored with), for resuming."""

    def __init__(self, out: Path, pipeline: Path, threshold: float, size: int, paths: list[Path], names: list[str]):
        self.csv, self.json = out / "predictions.partial.csv", out / "predictions.partial.json"
        stat = pipeline.stat()
        self.key = {"run": str(pipeline.resolve()), "run_bytes": stat.st_size, "run_mtime_ns": stat.st_mtime_ns,
                    "threshold": threshold, "image_size": size}  # fmt: skip
        self.out, self.index = out, {(str(p), f"{n}.png"): i for i, (p, n) in enumerate(zip(paths, names))}

    def resume(self) -> dict[int, dict]:
        """The rows of an interrupted attempt of this same prediction, by input index; {} when there is none."""
        try:
            if json.loads(self.json.read_text()) != self.key:
                return {}
            text = self.csv.read_text()
            # Complete lines only: a kill while appending leaves the last one cut short.
            table = pd.read_csv(io.StringIO(text[: text.rfind("\n") + 1]), keep_default_na=False)
        except (OSError, ValueError):  # none, or unreadable: start afresh
            return {}
        if list(table.columns) != COLUMNS:
            return {}
        done = {}
        for row in table.to_dict("records"):
            i = self.index.get((row["path"], row["name"]))
            if i is None or not all((self.out / d / row["name"]).is_file() for d in ("overlays", "masks")):
                return {}  # an image list that has changed since, or pictures deleted since
            done[i] = row
        return done

    def start(self, done: dict[int, dict]) -> None:
        """Write the key, and the table with the rows kept from an earlier attempt (none when fresh)."""
        write_json(self.json, self.key)
        with atomic_write(self.csv, "w") as f:
            pd.DataFrame([done[i] for i in sorted(done)], columns=COLUMNS).to_csv(f, index=False)

    def append(self, rows: list[dict]) -> None:
        with open(self.csv, "a") as f:
            pd.DataFrame(rows, columns=COLUMNS).to_csv(f, index=False, header=False)

    def remove(self) -> None:
        self.csv.unlink(missing_ok=True)
        self.json.unlink(missing_ok=True)


def _remove_earlier(out: Path) -> None:
    """The overlays and masks that an earlier prediction into `out` wrote, as its tables name them: other files in
    those folders (a data set's own masks/, say) are left alone."""
    names: set[str] = set()
    for table in (out / "predictions.csv", out / "predictions.partial.csv"):
        try:
            names |= set(pd.read_csv(table, usecols=["name"], dtype=str, keep_default_na=False).name)
        except (OSError, ValueError):  # none, or not ours
            continue
    for name in names:
        for folder in (out / "overlays", out / "masks"):
            f = folder / name
            if not f.resolve().is_relative_to(folder.resolve()):  # a table that is not ours, naming ../ files
                continue
            f.unlink(missing_ok=True)
            for parent in f.parents:  # the sub-folders a name brought, once empty
                if parent == folder or not parent.is_relative_to(folder):
                    break
                if parent.is_dir():
                    if any(parent.iterdir()):
                        break
                    parent.rmdir()


def _output_names(paths: list[Path], inputs: Iterable[str | Path]) -> list[str]:
    """A unique name per image, without suffix: its path inside the folder given for it (so a tree of day or camera
    folders keeps its shape: day1/0001), else its stem; with -2, -3, ... for names seen before."""
    folders = [Path(i) for i in inputs if Path(i).is_dir()]
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        folder = next((f for f in folders if p.is_relative_to(f)), None)
        stem = p.relative_to(folder).with_suffix("").as_posix() if folder is not None else p.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def predict(
    run_dir: str | Path,
    inputs: Iterable[str | Path],
    out: str | Path,
    threshold: float | None = None,
    quantile: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every image of `inputs` with the run's pipeline and write the files above; returns the summary."""
    t_start = time.perf_counter()
    # Checked whether or not they are used (a validation threshold makes the quantile moot): a typo is still a typo.
    if quantile is not None:
        _check_quantile(quantile)
    if batch_size is not None and batch_size < 1:
        raise PredictError(f"batch size must be >= 1, got {batch_size}")
    if threshold is not None and not np.isfinite(threshold):
        raise PredictError(f"threshold must be a finite number, got {threshold}")
    out = Path(out)
    pipeline_path = find_pipeline(run_dir)
    paths, skipped = expand_inputs(inputs)
    own = [(out / name).resolve() for name in ("overlays", "masks", "summary.png")]  # an earlier prediction's pictures
    paths = [p for p in paths if not any(p.resolve().is_relative_to(mine) for mine in own)]
    for s in skipped:
        print(f"skipped {s['path']}: {s['error']}", file=sys.stderr)
    if not paths:
        raise PredictError("no image to score in " + ", ".join(str(i) for i in inputs))
    pipe = DynAD.load(pipeline_path, device)
    if pipe.train_normalization is None:
        raise PredictError(f"{pipeline_path}: the pipeline stores no training statistics to normalise maps with")
    source = "given (--threshold)"
    if threshold is None:
        threshold, source = run_threshold(pipeline_path, pipe, quantile)
    run_folder.prepare_folder(out, 0, "output folder")  # a file there, or no write access: one line, before scoring
    size = pipe.cfg.data.image_size
    batch_size = pipe.cfg.data.batch_size if batch_size is None else batch_size
    names = _output_names(paths, inputs)
    partial = _Partial(out, pipeline_path, threshold, size, paths, names)
    done = partial.resume()
    if done:
        print(f"resuming: {len(done)} of {len(paths)} images were scored before ({partial.csv}); scoring the others",
              file=sys.stderr)  # fmt: skip
    else:  # an earlier prediction's pictures would mix with these
        _remove_earlier(out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    partial.start(done)
    rows = dict(done)  # input index -> row
    t0 = time.perf_counter()
    todo = [i for i in range(len(paths)) if i not in done]
    # closed on Ctrl-C too, so that the bar is not drawn again below the `interrupted:` line
    with tqdm(total=len(paths), initial=len(done), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = []  # (index, tensor (3, S, S))
            for i in todo[start : start + batch_size]:
                try:
                    batch.append((i, load_image(paths[i], size)))
                except DatasetError as e:
                    bar.write(f"skipped {paths[i]}: {e}", file=sys.stderr)  # on a line of its own, above the bar
                    skipped.append({"path": str(paths[i]), "error": str(e)})
            if not batch:
                bar.update(len(todo[start : start + batch_size]))
                continue
            res = pipe.score(torch.stack([x for _, x in batch]))
            new_rows = []
            for k, (i, _) in enumerate(batch):
                score = float(res["pred_score"][k])
                image = open_rgb(paths[i])  # decoded again at its own size, for the overlay
                amap = F.interpolate(res["anomaly_map"][k][None, None].float(), size=(image.height, image.width),
                                     mode="bilinear", align_corners=False)[0, 0].numpy()  # (H, W) fmt: skip
                overlay, mask = out / "overlays" / f"{names[i]}.png", out / "masks" / f"{names[i]}.png"
                for f in (overlay, mask):
                    f.parent.mkdir(parents=True, exist_ok=True)  # names keep the input folder's sub-folders
                heat_overlay(image, amap, threshold).save(overlay)
                Image.fromarray(((amap >= threshold) * 255).astype(np.uint8)).save(mask)
                rows[i] = {"path": str(paths[i]), "name": f"{names[i]}.png", "score": score,
                           "is_anomalous": score >= threshold, "threshold": threshold,
                           "knn_distance": float(res["knn_distance"][k]), "bin": int(res["bin"][k]),
                           "t_hat": int(res["t_hat"][k])}  # fmt: skip
                new_rows.append(rows[i])
            partial.append(new_rows)  # after the batch's pictures, so a row in it means its files are written
            bar.update(len(todo[start : start + batch_size]))
    seconds = time.perf_counter() - t0
    rows = [rows[i] for i in sorted(rows)]  # input order, whatever the earlier attempt scored
    with atomic_write(out / "predictions.csv", "w") as f:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(f, index=False)
    partial.remove()
    n_new = len(rows) - len(done)
    summary = {
        "run": str(pipeline_path),
        "n_images": len(rows),
        "n_anomalous": int(sum(r["is_anomalous"] for r in rows)),
        "threshold": threshold,
        "threshold_source": source,
        "skipped": skipped,
        "image_size": size,
        "batch_size": batch_size,
        "device": str(pipe.device),
        "threads": torch.get_num_threads(),
        "resumed": len(done),  # images scored by an interrupted earlier attempt
        "seconds_scoring": seconds,
        "seconds_total": time.perf_counter() - t_start,
        "images_per_second": n_new / seconds if seconds > 0 and n_new else None,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "highest": [r["name"] for r in sorted(rows, key=lambda r: -r["score"])[:8]],  # shown in summary.png
    }
    summary["aspect_ratio"] = _check_aspect_ratios(pipe, rows)
    write_json(out / "summary.json", summary)
    if rows:
        plots.prediction_summary(pd.DataFrame(rows, columns=COLUMNS), summary["highest"], out / "overlays",
                                 out / "summary.png")  # fmt: skip
    else:  # every file skipped: no earlier prediction's figure stays beside this summary
        (out / "summary.png").unlink(missing_ok=True)
    return summary


def _check_aspect_ratios(pipe: DynAD, rows: list[dict]) -> dict[str, Any] | None:
    """The images of another width / height than the training images' (`data.other_aspect_ratios`), with one warning
    line; None for pipelines that do not store the training images' range (saved before 2026-12-07)."""
    training = pipe.provenance.get("data", {}).get("train_aspect_ratio")
    if training is None:
        return None
    outside = other_aspect_ratios([r["path"] for r in rows], training)
    if outside:
        (i, size) = outside[0]
        print("WARNING: " + aspect_warning(len(outside), len(rows), "images", training, rows[i]["name"], size,
                                           pipe.cfg.data.image_size), file=sys.stderr)  # fmt: skip
    return {"training": training, "outside": len(outside), "examples": [rows[i]["name"] for i, _ in outside[:8]]}
