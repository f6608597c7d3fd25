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
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL

from dynad import anomaly_map as am
from dynad.autoencoder import LatentCodec, build_small_vae, load_pretrained_vae, vae_loss
from dynad.config import ExperimentConfig, apply_overrides
from dynad.denoiser import build_unet, count_parameters, epsilon_loss, load_unet_weights
from dynad.dic import DynamicConditioning
from dynad.domain_adaptation import make_loss
from dynad.features import FeatureExtractor, build_extractor, knn_features
from dynad.progress import tqdm
from dynad.provenance import resolve_device, save_torch, seed_everything, set_threads
from dynad.reconstruction import reconstruct
from dynad.schedule import NoiseSchedule
from dynad.training import autocast, load_checkpoint, train


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

        `data_id` names the data (dataset, root, category) so that stored models are reused only for the same data.
        """
        models_dir = Path(models_dir)
        device = resolve_device(cfg.device)
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        prov: dict[str, Any] = {"seconds": {}, "weights": {}, "losses": {}}
        size = cfg.data.image_size

        # 1. Autoencoder (pixel-space ablation: the identity).
        t0 = time.perf_counter()
        # The thread count is part of every key: a model trained on 2 threads differs from one trained on 1.
        ae_key = {"data": data_id, "image_size": size, "autoencoder": asdict(cfg.autoencoder), "seed": cfg.seed,
                  "threads": cfg.threads}  # fmt: skip
        if cfg.reconstruction.space == "pixel":
            codec = LatentCodec(None)
            prov["weights"]["autoencoder"] = "none (pixel space)"
        elif cfg.autoencoder.source == "train":
            vae = build_small_vae(cfg.autoencoder, size)
            path = models_dir / f"autoencoder-{_key(ae_key)}.pt"
            prov["losses"]["autoencoder"] = train(
                vae, train_images, vae_loss(cfg.autoencoder), epochs=cfg.autoencoder.epochs,
                batch_size=cfg.autoencoder.batch_size, lr=cfg.autoencoder.lr, ckpt_path=path, config=ae_key,
                checkpoint_every=max(1, cfg.autoencoder.epochs // 4), seed=cfg.seed, device=device,
                mixed_precision=cfg.mixed_precision, desc="autoencoder", progress=progress,
            )  # fmt: skip
            codec = LatentCodec(vae, cfg.autoencoder.scaling_factor, cfg.autoencoder.posterior)
            prov["weights"]["autoencoder"] = f"trained from scratch on the category ({path.name})"
        else:
            vae = load_pretrained_vae(cfg.autoencoder.source)
            codec = LatentCodec(vae, cfg.autoencoder.scaling_factor, cfg.autoencoder.posterior)
            prov["weights"]["autoencoder"] = f"pretrained: {cfg.autoencoder.source}"
        codec = codec.to(device).eval()
        prov["seconds"]["train_autoencoder"] = time.perf_counter() - t0

        # 2. Denoiser on precomputed latent moments.
        t0 = time.perf_counter()
        with torch.no_grad():
            moments = torch.cat(
                [torch.cat(codec.posterior_moments(b.to(device)), dim=1).cpu() for b in _batches(train_images, 16)]
            )  # (N, 2C, h, w): mean and std stacked
        den_key = {"autoencoder": ae_key, "space": cfg.reconstruction.space, "denoiser": asdict(cfg.denoiser)}
        unet = build_unet(cfg.denoiser, size // codec.downsampling, codec.latent_channels)
        d = cfg.denoiser
        epochs, lr = d.epochs, d.lr
        path = models_dir / f"denoiser-{_key(den_key)}.pt"
        if d.init_from:
            if not path.is_file():  # a resumed fine-tuning continues from its own checkpoint instead
                load_unet_weights(unet, d.init_from)
            epochs, lr = d.finetune_epochs, d.finetune_lr
        schedule = NoiseSchedule(d.num_train_timesteps, d.beta_start, d.beta_end)
        prov["losses"]["denoiser"] = train(
            unet, moments, epsilon_loss(schedule, cfg.autoencoder.posterior == "sample"), epochs=epochs,
            batch_size=d.batch_size, lr=lr, weight_decay=d.weight_decay, ckpt_path=path, config=den_key,
            checkpoint_every=d.checkpoint_every, seed=cfg.seed, device=device, mixed_precision=cfg.mixed_precision,
            desc="denoiser", progress=progress,
        )  # fmt: skip
        prov["weights"]["denoiser"] = (
            f"fine-tuned from {d.init_from} ({path.name})" if d.init_from else f"trained from scratch ({path.name})"
        )
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
                "t_max": cfg.dic.t_max, "reconstruction": [rec.num_steps, rec.eta, rec.start, rec.sampler_start],
            }  # fmt: skip
            path = models_dir / f"extractor-{_key(da_key)}.pt"
            a = cfg.adaptation
            prov["losses"]["adaptation"] = train(
                extractor, train_images, make_loss(pipe, a, cfg.dic, cfg.reconstruction, cfg.features.layers),
                epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, ckpt_path=path, config=da_key,
                checkpoint_every=1, seed=cfg.seed, device=device, mixed_precision=cfg.mixed_precision,
                desc="adaptation", progress=progress,
            )  # fmt: skip
            prov["weights"]["feature_extractor"] += f", domain-adapted {a.epochs} epochs ({path.name})"
        extractor.eval()
        prov["seconds"]["adaptation"] = time.perf_counter() - t0

        # 4. DIC: kNN over the training images' pooled layer-2 features.
        t0 = time.perf_counter()
        pipe.dic.fit(pipe.knn_descriptors(train_images))
        prov["seconds"]["fit_knn"] = time.perf_counter() - t0
        pipe.provenance = prov
        if cfg.anomaly_map.normalization == "train":
            pipe.fit_train_normalization(train_images)
        return pipe

    @torch.no_grad()
    def knn_descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) pooled layer-2 features, computed in batches."""
        out = []
        for b in _batches(images, self.cfg.data.batch_size):
            with autocast(self.device, self.cfg.mixed_precision):
                out.append(knn_features(self.extractor(b.to(self.device)), self.cfg.features).float().cpu())
        return torch.cat(out)

    def fit_train_normalization(self, train_images: torch.Tensor) -> None:
        """(min, max) of the raw maps of some training images: lets one image be scored without a test set."""
        n = min(self.cfg.anomaly_map.num_train_maps, train_images.shape[0])
        idx = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(self.cfg.seed))[:n]
        out = self.infer_all(train_images[idx], progress=False)
        self.train_normalization = am.MapNormalization.from_maps(out["latent_map"], out["feature_map"])

    # ----------------------------------------------------------------------------------------------------------
    # Inference.

    @torch.no_grad()
    def infer(
        self,
        x: torch.Tensor,
        t_hat: int | None = None,
        generator: torch.Generator | None = None,
        timings: dict[str, float] | None = None,
    ) -> dict:
        """One batch x (B, 3, S, S) in [-1, 1] -> per-image DIC values, reconstruction and raw maps (on the CPU).

        `t_hat` overrides DIC for every image (the explorer's slider and the fixed-step ablation). `timings`, when
        given, accumulates the seconds of each stage (encode, knn, denoise, decode, maps) for the benchmark.
        """
        clock = _StageClock(self.device, timings)
        x = x.to(self.device)
        size = x.shape[-1]
        with autocast(self.device, self.cfg.mixed_precision):
            with clock("knn"):
                feats = self.extractor(x)
                y, b, t = self.dic.t_hat(knn_features(feats, self.cfg.features).float().cpu())
            if t_hat is not None:
                t = np.full_like(t, t_hat)
            with clock("encode"):
                z0 = self.codec.encode(x, generator).float()
            with clock("denoise"):
                z0_hat = reconstruct(self.unet, self.schedule, z0, t, self.cfg.reconstruction, generator)
            with clock("decode"):
                x_hat = self.codec.decode(z0_hat).float()
            with clock("maps"):
                feats_hat = self.extractor(x_hat)
                lat = am.latent_map(z0, z0_hat, size).cpu()
                feat = am.feature_map(feats, feats_hat, self.cfg.features.map_layers, size).cpu()
        return {"knn_distance": y, "bin": b, "t_hat": t, "reconstruction": x_hat.cpu(), "latent_map": lat, "feature_map": feat}

    def infer_all(self, images: torch.Tensor, progress: bool = True, keep_reconstructions: bool = False) -> dict:
        """`infer` over (N, 3, S, S) in batches; arrays concatenated."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        parts = []
        batches = list(_batches(images, self.cfg.data.batch_size))
        for batch in tqdm(batches, desc="inference", disable=not progress, leave=False):
            out = self.infer(batch, generator=gen)
            if not keep_reconstructions:
                out.pop("reconstruction")
            parts.append(out)
        return {
            k: (np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray) else torch.cat([p[k] for p in parts]))
            for k in parts[0]
        }

    def anomaly_maps(
        self, latent: torch.Tensor, feature: torch.Tensor, normalization: am.MapNormalization | None = None
    ) -> torch.Tensor:
        """Raw maps (N, S, S) x 2 -> A (N, S, S); normalisation over these maps unless given."""
        norm = normalization or am.MapNormalization.from_maps(latent, feature)
        return am.combine(latent, feature, norm, self.cfg.anomaly_map)

    def score(self, x: torch.Tensor) -> dict:
        """Score images alone (no test set): maps normalised with the training statistics."""
        if self.train_normalization is None:
            raise RuntimeError("score() needs anomaly_map.normalization='train' (or call fit_train_normalization)")
        out = self.infer(x)
        out["anomaly_map"] = self.anomaly_maps(out["latent_map"], out["feature_map"], self.train_normalization)
        out["pred_score"] = am.image_scores(out["anomaly_map"])
        return out

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> "DynAD":
        """The same fitted models under another inference setting (e.g. {"reconstruction.start": "noise"}).

        Only settings read at inference time make sense here (reconstruction, dic, anomaly_map); the kNN is
        refitted from the stored training features so that DIC options take effect.
        """
        cfg = apply_overrides(self.cfg, overrides)
        dic = DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps).fit(self.dic.train_features)
        other = DynAD(cfg, self.codec, self.unet, self.extractor, dic, self.device, self.provenance)
        other.train_normalization = self.train_normalization
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
                "vae_config": None if self.codec.vae is None else dict(self.codec.vae.config),
                "extractor_label": self.extractor.weights_label,
                "codec": self.codec.state_dict(),
                "unet": self.unet.state_dict(),
                "extractor": self.extractor.state_dict(),
                "dic": self.dic.state_dict(),
                "train_normalization": None if self.train_normalization is None else asdict(self.train_normalization),
                "provenance": self.provenance,
            },
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "DynAD":
        from dynad.config import from_dict

        state = load_checkpoint(path)
        cfg = from_dict(ExperimentConfig, state["config"])
        dev = resolve_device(device or cfg.device)
        if cfg.reconstruction.space == "pixel":
            vae = None
        elif state.get("vae_config"):
            vae = AutoencoderKL.from_config(state["vae_config"])
        elif cfg.autoencoder.source == "train":  # older checkpoints hold no architecture: rebuild it from the config
            vae = build_small_vae(cfg.autoencoder, cfg.data.image_size)
        else:
            vae = load_pretrained_vae(cfg.autoencoder.source)
        codec = LatentCodec(vae, cfg.autoencoder.scaling_factor, cfg.autoencoder.posterior)
        codec.load_state_dict(state["codec"])
        unet = build_unet(cfg.denoiser, cfg.data.image_size // codec.downsampling, codec.latent_channels)
        unet.load_state_dict(state["unet"])
        extractor = build_extractor(cfg.features, weights_label=state.get("extractor_label"))
        extractor.load_state_dict(state["extractor"])
        dic = DynamicConditioning.from_state_dict(state["dic"], cfg.dic)
        pipe = cls(cfg, codec, unet, extractor, dic, dev, state["provenance"])
        if state["train_normalization"]:
            pipe.train_normalization = am.MapNormalization(**state["train_normalization"])
        return pipe
