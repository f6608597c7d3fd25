"""The whole method as one object: fit on normal images, then score images (Algorithms 1 and 2, Eq. 9).

    pipe = DynAD.fit(cfg, train_images, models_dir)      # trains or reuses: autoencoder, denoiser, adaptation, kNN
    out  = pipe.infer(images)                           # knn_distance, bin, t_hat, reconstruction, raw maps
    amap = pipe.anomaly_maps(out["latent_map"], out["feature_map"], normalization)

Every ablation is a config option of this one path: `dic.fixed_t_hat`, `reconstruction.start`,
`adaptation.epochs = 0`, `reconstruction.space = "pixel"`, `reconstruction.sampler_start`, ...
Each trained component is stored in `models_dir` under a name that hashes everything it depends on, so runs
that differ only downstream (most ablations) reuse it, and an interrupted run resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dynad import anomaly_map as am
from dynad import distributed
from dynad.autoencoder import (
    LatentCodec, autoencoder_from_architecture, build_small_vae, load_pretrained_vae, set_latent_scale, vae_loss,
)  # fmt: skip
from dynad.checks import check_buildable, check_config
from dynad.config import ConfigError, ExperimentConfig, apply_overrides
from dynad.data import aspect_outside, aspect_warning, to_rgb
from dynad.denoiser import build_unet, count_parameters, denoiser_checkpoint, epsilon_loss, load_unet_weights
from dynad.dic import DynamicConditioning
from dynad.domain_adaptation import make_loss
from dynad.features import FeatureExtractor, build_extractor, knn_features
from dynad.progress import tqdm
from dynad.provenance import resolve_device, save_torch, seed_everything, set_threads
from dynad.reconstruction import reconstruct
from dynad.schedule import NoiseSchedule
from dynad.training import load_checkpoint, train


def _key(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _batches(x: torch.Tensor, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


class _StageClock:
    """Context manager factory adding each stage's wall time to a dict (synchronising CUDA first)."""

    def __init__(self, device: torch.device, timings: dict[str, float] | None):
        self.device, self.timings = device, timings

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if self.timings is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


class DynAD:
    def __init__(
        self,
        cfg: ExperimentConfig,
        codec: LatentCodec,
        unet: torch.nn.Module,
        extractor: FeatureExtractor,
        dic: DynamicConditioning,
        device: torch.device,
        provenance: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        self.codec = codec.to(device).eval()
        self.unet = unet.to(device).eval()
        self.extractor = extractor.to(device).eval()
        self.dic = dic
        self.device = device
        self.schedule = NoiseSchedule(cfg.denoiser.num_train_timesteps, cfg.denoiser.beta_start, cfg.denoiser.beta_end)
        self.provenance = provenance or {}  # weights, parameter counts, training losses, stage seconds
        self.train_normalization: am.MapNormalization | None = None
        self.train_scores: np.ndarray | None = None  # image scores of the normalization's training images
        # NHWC weights make the UNet's and the encoder's convolutions run NHWC (measured faster on the CPU); the
        # decoder measured slower so, and `infer` hands it a contiguous latent. Modules shared with another DynAD
        # (`with_overrides`) take the format of the last one built, which changes the speed only.
        fmt = torch.channels_last if cfg.inference.channels_last else torch.contiguous_format
        self.unet.to(memory_format=fmt)
        if self.codec.vae is not None:
            self.codec.vae.encoder.to(memory_format=fmt)
        if device.type == "cpu" and cfg.inference.cpu_bf16 is True and not distributed.cpu_has_bf16():
            raise ConfigError("inference.cpu_bf16=true needs a CPU with native bf16 (avx512_bf16 or AMX); this one has "
                              "none (\"auto\" falls back to float32)")  # fmt: skip

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 for inference: on CUDA when mixed_precision, on the CPU by inference.cpu_bf16."""
        return distributed.autocast(self.device, distributed.inference_precision(self.cfg, self.device))

    # ----------------------------------------------------------------------------------------------------------
    # Fitting: each stage trains what is missing and reuses what is stored.

    @classmethod
    def fit(
        cls,
        cfg: ExperimentConfig,
        train_images: torch.Tensor,
        models_dir: str | Path,
        data_id: dict[str, Any],
        progress: bool = True,
    ) -> "DynAD":
        """Build the pipeline from normal training images (N, 3, S, S) in [-1, 1].

        `data_id` names the data (dataset, category, fingerprint of the training files) so that stored models are
        reused only for the same data.
        """
        check_config(cfg, n_train=train_images.shape[0])
        check_buildable(cfg, autoencoder=False)  # the UNet and the extractor are built after training
        models_dir = Path(models_dir)
        # accelerate picks this process's device (cuda:<local rank> under `accelerate launch`).
        run = {"device": cfg.device, "mixed_precision": distributed.precision(cfg),
               "accumulation_steps": cfg.gradient_accumulation_steps}  # fmt: skip
        device = distributed.accelerator(cfg.device, run["mixed_precision"]).device
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        prov: dict[str, Any] = {"seconds": {}, "weights": {}, "losses": {}}
        size = cfg.data.image_size

        # 1. Autoencoder (pixel-space ablation: the identity).
        t0 = time.perf_counter()
        # The posterior (mean or sample) is read after the VAE is trained: it keys the denoiser, not the VAE.
        ae_cfg = {k: v for k, v in asdict(cfg.autoencoder).items() if k != "posterior"}
        ae_key = {"data": data_id, "image_size": size, "autoencoder": ae_cfg, "seed": cfg.seed,
                  "threads": cfg.threads}  # a model trained on 2 threads differs from one trained on 1
        if cfg.gradient_accumulation_steps > 1:  # absent at 1, so models trained before the option keep their names
            ae_key["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
        den_key = {"autoencoder": ae_key, "posterior": cfg.autoencoder.posterior, "space": cfg.reconstruction.space,
                   "denoiser": asdict(cfg.denoiser)}  # fmt: skip
        den_path = models_dir / f"denoiser-{_key(den_key)}.pt"
        if cfg.denoiser.init_from and not den_path.is_file():  # missing: said now, not once the autoencoder is trained
            denoiser_checkpoint(cfg.denoiser.init_from)
        if cfg.reconstruction.space == "pixel":
            codec = LatentCodec(None)
            prov["weights"]["autoencoder"] = "none (pixel space)"
        elif cfg.autoencoder.source == "train":
            vae = build_small_vae(cfg.autoencoder, size)
            path = models_dir / f"autoencoder-{_key(ae_key)}.pt"
            prov["losses"]["autoencoder"] = train(
                vae, train_images, vae_loss(cfg.autoencoder), epochs=cfg.autoencoder.epochs,
                batch_size=cfg.autoencoder.batch_size, lr=cfg.autoencoder.lr, ckpt_path=path, config=ae_key,
                checkpoint_every=max(1, cfg.autoencoder.epochs // 4), seed=cfg.seed, desc="autoencoder",
                progress=progress, **run,
            )  # fmt: skip
            prov["weights"]["autoencoder"] = f"trained from scratch on the category ({path.name})"
        else:
            vae = load_pretrained_vae(cfg.autoencoder.source)
            prov["weights"]["autoencoder"] = f"pretrained: {cfg.autoencoder.source}"

        # 2. Denoiser on precomputed latent moments (encoded once: a measured scale rescales them).
        if cfg.reconstruction.space != "pixel":
            vae = vae.to(device).eval()
            codec = LatentCodec(vae, 1.0, cfg.autoencoder.posterior)
        codec = codec.to(device).eval()
        if size % codec.downsampling:
            raise ConfigError(f"data.image_size = {size}: must be divisible by the downsampling factor "
                              f"{codec.downsampling} of the autoencoder {cfg.autoencoder.source}")  # fmt: skip
        with torch.no_grad():
            moments = torch.cat(
                [torch.cat(codec.posterior_moments(b.to(device)), dim=1).cpu() for b in _batches(train_images, 16)]
            )  # (N, 2C, h, w): mean and std stacked, unscaled
        if cfg.reconstruction.space != "pixel":
            s = set_latent_scale(codec, moments, cfg.autoencoder.scaling_factor)
            if cfg.autoencoder.scaling_factor is None:
                prov["weights"]["autoencoder"] += f", latent scale {s:.4f} measured on the training latents"
            prov["latent_scaling_factor"] = s
            moments = moments * s
        prov["seconds"]["train_autoencoder"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        unet = build_unet(cfg.denoiser, size // codec.downsampling, codec.latent_channels)
        d = cfg.denoiser
        epochs, lr = d.epochs, d.lr
        if d.init_from:
            if not den_path.is_file():  # a resumed fine-tuning continues from its own checkpoint instead
                load_unet_weights(unet, d.init_from)
            epochs, lr = d.finetune_epochs, d.finetune_lr
        schedule = NoiseSchedule(d.num_train_timesteps, d.beta_start, d.beta_end)
        prov["losses"]["denoiser"] = train(
            unet, moments, epsilon_loss(schedule, cfg.autoencoder.posterior == "sample", d.max_train_timestep),
            epochs=epochs, batch_size=d.batch_size, lr=lr, weight_decay=d.weight_decay, ckpt_path=den_path,
            config=den_key, checkpoint_every=d.checkpoint_every, seed=cfg.seed, desc="denoiser", progress=progress,
            ema_decay=d.ema_decay, **run,
        )  # fmt: skip
        how = f"fine-tuned from {d.init_from}" if d.init_from else "trained from scratch"
        prov["weights"]["denoiser"] = f"{how} ({den_path.name})"
        prov["denoiser_parameters"] = count_parameters(unet)
        prov["seconds"]["train_denoiser"] = time.perf_counter() - t0

        # 3. Feature extractor, adapted to the domain (Eq. 10) unless adaptation.epochs == 0.
        t0 = time.perf_counter()
        extractor = build_extractor(cfg.features).to(device)
        prov["weights"]["feature_extractor"] = extractor.weights_label
        pipe = cls(cfg, codec, unet, extractor, DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps), device)
        if cfg.adaptation.epochs > 0:
            rec = cfg.reconstruction
            da_key = {
                "denoiser": den_key, "features": asdict(cfg.features), "adaptation": asdict(cfg.adaptation),
                "t_max": cfg.dic.t_max, "reconstruction": [rec.num_steps, rec.eta, rec.start, rec.sampler_start,
                                                           rec.drop_first_noise, rec.clamp_decoded],
            }  # fmt: skip
            path = models_dir / f"extractor-{_key(da_key)}.pt"
            a = cfg.adaptation
            prov["losses"]["adaptation"] = train(
                extractor, train_images, make_loss(pipe, a, cfg.dic, cfg.reconstruction, cfg.features.layers),
                epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay, ckpt_path=path,
                config=da_key, checkpoint_every=1, seed=cfg.seed, desc="adaptation", progress=progress,
                find_unused_parameters=True, **run,  # the extractor stops after its last used block
            )  # fmt: skip
            n_epochs = f"{a.epochs} epoch" + "s" * (a.epochs != 1)
            prov["weights"]["feature_extractor"] += f", domain-adapted {n_epochs} ({path.name})"
        extractor.eval()
        prov["seconds"]["adaptation"] = time.perf_counter() - t0

        # 4. DIC: kNN over the training images' pooled layer-2 features.
        t0 = time.perf_counter()
        pipe.dic.fit(pipe.knn_descriptors(train_images))
        prov["seconds"]["fit_knn"] = time.perf_counter() - t0
        pipe.provenance = prov
        # Always: training statistics let one new image (validation, `dynad predict`) be scored alone.
        pipe.fit_train_normalization(train_images)
        return pipe

    @torch.no_grad()
    def knn_descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) pooled layer-2 features, computed in batches (float32, as in `infer`)."""
        out = []
        for b in _batches(images, self.cfg.data.batch_size):
            out.append(knn_features(self.extractor(b.to(self.device)), self.cfg.features).float().cpu())
        return torch.cat(out)

    def fit_train_normalization(self, train_images: torch.Tensor) -> None:
        """(min, max) of the raw maps of some training images: lets one image be scored without a test set.

        Also keeps those images' scores under these statistics (`train_scores`): `dynad predict`'s fallback
        threshold is a quantile of them.
        """
        n = min(self.cfg.anomaly_map.num_train_maps, train_images.shape[0])
        idx = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(self.cfg.seed))[:n]
        out = self.infer_all(train_images[idx], progress=False)
        self.train_normalization = am.MapNormalization.from_maps(out["latent_map"], out["feature_map"])
        maps = self.anomaly_maps(out["latent_map"], out["feature_map"], self.train_normalization)
        self.train_scores = am.image_scores(maps).numpy()  # (n,)

    # ----------------------------------------------------------------------------------------------------------
    # Inference.

    @torch.no_grad()
    def infer(
        self,
        x: torch.Tensor,
        t_hat: int | None = None,
        generator: torch.Generator | None = None,
        timings: dict[str, float] | None = None,
        keep_latents: bool = False,
    ) -> dict:
        """One batch x (B, 3, S, S) in [-1, 1] -> per-image DIC values, reconstruction and raw maps (on the CPU).

        `t_hat` overrides DIC for every image (the explorer's slider and the fixed-step ablation). `timings`, when
        given, accumulates the seconds of each stage (encode, knn, denoise, decode, maps) for the benchmark.
        `keep_latents` adds z0 and z0_hat (B, C, h, w), the latent map's inputs, for diagnoses.
        """
        clock = _StageClock(self.device, timings)
        x = x.to(self.device)
        size = x.shape[-1]
        rec, align = self.cfg.reconstruction, self.cfg.anomaly_map.align_corners
        # The reference code's first-step quirk belongs to its fixed-step sampler (Table 4), not to the DIC one.
        drop_first_noise = rec.drop_first_noise and self.cfg.dic.fixed_t_hat is not None
        # The extractor runs in float32 even under bf16: a bf16 kNN distance can move an image to another bin
        # (measured on the tiny preset), and its two passes cost ~2 % of the time.
        with clock("knn"):
            feats = self.extractor(x)
            y, b, t = self.dic.t_hat(knn_features(feats, self.cfg.features).float().cpu())
        if t_hat is not None:
            t = np.full_like(t, t_hat)
        with self._autocast():
            with clock("encode"):
                z0 = self.codec.encode(x, generator).float()
            with clock("denoise"):
                z0_hat = reconstruct(self.unet, self.schedule, z0, t, rec, generator, drop_first_noise)
            with clock("decode"):
                x_hat = self.codec.decode(z0_hat.contiguous(), clamp=rec.clamp_decoded).float()
        with clock("maps"):
            feats_hat = self.extractor(x_hat)
            lat = am.latent_map(z0, z0_hat, size, align).cpu()
            feat = am.feature_map(feats, feats_hat, self.cfg.features.map_layers, size, align).cpu()
        out = {"knn_distance": y, "bin": b, "t_hat": t, "reconstruction": x_hat.cpu(), "latent_map": lat,
               "feature_map": feat}
        if keep_latents:
            out["z0"], out["z0_hat"] = z0.cpu(), z0_hat.cpu()
        return out

    def infer_all(self, images: torch.Tensor, progress: bool = True, keep_reconstructions: bool = False) -> dict:
        """`infer` over (N, 3, S, S) in batches; arrays concatenated.

        Under `accelerate launch` each process takes a contiguous share of the images and every process gets all
        the results back, in order (a noised start then draws per process, so its maps depend on the process count).
        """
        gen = torch.Generator().manual_seed(self.cfg.seed)
        parts = []
        batches = list(_batches(images[distributed.shard(images.shape[0])], self.cfg.data.batch_size))
        main = distributed.state().is_main_process
        for batch in tqdm(batches, desc="inference", disable=not (progress and main), leave=False):
            out = self.infer(batch, generator=gen)
            if not keep_reconstructions:
                out.pop("reconstruction")
            parts.append(out)
        parts = [p for shard in distributed.gather(parts) for p in shard]  # process order = image order
        return {
            k: (np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
                else torch.cat([p[k] for p in parts]))
            for k in parts[0]
        }

    def anomaly_maps(
        self, latent: torch.Tensor, feature: torch.Tensor, normalization: am.MapNormalization | None = None
    ) -> torch.Tensor:
        """Raw maps (N, S, S) x 2 -> A (N, S, S); normalisation over these maps unless given."""
        norm = normalization or am.MapNormalization.from_maps(latent, feature)
        return am.combine(latent, feature, norm, self.cfg.anomaly_map)

    def evaluation_maps(self, latent: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """A of an evaluated image set, normalised as `anomaly_map.normalization` says (Eq. 9): over these maps
        (`test_set`, the paper) or with the training statistics (`train`)."""
        norm = self.train_normalization if self.cfg.anomaly_map.normalization == "train" else None
        return self.anomaly_maps(latent, feature, norm)

    def score(self, x: torch.Tensor | np.ndarray | Image.Image) -> dict:
        """Score images alone (no test set): maps normalised with the training statistics.

        `x` is (B, C, H, W), (C, H, W) or (H, W), C 1 or 3, float in [-1, 1] or uint8 in [0, 255], or a PIL image
        (see `prepare_input`). Images of another size are resized to the training size, and the maps and the
        reconstruction are returned at the input's (H, W); `pred_score` is the maximum of the map at the training
        size, so that it compares with the training statistics. An input whose width / height lies outside the
        training images' is warned about (a UserWarning): squeezed to S x S otherwise, it scores higher for that alone.
        """
        if self.train_normalization is None:
            raise RuntimeError("score() needs anomaly_map.normalization='train' (or call fit_train_normalization)")
        x, (h, w) = self.prepare_input(x)
        training = self.provenance.get("data", {}).get("train_aspect_ratio")  # absent in pipelines before 2026-12-07
        size = self.cfg.data.image_size
        if training and (h, w) != (size, size) and aspect_outside((w, h), training):  # an S x S input: as trained
            warnings.warn(aspect_warning(len(x), len(x), "images given to score()", training, "each", (w, h), size),
                          stacklevel=2)  # fmt: skip
        out = self.infer(x)
        out["anomaly_map"] = self.anomaly_maps(out["latent_map"], out["feature_map"], self.train_normalization)
        out["pred_score"] = am.image_scores(out["anomaly_map"])
        if (h, w) != tuple(x.shape[-2:]):
            for k in ("anomaly_map", "latent_map", "feature_map"):  # (B, S, S) -> (B, H, W)
                out[k] = F.interpolate(out[k][:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            out["reconstruction"] = F.interpolate(out["reconstruction"], size=(h, w), mode="bilinear",
                                                  align_corners=False)  # fmt: skip
        return out

    def prepare_input(self, x: torch.Tensor | np.ndarray | Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """What a user passes -> ((B, 3, S, S) float32 in [-1, 1] at the training size S, the input's (H, W)).

        Converts: a PIL image (as its file would load); (H, W) and (C, H, W) to a batch of one; channels last,
        (H, W, C) or (B, H, W, C), where the leading dimension cannot be the channels (not 1 or 3); one channel to
        three, uint8 [0, 255] to [-1, 1], float16/64 to float32, another size to S x S (bilinear). Raises ValueError
        for anything else: other channel counts or dtypes, non-finite values, float values outside [-1, 1] (an image
        still in [0, 1] or [0, 255]).
        """
        if isinstance(x, Image.Image):
            x = np.asarray(to_rgb(x)).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        if isinstance(x, np.ndarray):
            x = torch.tensor(x)  # a copy: np.asarray(PIL image) is read-only, which torch.from_numpy warns about
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"score() expects a torch.Tensor, numpy array or PIL image, got {type(x).__name__}")
        shape = tuple(x.shape)
        if x.ndim in (3, 4) and x.shape[-1] in (1, 3) and x.shape[-3] not in (1, 3):
            x = x.movedim(-1, -3)  # channels last -> (..., C, H, W)
        if x.ndim == 2:
            x = x[None, None]  # (H, W) -> (1, 1, H, W)
        elif x.ndim == 3:
            x = x[None]  # (C, H, W) -> (1, C, H, W)
        if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3) or min(x.shape[-2:]) < 2:
            raise ValueError(f"score() expects images of shape (B, C, H, W), (C, H, W) or (H, W) with C 1 or 3 "
                             f"(or channels last), got shape {shape}")  # fmt: skip
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1
        elif not x.is_floating_point():
            raise ValueError(f"score() expects float images in [-1, 1] or uint8 images in [0, 255], "
                             f"got dtype {x.dtype}")  # fmt: skip
        x = x.float()
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"score() got {bad} non-finite values (nan or inf) in an input of shape {shape}")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"score() expects float images in [-1, 1] (x / 127.5 - 1 for 8-bit values), got values "
                             f"in [{lo:g}, {hi:g}]; pass uint8 images to have them scaled")  # fmt: skip
        x = x.clamp(-1, 1).expand(-1, 3, -1, -1)  # (B, 3, H, W); one channel repeated, as greyscale files load
        h, w = x.shape[-2:]
        size = self.cfg.data.image_size
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous(), (h, w)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> "DynAD":
        """The same fitted models under another inference setting (e.g. {"reconstruction.start": "noise"}).

        Only settings read at inference time make sense here (reconstruction, dic, anomaly_map, the encoder's
        posterior mean or sample); the kNN is refitted from the stored training features so that DIC options take
        effect. Training-time settings (adaptation, the denoiser's training latents) need their own fit.
        """
        cfg = check_config(apply_overrides(self.cfg, overrides), n_train=len(self.dic.train_features))
        dic = DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps).fit(self.dic.train_features)
        codec = self.codec
        if codec.posterior != cfg.autoencoder.posterior:
            codec = copy.copy(codec)  # shares the VAE's weights
            codec.posterior = cfg.autoencoder.posterior
        other = DynAD(cfg, codec, self.unet, self.extractor, dic, self.device, self.provenance)
        other.train_normalization = self.train_normalization
        other.train_scores = self.train_scores
        return other

    # ----------------------------------------------------------------------------------------------------------
    # Saving the fitted pipeline (models + kNN statistics) so that one new image can be scored alone.

    def save(self, path: str | Path) -> None:
        save_torch(
            path,
            {
                "config": self.cfg.to_dict(),
                # The architectures travel with the weights, so loading needs neither sd-vae-ft-mse nor the
                # backbone's ImageNet file.
                "vae_config": self.codec.architecture(),
                "latent_scaling_factor": self.codec.scaling_factor,
                "extractor_label": self.extractor.weights_label,
                "codec": self.codec.state_dict(),
                "unet": self.unet.state_dict(),
                "extractor": self.extractor.state_dict(),
                "dic": self.dic.state_dict(),
                "train_normalization": None if self.train_normalization is None else asdict(self.train_normalization),
                "train_scores": None if self.train_scores is None else self.train_scores.tolist(),
                "provenance": self.provenance,
            },
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "DynAD":
        """A fitted pipeline from its `pipeline.pt`, or from the run folder that holds it (as `dynad predict`)."""
        from dynad.config import from_dict
        from dynad.predict import find_pipeline  # predict imports this module

        state = load_checkpoint(find_pipeline(path) if Path(path).is_dir() else path)
        cfg = from_dict(ExperimentConfig, state["config"])
        dev = resolve_device(device or cfg.device)
        if cfg.reconstruction.space == "pixel":
            vae = None
        elif state.get("vae_config"):
            vae = autoencoder_from_architecture(state["vae_config"])
        elif cfg.autoencoder.source == "train":  # older checkpoints hold no architecture: rebuild it from the config
            vae = build_small_vae(cfg.autoencoder, cfg.data.image_size)
        else:
            vae = load_pretrained_vae(cfg.autoencoder.source)
        scale = state.get("latent_scaling_factor", cfg.autoencoder.scaling_factor)
        codec = LatentCodec(vae, scale, cfg.autoencoder.posterior)
        codec.load_state_dict(state["codec"])
        unet = build_unet(cfg.denoiser, cfg.data.image_size // codec.downsampling, codec.latent_channels)
        unet.load_state_dict(state["unet"])
        extractor = build_extractor(cfg.features, weights_label=state.get("extractor_label"))
        extractor.load_state_dict(state["extractor"])
        dic = DynamicConditioning.from_state_dict(state["dic"], cfg.dic)
        pipe = cls(cfg, codec, unet, extractor, dic, dev, state["provenance"])
        if state["train_normalization"]:
            pipe.train_normalization = am.MapNormalization(**state["train_normalization"])
        if state.get("train_scores") is not None:  # absent in pipelines saved before `dynad predict`
            pipe.train_scores = np.asarray(state["train_scores"], dtype=np.float32)
        return pipe
