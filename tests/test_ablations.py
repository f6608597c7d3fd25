"""The ablation variants share fitted pipelines where only inference differs, and give the numbers of a fresh fit."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dynad import ablations
from dynad.ablations import ablation_variants, fit_key, run_ablations, variant_dir
from dynad.config import ConfigError, apply_overrides, load_preset
from dynad.experiment import run_experiment


def _variant_cfgs(cfg):
    return {n: apply_overrides(cfg, {**o, "use_per_category": False}) for n, (_, o) in ablation_variants(cfg).items()}


def test_fit_keys_group_the_variants_that_differ_only_at_inference():
    v = _variant_cfgs(load_preset("tiny"))
    keys = {n: fit_key(c) for n, c in v.items()}
    fixed = [n for n in v if n.startswith("fixed")]
    assert {keys[n] for n in fixed} == {keys["DIC (full method)"]}
    assert keys["neither (noise, no DA)"] == keys["DS only"]  # nothing adapted: the start acts at inference only
    assert keys["DA only"] != keys["DIC (full method)"]  # adaptation trains on reconstructions from the noised start
    assert len(set(keys.values())) == 4  # 8 variants, 4 fits


@pytest.mark.slow
def test_shared_fits_give_the_numbers_of_a_fresh_fit(shared_data, tmp_path, monkeypatch, one_thread):
    root, models = shared_data
    cfg = load_preset("tiny", ["ablations.variants=short"])
    fits = []
    real_fit = ablations.fit_pipeline
    monkeypatch.setattr(ablations, "fit_pipeline", lambda *a, **k: fits.append(a[0]) or real_fit(*a, **k))
    only = ["DIC (full method)", "fixed 50% T_max", "neither (noise, no DA)", "DS only", "pixel space"]
    df = run_ablations(cfg, "synthetic", root, "board", tmp_path / "abl", models, progress=False, only=only)
    assert len(fits) == 2  # the full method (+ the fixed step) and "neither" (+ DS only)
    assert list(dict.fromkeys(df.variant)) == only[:4]  # "short" leaves out the pixel space
    # with_overrides of a shared fit: "DS only" of "neither (noise, no DA)" (another start, DIC refitted), the fixed
    # step of the full method's
    for name in ("DS only", "fixed 50% T_max"):
        fresh = run_experiment(_variant_cfgs(cfg)[name], "synthetic", root, "board", tmp_path / "fresh" / name,
                               models_dir=models, progress=False, save_pipeline=False, figures=False, baselines=False)  # fmt: skip
        shared = json.loads((tmp_path / "abl" / "variants" / variant_dir(name) / "metrics.json").read_text())
        for k in ("image_auroc", "pixel_auroc", "pro"):
            assert shared[k] == pytest.approx(fresh[k], abs=1e-9), (name, k)
    assert pd.read_csv(tmp_path / "abl" / "ablations.csv").variant.nunique() == 4
    with pytest.raises(ConfigError, match="ablations.variants"):
        run_ablations(load_preset("tiny", ["ablations.variants=some"]), "synthetic", root, "board", tmp_path / "x",
                      models, progress=False)  # fmt: skip
