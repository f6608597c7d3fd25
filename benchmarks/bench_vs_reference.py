"""Inference speed of dynad beside the official code (github.com/JustinTebbe/Dynamic-noise-AD), same models and images.

    python benchmarks/bench_vs_reference.py --reference-code /tmp/Dynamic-noise-AD [--batch 16 1] [--images 16]
    python benchmarks/bench_vs_reference.py                      # dynad alone (its variants, no official code)

What both pipelines get: the paper-scale models with random weights, 256 px, T_max 80, 10 DDIM steps, eta 4,
K 20, 64 training images in the kNN bank and `--images` test images (the synthetic `board` category, written
at 256 px in the MVTec layout, which the official `MVTecDataset` reads itself). One set of sd-vae-ft-mse-shaped
VAE weights and one set of ResNet-34 weights are shared by both; each has its own UNet (official: the
guided-diffusion UNetModel of its config.yaml, 281.1 M parameters; dynad: the `mvtec` preset's diffusers
UNet2DModel, 267.2 M). Everything runs in this one process, back to back, on the same torch thread count: the
official code first, then each dynad variant (`VARIANTS`).

The official code is run from the checkout given, never copied. Its `test.validate` runs unchanged, with these
run-time patches, each needed to run it offline on the CPU or to time it:
  1. `consistencydecoder` (imported by test.py, unused with its `consistency_decoder: 0`) is an empty stub module.
  2. `AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-mse")` returns the shared VAE (it would download).
  3. `resnet34(pretrained=True)` returns the shared ResNet-34 (it would download).
  4. `metrics` (skimage, torchmetrics) is a stub: `metric` and `visualize` run after the timed loop, on the
     random models' maps, and are no-ops here (dynad's side times no metrics either).
  5. Timers wrap the feature extractor, `KNN.transform`, the VAE's `encode` and `decode`, `my_generalized_steps`
     and the four map functions (`color_distance`, `feature_distance_new`, `recon_heat_map`, `feature_heat_map`).
Its config.yaml is read as is, with these values set: model.device cpu, model.num_workers 0, data.batch_size,
data.data_dir and data.category, model.DA_fine_tune 1 with model.DA_epochs 0 (no domain adaptation and no
checkpoint to load; dynad runs without adaptation too), model.checkpoint_dir in a temporary folder (it pickles
the kNN there).

Times are per image and per stage: kNN (features + neighbours + bin), encode, denoise, decode, features + maps.
Each is taken in CPU seconds of this process (on one thread that is the work itself, little changed by other
jobs on the machine) and in wall seconds. Results: benchmarks/results/vs_reference_<device>_batch<B>.json and
.md, rewritten after each run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import os
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from dynad import synthetic
from dynad.autoencoder import LatentCodec
from dynad.config import apply_overrides, load_preset
from dynad.data import ImageDataset, make_index
from dynad.denoiser import build_unet, count_parameters
from dynad.dic import DynamicConditioning
from dynad.features import build_extractor
from dynad.pipeline import DynAD
from dynad.provenance import device_description, environment, write_json, write_text
from dynad.reconstruction import reconstruct

HERE = Path(__file__).resolve().parent
STAGES = ("knn", "encode", "denoise", "decode", "maps")
SIZE = 256
# sd-vae-ft-mse's architecture (its config.json), with random weights.
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32,
              sample_size=SIZE, act_fn="silu", in_channels=3, out_channels=3)  # fmt: skip
# dynad variants, each adding one change to the one before: (overrides of the `mvtec` preset, denoise each T_hat
# group on its own, grad mode). "before" is dynad as it was before this benchmark (commit 8501e6a);
# "channels_last" is float32 now; "inference_mode" was measured and not kept (docs/speed.md); "cpu_bf16" is the
# `mvtec` preset as it is (inference.cpu_bf16: auto, bf16 on a CPU with native bf16, as on a GPU).
FLOAT32 = "inference.cpu_bf16=false"
VARIANTS = {
    "before": ([FLOAT32, "inference.channels_last=false"], True, torch.no_grad),
    "one_call_per_step": ([FLOAT32, "inference.channels_last=false"], False, torch.no_grad),
    "inference_mode": ([FLOAT32, "inference.channels_last=false"], False, torch.inference_mode),
    "channels_last": ([FLOAT32], False, torch.no_grad),
    "cpu_bf16": ([], False, torch.no_grad),
}


class Clock:
    """CPU and wall seconds per stage; nested calls of a stage count once."""

    def __init__(self):
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.active: str | None = None

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.active is not None:  # inside another timed stage: already counted there
            yield
            return
        self.active = stage
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[stage] += time.process_time() - c0
            self.wall[stage] += time.perf_counter() - w0
            self.active = None

    def timed(self, stage: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self(stage):
                return fn(*args, **kwargs)

        return wrapper


def make_data(out: Path, n_test: int) -> Path:
    """64 training and n_test test images of the synthetic board at 256 px (normal and 4 defect types)."""
    per_defect = max(1, n_test // 5)
    cfg = synthetic.SynthConfig(image_size=SIZE, n_train=64, n_test_good=n_test - 4 * per_defect,
                                n_test_per_defect=per_defect, categories=("board",))  # fmt: skip
    return synthetic.ensure(out / f"synthetic-{n_test}", cfg, progress=False)


def shared_models(seed: int) -> tuple[AutoencoderKL, dict[str, torch.Tensor]]:
    """The VAE and ResNet-34 weights that both implementations use."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**SD_VAE).eval()
    resnet = build_extractor(load_preset("mvtec", ["features.weights=random"]).features).backbone
    return vae, resnet.state_dict()


# ---------------------------------------------------------------------------------------------------------------
# The official pipeline.


def run_official(code: Path, root: Path, batch: int, vae: AutoencoderKL, resnet_state: dict, seed: int) -> dict:
    """Run the official `test.validate` on root/board; per-stage seconds of its test loop."""
    code = code.resolve()
    _forget_modules(code)  # a fresh import per run, so no patch wraps the previous run's
    sys.modules.pop("test", None)  # the standard library's regression-test package has the same name
    sys.path.insert(0, str(code))
    sys.modules["consistencydecoder"] = types.ModuleType("consistencydecoder")  # patch 1
    sys.modules["consistencydecoder"].ConsistencyDecoder = None
    stub = types.ModuleType("metrics")  # patch 4
    stub.metric = lambda *args, **kwargs: 0.0
    sys.modules["metrics"] = stub
    from omegaconf import OmegaConf

    official_main = importlib.import_module("main")
    test = importlib.import_module("test")
    clock = Clock()
    loop = {}

    vae = copy.deepcopy(vae)
    vae.encode = clock.timed("encode", vae.encode)  # patch 5
    vae.decode = clock.timed("decode", vae.decode)
    test.AutoencoderKL = types.SimpleNamespace(from_pretrained=lambda *a, **k: vae)  # patch 2
    official_resnet34 = test.resnet34

    def resnet34(pretrained=False, **kwargs):  # patch 3
        model, bn = official_resnet34(pretrained=False, **kwargs)
        model.load_state_dict(resnet_state)
        return model, bn

    test.resnet34 = resnet34

    class TimedExtractor(torch.nn.Module):  # patch 5: inside a map function it counts there, else as kNN
        def __init__(self, fe):
            super().__init__()
            self.fe = fe

        def forward(self, x):
            if "start" not in loop:
                return self.fe(x)  # the training images' kNN bank, before the timed loop
            with clock("knn"):
                return self.fe(x)

    domain_adaptation = test.Domain_adaptation
    test.Domain_adaptation = lambda *a, **k: TimedExtractor(domain_adaptation(*a, **k))
    knn_fit, knn_transform = test.KNN.fit, test.KNN.transform

    def fit(self, X):
        knn_fit(self, X)
        loop["start"] = (time.process_time(), time.perf_counter())

    test.KNN.fit = fit
    test.KNN.transform = clock.timed("knn", knn_transform)
    test.my_generalized_steps = clock.timed("denoise", test.my_generalized_steps)
    for name in ("color_distance", "feature_distance_new", "recon_heat_map", "feature_heat_map"):
        setattr(test, name, clock.timed("maps", getattr(test, name)))

    def metric(*args, **kwargs):
        loop["end"] = (time.process_time(), time.perf_counter())
        return 0.0

    test.metric = metric
    test.visualize = lambda *args, **kwargs: None

    config = OmegaConf.load(code / "config.yaml")
    work = Path(tempfile.mkdtemp(prefix="dynad-official-"))
    (work / "checkpoints" / "board").mkdir(parents=True)
    for key, value in {"model.device": "cpu", "model.num_workers": 0, "data.batch_size": batch,
                       "data.data_dir": str(root), "data.category": "board", "data.name": "MVTec",
                       "model.DA_fine_tune": 1, "model.DA_epochs": 0, "model.checkpoint_dir": "checkpoints"}.items():  # fmt: skip
        OmegaConf.update(config, key, value)
    torch.manual_seed(seed)
    unet = official_main.build_model(config).eval()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        test.validate(unet, official_main.constant(config), config)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(code))
        _forget_modules(code)
    n = len(list((root / "board" / "test").glob("*/*.png")))
    return summary("official", count_parameters(unet), batch, n, clock,
                   loop["end"][0] - loop["start"][0], loop["end"][1] - loop["start"][1])  # fmt: skip


def _forget_modules(code: Path) -> None:
    for name, module in list(sys.modules.items()):
        if name in ("metrics", "consistencydecoder") or Path(getattr(module, "__file__", None) or "/").parent == code:
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------------------------
# dynad.


def grouped_reconstruct(unet, schedule, z0, t_hat, cfg, generator=None, drop_first_noise=False):
    """dynad before one UNet call per step: each T_hat group denoised on its own."""
    t_hat = np.asarray(t_hat, dtype=int)
    out = torch.empty_like(z0)
    for value in np.unique(t_hat):
        idx = np.flatnonzero(t_hat == value)
        out[idx] = reconstruct(unet, schedule, z0[idx], t_hat[idx], cfg, generator, drop_first_noise)
    return out


def dynad_parts(vae: AutoencoderKL, resnet_state: dict, root: Path, seed: int, device: torch.device):
    """(config, codec, UNet, extractor, fitted DIC, test images) of the `mvtec` preset with the shared weights."""
    cfg = load_preset("mvtec", ["features.weights=random", "adaptation.epochs=0", f"device={device}"])
    codec = LatentCodec(vae, cfg.autoencoder.scaling_factor, cfg.autoencoder.posterior)
    torch.manual_seed(seed)
    unet = build_unet(cfg.denoiser, SIZE // codec.downsampling, codec.latent_channels)
    extractor = build_extractor(cfg.features)
    extractor.backbone.load_state_dict(resnet_state)
    index = make_index("folder", root, "board")
    load = lambda split: torch.stack([d["image"] for d in ImageDataset(index[index.split == split], SIZE)])  # noqa: E731
    pipe = DynAD(cfg, codec, unet, extractor, DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps), device)
    pipe.dic.fit(pipe.knn_descriptors(load("train")))
    test = load("test")
    return cfg, codec, unet, extractor, pipe.dic, test, pipe.dic.t_hat(pipe.knn_descriptors(test))[2]


def run_dynad(parts, variant: str, batch: int, device: torch.device) -> dict:
    cfg, codec, unet, extractor, dic, images, _ = parts
    overrides, grouped, grad_mode = VARIANTS[variant]
    pipe = DynAD(apply_overrides(cfg, overrides), codec, unet, extractor, dic, device)
    clock = Clock()
    decoded = [False]

    def decode(z, clamp=True):
        out = codec.decode(z, clamp=clamp)
        decoded[0] = True
        return out

    def features(x):  # before the decoder: the kNN's features; after it: the reconstruction's, for the map
        with clock("maps" if decoded[0] else "knn"):
            return extractor(x)

    pipe.codec = types.SimpleNamespace(encode=clock.timed("encode", codec.encode), decode=clock.timed("decode", decode))
    pipe.extractor = features
    module = sys.modules[DynAD.__module__]
    module.reconstruct = clock.timed("denoise", grouped_reconstruct if grouped else reconstruct)
    infer = functools.partial(DynAD.infer.__wrapped__, pipe)  # without its no_grad: run under grad_mode
    gen = torch.Generator().manual_seed(cfg.seed)
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        for i in range(0, images.shape[0], batch):
            decoded[0] = False
            with grad_mode():
                infer(images[i : i + batch], generator=gen)
    finally:
        module.reconstruct = reconstruct
    return summary(f"dynad ({variant})", count_parameters(unet), batch, images.shape[0], clock,
                   time.process_time() - c0, time.perf_counter() - w0)  # fmt: skip


def summary(name: str, params: int, batch: int, n: int, clock: Clock, cpu: float, wall: float) -> dict:
    return {
        "implementation": name,
        "unet_parameters": params,
        "batch": batch,
        "images": n,
        "cpu_s_per_image": cpu / n,
        "wall_s_per_image": wall / n,
        "cpu_s_per_image_by_stage": {s: clock.cpu[s] / n for s in STAGES},
        "wall_s_per_image_by_stage": {s: clock.wall[s] / n for s in STAGES},
        "load_average": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------------------------------------------------


def table(runs: list[dict], clock: str) -> str:
    """Markdown: one row per run, per-image seconds by stage, and images per second relative to the official code."""
    official = {r["batch"]: r[f"{clock}_s_per_image"] for r in runs if r["implementation"] == "official"}
    head = "| implementation | UNet params | batch | s/image | images/s | vs official | " + " | ".join(STAGES) + " |"
    lines = [head, "|" + "---|" * (6 + len(STAGES))]
    for r in runs:
        s = r[f"{clock}_s_per_image"]
        ratio = f"{official[r['batch']] / s:.2f}x" if r["batch"] in official else "–"
        stages = " | ".join(f"{r[f'{clock}_s_per_image_by_stage'][k]:.2f}" for k in STAGES)
        lines.append(f"| {r['implementation']} | {r['unet_parameters'] / 1e6:.1f} M | {r['batch']} | {s:.2f} | "
                     f"{1 / s:.3f} | {ratio} | {stages} |")  # fmt: skip
    return "\n".join(lines)


def write(out: Path, result: dict, n_images: int) -> None:
    """The JSON and the Markdown tables, rewritten after each run so that an interrupted benchmark keeps its rows."""
    batches = "-".join(str(b) for b in dict.fromkeys(r["batch"] for r in result["runs"]))
    name = f"vs_reference_{result['device'].split()[0]}_batch{batches}"
    runs = result["runs"]
    print(runs[-1], flush=True)
    write_json(out / f"{name}.json", result)
    md = (f"{result['device']}, torch {result['versions']['torch']}, {n_images} test images.\n\n"
          f"CPU seconds per image (this process; on one thread, the work itself):\n\n{table(runs, 'cpu')}\n\n"
          f"Wall seconds per image:\n\n{table(runs, 'wall')}\n")  # fmt: skip
    write_text(out / f"{name}.md", md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-code", type=Path, help="a checkout of github.com/JustinTebbe/Dynamic-noise-AD")
    p.add_argument("--batch", type=int, nargs="+", default=[16])
    p.add_argument("--images", type=int, default=16, help="test images (default: %(default)s)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "dynad-bench-vs-reference")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if args.reference_code is not None and not (args.reference_code / "test.py").is_file():
        p.error(f"--reference-code {args.reference_code}: no test.py there (give a checkout of Dynamic-noise-AD)")
    if args.device != "cpu" and args.reference_code is not None:
        p.error("the official code is patched for the CPU only here; run it with --device cpu")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = make_data(args.data, args.images)
    vae, resnet_state = shared_models(seed=0)
    runs: list[dict] = []
    result = {
        "device": device_description(device),
        "torch_threads": torch.get_num_threads(),
        "reference_code": None if args.reference_code is None else str(args.reference_code.resolve()),
        **environment(),
        "runs": runs,
    }
    # The official runs first, then dynad's (built only then: both sets of models at once need more memory).
    for _ in range(args.repeats):
        for batch in args.batch if args.reference_code is not None else []:
            runs.append(run_official(args.reference_code, root, batch, vae, resnet_state, seed=0))
            write(args.out, result, args.images)
    parts = dynad_parts(vae, resnet_state, root, seed=0, device=device)
    result["dynad_t_hat_of_the_test_images"] = [int(v) for v in parts[6]]
    for _ in range(args.repeats):
        for batch in args.batch:
            for variant in args.variants:
                runs.append(run_dynad(parts, variant, batch, device))
                write(args.out, result, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
