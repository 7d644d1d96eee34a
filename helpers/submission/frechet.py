"""Fréchet distances between sets of images: FID (Inception-v3 features) and the offline stand-in in the VAE's
latent space (NOT FID).

FID is the Fréchet distance between Gaussians fitted to Inception-v3 pool features (2048-d) of the generated set and
of the reference set, ``|mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. Lower is better. It is **biased at small N**
(it falls as N grows): compare scores only at equal sample counts. The Inception weights are torchmetrics' (through
``torch-fidelity``); images are resized to 299 px inside the extractor, with or without antialiasing (torchmetrics'
default changed to antialias in 2025): the setting is recorded with every score.

The **Fréchet distance in (demo-)VAE latent space** is the same distance in the feature space of the profile's VAE
encoder (:class:`VAELatentFeatures`). It runs offline and ranks checkpoints, but its numbers are not comparable with
FID or with any published score.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data import WHITE
from helpers.frozen import encode_images

from .scores import MetricResult, list_images, load_tensors

# torchmetrics' Inception (FID) is imported where it is used: it needs torch-fidelity, an optional GPU-side extra.

FID_RECOMMENDED_MIN = 2000  # below this FID is strongly biased (upwards); compare only at equal N
VAE_FD_NAME = "Fréchet distance in demo-VAE latent space — not FID"

__all__ = ["feature_stats", "frechet_distance", "frechet_distance_features", "extract_features", "inception_problem",
           "InceptionFeatures", "VAELatentFeatures", "fid", "vae_frechet_distance", "FID_RECOMMENDED_MIN",
           "VAE_FD_NAME"]


# --------------------------------------------------------------------------------------------------- Fréchet distance
def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and covariance [F,F] (unbiased, N-1) of features [N,F], in float64."""
    if isinstance(features, torch.Tensor):
        x = features.detach().cpu().double().numpy()
    else:
        x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats needs features [N,F] with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues -> 0)."""
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``. The trace of the matrix square root
    is computed with symmetric eigen-decompositions, ``Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))``
    (same eigenvalues, but the matrix is symmetric PSD), so there are no complex parts; tiny negative eigenvalues
    from rounding are clipped to 0. The result is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    if not (np.isfinite(s1).all() and np.isfinite(s2).all() and np.isfinite(mu1).all() and np.isfinite(mu2).all()):
        raise ValueError("frechet_distance got non-finite statistics (NaN/inf features?)")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_features(features1, features2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N1,F] and [N2,F]."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


@torch.inference_mode()
def extract_features(extractor: nn.Module, paths: Sequence[Path], *, resolution: int, batch_size: int = 32,
                     device: str | torch.device = "cpu", background: tuple[int, int, int] = WHITE
                     ) -> np.ndarray:
    """Features [N,F] (float64) of images read like training; the extractor gets float32 [B,3,H,W] in [-1, 1]."""
    extractor = extractor.eval()
    out = []
    for i in range(0, len(paths), batch_size):
        batch = load_tensors(paths[i:i + batch_size], resolution, background).to(device)
        feats = extractor(batch)
        if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
            raise ValueError(f"the feature extractor must map [B,3,H,W] to [B,F]; it returned {tuple(feats.shape)}")
        out.append(feats.detach().double().cpu().numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------------- extractors
def inception_problem() -> str | None:
    """Why torchmetrics' FID Inception cannot run here, or None when it can (package present, weights loadable)."""
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        return ("torch-fidelity is not installed (it provides the FID Inception weights and needs torchvision); "
                "install torchmetrics[image] on a machine with torchvision")
    try:
        InceptionFeatures()
    except Exception as err:  # weights not cached and no network, ...
        return f"the FID Inception weights cannot be loaded ({type(err).__name__}: {err})"
    return None


class InceptionFeatures(nn.Module):
    """torchmetrics' FID Inception-v3 (2048-d pool features). Input: float32 [B,3,H,W] in [-1, 1].

    The images are converted to ``uint8`` 0..255 (what torchmetrics' FID expects) and resized to 299 px inside the
    network, with antialiasing when ``antialias`` is True (torchmetrics' default since 2025) or with the original
    TensorFlow-1 bilinear resize when False.
    """

    def __init__(self, antialias: bool = True, weights_path: str | None = None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.antialias = antialias
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=weights_path, antialias=antialias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x).reshape(x.shape[0], -1)


class VAELatentFeatures(nn.Module):
    """Features of an image in the VAE's latent space (the offline stand-in for Inception features).

    The image (float32 [B,3,H,W] in [-1, 1]) is encoded to the RAW latent mean ``m`` [B,C,h,w]
    (:func:`helpers.frozen.encode_images`); the feature vector is ``m`` average-pooled to ``pool x pool`` cells
    (C·pool² numbers: what is where, coarsely) followed by the per-channel spatial standard deviation of ``m``
    (C numbers: how much detail). With C = 4 and pool = 4 that is 68 features. ``pool=4`` was chosen by
    measurement: with demo VAEs of three qualities it always ranked a trained UNet's held-out generations closer
    to the real sprites than an untrained UNet's, where pool 1 or 2 (8 or 20 features) sometimes did not.
    """

    def __init__(self, vae, pool: int = 4):
        super().__init__()
        self.vae = vae
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        mean, _ = encode_images(self.vae, x.to(param.device, param.dtype))
        mean = mean.float()
        pooled = nn.functional.adaptive_avg_pool2d(mean, self.pool).flatten(1)
        spread = mean.flatten(2).std(dim=2)
        return torch.cat([pooled, spread], dim=1)


# --------------------------------------------------------------------------------------------------- FID
def _fd_result(name: str, model: str, gen: list[Path], ref: list[Path], extractor: nn.Module, *, resolution: int,
               batch_size: int, device, background, settings: dict, higher_is_better: bool = False,
               warn_below: int = FID_RECOMMENDED_MIN, note: str = "") -> MetricResult:
    if len(gen) < 2 or len(ref) < 2:
        return MetricResult.skip(name, f"needs at least 2 generated and 2 reference images (got {len(gen)} and "
                                 f"{len(ref)})", model=model, n_images=len(gen), settings=settings,
                                 higher_is_better=False)
    f_gen = extract_features(extractor, gen, resolution=resolution, batch_size=batch_size, device=device,
                             background=background)
    f_ref = extract_features(extractor, ref, resolution=resolution, batch_size=batch_size, device=device,
                             background=background)
    value = frechet_distance_features(f_gen, f_ref)
    notes = [note] if note else []
    n = min(len(gen), len(ref))
    if n < warn_below:
        msg = (f"only {len(gen)} generated / {len(ref)} reference images: a Fréchet distance is biased upwards at "
               f"small N (< ~{warn_below}); compare only scores computed with the same numbers of images")
        warnings.warn(f"{name}: {msg}", stacklevel=3)
        notes.append(f"small N ({len(gen)}/{len(ref)}): compare only at equal counts")
    settings = {**settings, "resolution": resolution, "n_reference": len(ref), "features": int(f_gen.shape[1])}
    return MetricResult(name=name, value=value, model=model, n_images=len(gen), settings=settings,
                        note="; ".join(notes), higher_is_better=higher_is_better)


def fid(generated_dir: str | Path | Sequence[str | Path], reference_dir: str | Path | Sequence[str | Path], *,
        feature_extractor: nn.Module | None = None, resolution: int = 256, batch_size: int = 32,
        antialias: bool = True, device: str | torch.device = "cpu", name: str | None = None,
        model: str | None = None, background: tuple[int, int, int] = WHITE) -> MetricResult:
    """FID between a folder (or list) of generated images and a folder (or list) of reference images.

    Both sets are read like training images at ``resolution``. ``feature_extractor``: any ``nn.Module`` mapping
    float32 [B,3,H,W] in [-1, 1] to [B,F]; None = torchmetrics' FID Inception-v3 (2048-d), when torch-fidelity and
    its weights are available — otherwise the result is ``skipped: <why>`` with no number. ``antialias`` is the
    Inception resize setting (recorded in ``settings``). Warns below ~2,000 images: FID is biased at small N.
    """
    gen, ref = list_images(generated_dir), list_images(reference_dir)
    if feature_extractor is None:
        name = name or "FID"
        model = model or "torchmetrics FID Inception-v3 (pool 2048)"
        settings = {"antialias": antialias}
        problem = inception_problem()
        if problem is not None:
            return MetricResult.skip(name, problem, model=model, n_images=len(gen), settings=settings,
                                     higher_is_better=False)
        extractor = InceptionFeatures(antialias=antialias).to(device)
    else:
        name = name or "Fréchet distance (custom features)"
        model = model or type(feature_extractor).__name__
        settings = {"antialias": getattr(feature_extractor, "antialias", "n/a")}
        extractor = feature_extractor.to(device)
    return _fd_result(name, model, gen, ref, extractor, resolution=resolution, batch_size=batch_size, device=device,
                      background=background, settings=settings)


def vae_frechet_distance(generated_dir, reference_dir, vae, *, resolution: int, vae_name: str = "demo VAE",
                         pool: int = 4, batch_size: int = 32, device: str | torch.device = "cpu",
                         name: str = VAE_FD_NAME, background: tuple[int, int, int] = WHITE
                         ) -> MetricResult:
    """The offline stand-in: Fréchet distance in the VAE's latent space (:class:`VAELatentFeatures`) — NOT FID.

    Lower is better; useful to compare checkpoints of one run at equal image counts, not comparable with FID.
    """
    gen, ref = list_images(generated_dir), list_images(reference_dir)
    extractor = VAELatentFeatures(vae, pool=pool)
    return _fd_result(name, vae_name, gen, ref, extractor, resolution=resolution, batch_size=batch_size,
                      device=device, background=background,
                      settings={"features": "latent mean: avg-pool + channel std", "pool": pool},
                      warn_below=0, note="not FID; not comparable with published scores")
