r"""`paper` vs `reference` fidelity on one category, and what each switched behaviour changes on its own.

    python benchmarks/fidelity_table.py --preset demo --dataset synthetic --root data/synthetic --category board \
        --out results/demo [--train-switches]

Fits the `paper` pipeline once and scores the test set with it; then one row per behaviour of
`dynad.config.FIDELITY`, each switched alone to the official code's value on top of `paper`:
- inference-time behaviours reuse the fitted models (`DynAD.with_overrides`);
- evaluation-time ones (the mask rule, the PRO approximation) reuse the maps;
- training-time ones (the encoder's posterior sample, which the denoiser also trains on; the adaptation's loss,
  step grid, weight decay, and the sampler settings it reconstructs with) need their own fit. Those rows are
  measured with --train-switches, which also fits the full `reference` pipeline; without it, the behaviours that
  act at inference too are measured there only ("inference only"), and the others are listed as not measured.
Trained models go to --models (default <out>/models) and are reused by later runs.

Writes <out>/fidelity_<dataset>_<category>.csv and .md: image AUROC, pixel AUROC, PRO (percent), the mean T_hat,
the share of test images whose T_hat equals the `paper` run's, and the defective test images left with an empty
mask; one more row scores the `paper` maps against the masks as they were read before the mask fix.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dynad import metrics
from dynad.anomaly_map import image_scores
from dynad.config import FIDELITY, apply_overrides, load_preset
from dynad.data import MASK_ENCODING, make_index
from dynad.experiment import fit_pipeline, load_split

# Behaviours whose value is read while training (the denoiser's latents, or the adaptation's reconstructions).
TRAINING = {"autoencoder.posterior", "reconstruction.sampler_start", "reconstruction.drop_first_noise",
            "reconstruction.clamp_decoded", "adaptation.loss", "adaptation.step_grid",
            "adaptation.weight_decay"}  # fmt: skip
# Read at inference as well; "drop_first_noise" acts only on the fixed-step path there, which DIC does not take.
INFERENCE = {"autoencoder.posterior", "reconstruction.sampler_start", "reconstruction.clamp_decoded",
             "dic.self_distance", "dic.binning", "dic.rounding", "anomaly_map.align_corners"}  # fmt: skip
MASKS = ("data.mask_resize", "data.mask_threshold")  # one behaviour: bilinear resize, then > 0


def maps_of(pipe, test: dict) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly maps (N, S, S), T_hat (N,)) of a fitted pipeline on the test images, normalised as its config says."""
    res = pipe.infer_all(test["images"], progress=False)
    return pipe.evaluation_maps(res["latent_map"], res["feature_map"]).numpy(), np.asarray(res["t_hat"])


def evaluate(test: dict, maps: np.ndarray, masks: np.ndarray, pro_method: str) -> dict:
    scores = image_scores(torch.from_numpy(maps)).numpy()
    return metrics.evaluate(test["labels"], scores, masks, maps, pro_method=pro_method)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table, numbers to two decimals (shares, to three)."""
    def cell(col: str, v) -> str:
        if v is pd.NA:
            return ""
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.3f}" if col == "same_t_hat_as_paper" else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(df.columns, row)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--root", default="data/synthetic")
    ap.add_argument("--category", default="board")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--models", default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="key=value, for both modes")
    ap.add_argument("--train-switches", action="store_true", help="also fit the training-time rows and `reference`")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    models = Path(args.models) if args.models else out / "models"
    paper_cfg = load_preset(args.preset, [*args.overrides, "fidelity=paper"])
    ref_values = {key: ref for key, (_, ref) in FIDELITY.items()}

    rows = []

    def add(variant: str, switched: str, how: str, m: dict, t_hat: np.ndarray, empty: int) -> None:
        rows.append({"variant": variant, "switched": switched, "measured": how,
                     **{k: 100 * m[k] for k in ("image_auroc", "pixel_auroc", "pro")},
                     "mean_t_hat": float(np.mean(t_hat)), "same_t_hat_as_paper": float(np.mean(t_hat == paper_t)),
                     "defective_without_mask": empty})  # fmt: skip
        print(rows[-1], flush=True)
        write()

    def write() -> pd.DataFrame:
        """The table so far, as CSV and Markdown (rewritten after every row, so a long run leaves what it has)."""
        df = pd.DataFrame(rows).astype({"defective_without_mask": "Int64"})  # counts; empty where not measured
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"fidelity_{args.dataset}_{args.category}"
        df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.4f")
        stem.with_suffix(".md").write_text(
            f"# paper vs reference fidelity: {args.dataset}/{args.category}, preset {args.preset}"
            f"{' with ' + ', '.join(args.overrides) if args.overrides else ''}\n\n" + markdown(df)
        )
        return df

    def fit(cfg):
        return fit_pipeline(cfg, args.dataset, args.root, args.category, models, progress=False)

    pipe, _, test = fit(paper_cfg)
    masks, pro = test["masks"].numpy(), paper_cfg.eval.pro_method
    maps, paper_t = maps_of(pipe, test)
    add("paper", "-", "fitted", evaluate(test, maps, masks, pro), paper_t, test["defective_without_mask"])
    index = make_index(args.dataset, args.root, args.category)

    def masks_by(rule: dict) -> dict:
        return load_split(index, "test", apply_overrides(paper_cfg, rule), False, MASK_ENCODING[args.dataset])

    # Before the mask fix: bilinear resize then > 0.5 (a small defect can vanish; its pixels then count as normal).
    old = masks_by({"data.mask_resize": "bilinear", "data.mask_threshold": 0.5})
    m = evaluate(test, maps, old["masks"].numpy(), pro)
    add("paper, masks as before the fix (bilinear > 0.5)", "-", "same maps", m, paper_t, old["defective_without_mask"])

    # Cheap rows first (same models or same maps), then the fits, cheapest first: adaptation only, then the
    # denoiser trained on posterior samples, which the full `reference` fit reuses.
    for key, value in ref_values.items():
        if key == MASKS[0]:  # the mask rule: the same maps against the reference code's masks
            ref_masks = masks_by({k: ref_values[k] for k in MASKS})
            m = evaluate(test, maps, ref_masks["masks"].numpy(), pro)
            add(f"paper + {key}=bilinear, threshold 0", "masks", "same maps", m, paper_t,
                ref_masks["defective_without_mask"])  # fmt: skip
        elif key == "eval.pro_method":
            add(f"paper + {key}={value}", key, "same maps", evaluate(test, maps, masks, value), paper_t,
                test["defective_without_mask"])  # fmt: skip
        elif key in INFERENCE:
            how = "same models, inference only" if key in TRAINING else "same models"
            other_maps, t = maps_of(pipe.with_overrides({key: value}), test)
            add(f"paper + {key}={value}", key, how, evaluate(test, other_maps, masks, pro), t,
                test["defective_without_mask"])  # fmt: skip
    # Every inference-time behaviour at once, on the paper run's models and masks.
    inference_keys = {k: v for k, v in ref_values.items() if k in INFERENCE}
    other_maps, t = maps_of(pipe.with_overrides(inference_keys), test)
    add("reference at inference (paper-trained models)", "all inference-time", "same models",
        evaluate(test, other_maps, masks, pro), t, test["defective_without_mask"])  # fmt: skip

    for key in sorted(TRAINING, key=lambda k: (k == "autoencoder.posterior", list(FIDELITY).index(k))):
        if not args.train_switches:
            rows.append({"variant": f"paper + {key}={ref_values[key]}", "switched": key,
                         "measured": "own fit: not measured (--train-switches)"})  # fmt: skip
            continue
        other, _, other_test = fit(apply_overrides(paper_cfg, {key: ref_values[key]}))
        other_maps, t = maps_of(other, other_test)
        m = evaluate(other_test, other_maps, other_test["masks"].numpy(), pro)
        add(f"paper + {key}={ref_values[key]}", key, "own fit", m, t, other_test["defective_without_mask"])
    if args.train_switches:
        ref_cfg = load_preset(args.preset, [*args.overrides, "fidelity=reference"])
        ref_pipe, _, ref_test = fit(ref_cfg)
        ref_maps, t = maps_of(ref_pipe, ref_test)
        m = evaluate(ref_test, ref_maps, ref_test["masks"].numpy(), ref_cfg.eval.pro_method)
        add("reference", "all", "own fit", m, t, ref_test["defective_without_mask"])
    return write()




if __name__ == "__main__":
    main()
