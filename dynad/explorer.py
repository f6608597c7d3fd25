"""The step-size explorer: move T_hat by hand and watch the reconstruction and the anomaly map change.

    explorer = StepSizeExplorer("runs/demo/synthetic/board")   # a run folder (eval/ of it, or `dynad run`'s --out)
    explorer.widget                                            # in Jupyter: category, image, T_hat slider, "use DIC"
    explorer.render_static([20, 80, 200], "grid.png")          # the same views for a few T_hat values, one PNG

DIC (Algorithm 2) picks T_hat from the image's kNN distance; the slider overrides it for one image
(`DynAD.infer(x, t_hat=...)`). The anomaly maps are normalised with the test-set statistics of the evaluation run
(min and max of its raw latent and feature maps, as Eq. 9 does), so maps at different T_hat share one scale.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd


def ensure_run(run_dir: str | Path, fallback: str | Path = "runs/tiny/synthetic/board",
               root: str | Path | None = None) -> Path:
    """`run_dir` when it holds a fitted run (pipeline.pt, in eval/ or not); otherwise the tiny preset fitted on
    synthetic/board into `fallback` (reused when there), saying so in one line. Relative paths are relative to the
    project root.

    The explorer then opens with its defaults before notebook 00 or `dynad run` has made the run it is meant for.
    """
    from dynad.config import load_preset
    from dynad.experiment import is_complete, run_experiment
    from dynad.paths import default_synthetic_root, project_path
    from dynad.results import ensure_data

    run_dir, fallback = project_path(run_dir), project_path(fallback)
    if eval_dir(run_dir) is not None:
        return run_dir
    print(f"No fitted run in {run_dir}: notebook 00 or `dynad run --out {run_dir}` makes one. "
          f"Showing the tiny preset on synthetic/board instead, fitted into {fallback} (about a minute).")
    if not (is_complete(fallback / "eval") and (fallback / "eval" / "pipeline.pt").is_file()):
        data = ensure_data("synthetic", root if root is not None else default_synthetic_root())
        run_experiment(load_preset("tiny"), "synthetic", data, "board", fallback / "eval")
    return fallback


def sweep_summary(sweep: pd.DataFrame, name: str) -> str:
    """What the fixed-step sweep says, in one Markdown paragraph written from its numbers."""
    fixed = sweep[sweep.t_hat != "DIC"]
    dic = float(sweep.loc[sweep.t_hat == "DIC", "image_auroc"].iloc[0])
    best = fixed.loc[fixed.image_auroc.idxmax()]
    worst = fixed.loc[fixed.image_auroc.idxmin()]
    values = " / ".join(f"{100 * v:.1f}" for v in fixed.image_auroc)
    steps = " / ".join(str(t) for t in fixed.t_hat)
    if dic > best.image_auroc:
        verdict = f"DIC's per-image steps beat every fixed step, by {100 * (dic - best.image_auroc):.1f} points"
    elif dic == best.image_auroc:
        verdict = f"DIC's per-image steps tie with the best fixed step (T_hat {best.t_hat})"
    else:
        verdict = (f"the best fixed step, T_hat {best.t_hat}, beats DIC's per-image steps by "
                   f"{100 * (best.image_auroc - dic):.1f} points")  # fmt: skip
    return (f"On {name}, one fixed T_hat for every test image gives image AUROC {values} at T_hat {steps}; DIC gives "
            f"{100 * dic:.1f}. So {verdict}; the worst fixed step (T_hat {worst.t_hat}) gives "
            f"{100 * worst.image_auroc:.1f}.")


def grid_summary(scores: pd.DataFrame) -> str:
    """One Markdown line per image of the static grid: where its map score (max of A) is highest and lowest."""
    lines = []
    for _, r in scores.iterrows():
        per_t = r["scores"]
        hi, lo = max(per_t, key=per_t.get), min(per_t, key=per_t.get)
        kind = "normal image: a high score is a false alarm" if r.label == 0 else "defect: a high score finds it"
        lines.append(f"- **{r.defect_type}** ({kind}): highest score {per_t[hi]:.2f} at T_hat {hi}, lowest "
                     f"{per_t[lo]:.2f} at T_hat {lo}; DIC chose T_hat {r.dic_t_hat}.")  # fmt: skip
    return "\n".join(lines)


def eval_dir(run_dir: str | Path) -> Path | None:
    """The folder of a run's results: `run_dir/eval` (`dynad reproduce`, the notebooks) or `run_dir` itself (`dynad
    run --out run_dir`), as `dynad predict` finds them; None when neither holds pipeline.pt."""
    from dynad.predict import PredictError, find_pipeline

    try:
        return find_pipeline(run_dir).parent
    except PredictError:
        return None


def sibling_runs(run_dir: str | Path) -> dict[str, Path]:
    """{category: run folder} of the fitted runs next to run_dir (same preset and data set)."""
    run_dir = Path(run_dir).resolve()
    found = {p.name: p for p in sorted(run_dir.parent.iterdir()) if p.is_dir() and eval_dir(p) is not None}
    found.setdefault(run_dir.name, run_dir)
    return dict(sorted(found.items()))


class StepSizeExplorer:
    """Interactive views of one run; the public state is `state` (what the views show) and the widgets."""

    def __init__(self, run_dir: str | Path, max_t_hat: int | None = None):
        import ipywidgets as w

        self._w = w
        self.max_t_hat_arg = max_t_hat
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self.figure_png: bytes = b""
        self.runs = sibling_runs(run_dir)
        self._busy = False
        self.category_select = w.Dropdown(options=list(self.runs), value=Path(run_dir).resolve().name,
                                          description="category")  # fmt: skip
        self.image_select = w.Dropdown(options=[], description="test image", layout=w.Layout(width="420px"))
        self.t_hat_slider = w.IntSlider(description="T_hat", continuous_update=False, layout=w.Layout(width="520px"))
        self.dic_button = w.Button(description="use DIC", tooltip="reset T_hat to the value DIC picks for this image")
        self.info = w.HTML()
        self.output = w.Output()
        self.widget = w.VBox([
            w.HBox([self.category_select, self.image_select]), w.HBox([self.t_hat_slider, self.dic_button]),
            self.info, self.output,
        ])  # fmt: skip
        self.load(self.runs[self.category_select.value])
        self.category_select.observe(lambda ch: self.load(self.runs[ch["new"]]), names="value")
        self.image_select.observe(self._on_image, names="value")
        self.t_hat_slider.observe(lambda ch: self.update(), names="value")
        self.dic_button.on_click(lambda _b: self.reset_to_dic())

    # ----------------------------------------------------------------------------------------------------------
    # Loading a run.

    def load(self, run_dir: str | Path) -> None:
        """Load the run's results: the fitted pipeline, the kNN statistics, the test images and the map statistics."""
        from dynad.anomaly_map import MapNormalization
        from dynad.pipeline import DynAD
        from dynad.report.figures import load_images

        self.run_dir = Path(run_dir).resolve()
        self.eval_dir = ev = eval_dir(self.run_dir) or self.run_dir / "eval"  # none: load() names the missing file
        self.pipe = DynAD.load(ev / "pipeline.pt")
        self.dic = json.loads((ev / "dic.json").read_text())
        self.per_image = pd.read_csv(ev / "per_image.csv", keep_default_na=False)
        with np.load(ev / "maps.npz") as z:
            lat, feat = z["latent_map"].astype(np.float32), z["feature_map"].astype(np.float32)
            self.gt_mask = z["gt_mask"].astype(bool) if "gt_mask" in z else None  # None: image labels only
            self.amap_max = float(z["anomaly_map"].astype(np.float32).max())
        # Eq. 9's test-set statistics of the evaluation run: maps at any T_hat share this scale.
        self.normalization = MapNormalization(float(lat.min()), float(lat.max()), float(feat.min()), float(feat.max()))
        size = self.pipe.cfg.data.image_size
        self.images = load_images(self.per_image.path.tolist(), size)  # (N, 3, S, S)
        self._cache.clear()

        step, t_max = self.pipe.cfg.reconstruction.num_steps, self.pipe.cfg.dic.t_max
        top = self.max_t_hat_arg or 2 * t_max
        top = min(top, self.pipe.schedule.num_train_timesteps - 1)
        top -= top % step
        options = [(f"{i}: {r.defect_type} (DIC T_hat {r.t_hat}, score {r.score:.3f})", i)
                   for i, r in self.per_image.iterrows()]  # fmt: skip
        self._busy = True  # set the widgets without recomputing for each change
        self.t_hat_slider.min = 0  # widen first: min must never pass max while the range changes
        self.t_hat_slider.max = max(top, step)
        self.t_hat_slider.min, self.t_hat_slider.step = step, step
        self.image_select.options = options
        self.image_select.value = options[0][1]
        self.t_hat_slider.value = self.dic_t_hat(0)
        self._busy = False
        self.update()

    def dic_t_hat(self, i: int) -> int:
        return int(self.per_image.t_hat.iloc[i])

    # ----------------------------------------------------------------------------------------------------------
    # Computing and drawing.

    def _on_image(self, change) -> None:
        if self._busy:
            return
        self._busy = True
        self.t_hat_slider.value = self.dic_t_hat(change["new"])  # a new image starts at its DIC step
        self._busy = False
        self.update()

    def reset_to_dic(self) -> None:
        self.t_hat_slider.value = self.dic_t_hat(self.image_select.value)

    def compute(self, i: int, t_hat: int) -> dict[str, Any]:
        """Reconstruction and anomaly map of test image i at step t_hat (cached)."""
        import torch

        key = (i, t_hat)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.pipe.cfg.seed)
            out = self.pipe.infer(self.images[i : i + 1], t_hat=t_hat, generator=gen)
            amap = self.pipe.anomaly_maps(out["latent_map"], out["feature_map"], self.normalization)[0].numpy()
            self._cache[key] = {
                "knn_distance": float(out["knn_distance"][0]), "bin": int(out["bin"][0]),
                "dic_t_hat": self.dic_t_hat(i), "reconstruction": out["reconstruction"][0],
                "anomaly_map": amap, "score": float(amap.max()),
            }  # fmt: skip
        return self._cache[key]

    def update(self) -> None:
        """Recompute for the selected image and slider value, refresh `state` and the views."""
        if self._busy or self.image_select.value is None:
            return
        i, t = int(self.image_select.value), int(self.t_hat_slider.value)
        res = self.compute(i, t)
        row = self.per_image.iloc[i]
        self.state = {"run_dir": str(self.run_dir), "index": i, "path": row.path, "defect_type": row.defect_type,
                      "label": int(row.label), "t_hat": t, **res}  # fmt: skip
        self.figure_png = self._render_png(i, t, res)
        self._show(self.figure_png)
        # After the figure, so that the line never names a T_hat the picture does not show yet (slider dragged fast).
        self.info.value = (
            f"<b>{row.defect_type}</b>: kNN distance {res['knn_distance']:.4g}, bin {res['bin']} "
            f"&rarr; DIC T_hat {res['dic_t_hat']}; shown: T_hat {t}; image score (max of A) {res['score']:.3f}"
        )

    def _truth(self, i: int) -> np.ndarray | None:
        """Image i's ground-truth panel (`plots.shown_truth`: None for an anomalous image with image labels only)."""
        from dynad import plots

        return plots.shown_truth(self.gt_mask, self.per_image.label, i, self.images.shape[-1])

    def _render_png(self, i: int, t: int, res: dict[str, Any]) -> bytes:
        from dynad import plots

        plt = plots.plt
        fig = plt.figure(figsize=(12, 3.0))
        gs = fig.add_gridspec(1, 6, width_ratios=[2.2, 1, 1, 1, 1, 0.05])
        ax = fig.add_subplot(gs[0])
        plots.knn_histogram(self.dic, None, title="kNN distances (Figure 5)", ax=ax)
        ax.axvline(res["knn_distance"], color="magenta", lw=2, label="this image")
        ax.legend(fontsize=6)
        ax.xaxis.label.set_fontsize(6)
        panels = [(plots.to_rgb(self.images[i]), None, "input"),
                  (plots.to_rgb(res["reconstruction"]), None, f"reconstruction (T_hat {t})"),
                  (res["anomaly_map"], "jet", "anomaly map"),
                  (self._truth(i), "gray", "ground truth")]  # fmt: skip
        for k, (img, cmap, title) in enumerate(panels):
            a = fig.add_subplot(gs[k + 1])
            kw = {"vmin": 0, "vmax": self.amap_max} if title == "anomaly map" else {}
            if img is None:
                plots.no_mask(a)
            else:
                im = a.imshow(img, cmap=cmap, **kw)
            a.set_title(title, fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
            if title == "anomaly map":
                fig.colorbar(im, cax=fig.add_subplot(gs[5]))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    def _show(self, png: bytes) -> None:
        """Draw into the Output widget when running in a kernel (tests and scripts just keep `figure_png`)."""
        try:
            from IPython import get_ipython
            from IPython.display import Image
        except ImportError:
            return
        ip = get_ipython()
        if ip is None or getattr(ip, "kernel", None) is None:
            return
        # Set the Output widget's content directly: capturing with `with self.output: clear_output(wait=True)`
        # hangs under papermill/nbclient, which intercepts the capture messages.
        self.output.outputs = ()
        self.output.append_display_data(Image(data=png))

    # ----------------------------------------------------------------------------------------------------------
    # A static version for reports and papermill runs.

    def example_images(self, n: int = 4) -> list[int]:
        """One anomalous image per defect type (highest score), then a normal one; up to n."""
        from dynad import plots

        rows = self.per_image.rename(columns={"path": "image_path"})
        return plots.pick_examples(rows, self.per_image.score.to_numpy(), n)

    def default_t_values(self) -> list[int]:
        """A few steps across the slider's range: one step, T_max / 4, T_max / 2, T_max, 2 T_max (if allowed)."""
        step, t_max = self.t_hat_slider.step, self.pipe.cfg.dic.t_max
        vals = [step, t_max // 4, t_max // 2, t_max, 2 * t_max]
        vals = [max(step, v - v % step) for v in vals if v <= self.t_hat_slider.max]
        return sorted(set(vals))

    def fixed_step_sweep(self, t_values: Sequence[int] | None = None) -> pd.DataFrame:
        """Image and pixel AUROC of the whole test set with one fixed T_hat for every image, at each of `t_values`,
        and the evaluation's own DIC row last: columns t_hat ("DIC" for the dynamic step), image_auroc, pixel_auroc
        (None with image labels only).

        Each fixed step's maps are normalised as the evaluation's were (its test set, or the training statistics).
        """
        import torch

        from dynad import metrics
        from dynad.anomaly_map import image_scores

        t_values = list(t_values) if t_values else self.default_t_values()
        labels = self.per_image.label.to_numpy()
        rows = []
        for t in t_values:
            gen = torch.Generator().manual_seed(self.pipe.cfg.seed)
            parts = [self.pipe.infer(self.images[k : k + self.pipe.cfg.data.batch_size], t_hat=int(t), generator=gen)
                     for k in range(0, len(self.images), self.pipe.cfg.data.batch_size)]  # fmt: skip
            lat = torch.cat([p["latent_map"] for p in parts])  # (N, S, S)
            feat = torch.cat([p["feature_map"] for p in parts])
            maps = self.pipe.evaluation_maps(lat, feat)
            pixel = None if self.gt_mask is None else metrics.pixel_auroc(self.gt_mask, maps.numpy())
            rows.append({"t_hat": int(t), "image_auroc": metrics.image_auroc(labels, image_scores(maps).numpy()),
                         "pixel_auroc": pixel})  # fmt: skip
        m = json.loads((self.eval_dir / "metrics.json").read_text())
        rows.append({"t_hat": "DIC", "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"]})
        return pd.DataFrame(rows)

    def grid_scores(self, t_values: Sequence[int] | None = None, images: Sequence[int] | None = None) -> pd.DataFrame:
        """The static grid's numbers: per image its defect type, label, DIC step and {T_hat: map score}."""
        t_values = list(t_values) if t_values else self.default_t_values()
        images = list(images) if images is not None else self.example_images()
        return pd.DataFrame([{
            "index": i, "defect_type": self.per_image.defect_type.iloc[i], "label": int(self.per_image.label.iloc[i]),
            "dic_t_hat": self.dic_t_hat(i), "scores": {int(t): self.compute(i, int(t))["score"] for t in t_values},
        } for i in images])  # fmt: skip

    def render_static(
        self, t_values: Sequence[int] | None, path: str | Path, images: Sequence[int] | None = None
    ) -> Path:
        """A grid: per image one row of reconstructions and one row of anomaly maps, one column per T_hat
        (the DIC choice marked with *); input and ground truth in the first column. Writes PNG (and PDF)."""
        from dynad import plots

        t_values = list(t_values) if t_values else self.default_t_values()
        images = list(images) if images is not None else self.example_images()
        plt = plots.plt
        ncol = len(t_values) + 1
        fig, axes = plt.subplots(2 * len(images), ncol, figsize=(1.6 * ncol, 3.2 * len(images)), squeeze=False)
        for r, i in enumerate(images):
            row = self.per_image.iloc[i]
            top, bottom = axes[2 * r], axes[2 * r + 1]
            top[0].imshow(plots.to_rgb(self.images[i]))
            top[0].set_ylabel(f"{row.defect_type}\nDIC T_hat {row.t_hat}", fontsize=7)
            truth = self._truth(i)
            if truth is None:
                plots.no_mask(bottom[0])
            else:
                bottom[0].imshow(truth, cmap="gray", vmin=0, vmax=1)
            bottom[0].set_ylabel("ground truth", fontsize=7)
            for c, t in enumerate(t_values, start=1):
                res = self.compute(i, int(t))
                top[c].imshow(plots.to_rgb(res["reconstruction"]))
                bottom[c].imshow(res["anomaly_map"], cmap="jet", vmin=0, vmax=self.amap_max)
                mark = "*" if int(t) == int(row.t_hat) else ""
                top[c].set_title(f"T_hat {t}{mark}", fontsize=7)
                bottom[c].set_title(f"score {res['score']:.2f}", fontsize=6)
            if r == 0:
                top[0].set_title("input", fontsize=7)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        # The title sits above the first row's column titles: 0.6 inch of the figure kept free for both.
        fig.subplots_adjust(top=1 - 0.6 / fig.get_figheight(), hspace=0.35)
        fig.suptitle(f"{self.run_dir.parent.name}/{self.run_dir.name}: reconstruction and anomaly map vs T_hat\n"
                     "(* = DIC's choice; maps on the evaluation's test-set scale)", fontsize=8,
                     y=1 - 0.05 / fig.get_figheight(), va="top")  # fmt: skip
        return plots.save(fig, path, pdf=True)
