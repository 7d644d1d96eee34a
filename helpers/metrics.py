"""Scoring generated images the way the course does: FID, CLIP-I and CLIP-T — and an honest offline stand-in.

Definitions (``N`` generated images; ``e(.)`` = a CLIP embedding, ``cos`` = cosine similarity):

- **FID** (Fréchet Inception Distance): the Fréchet distance between Gaussians fitted to Inception-v3 pool features
  (2048-d) of the generated set and of the reference set, ``|mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
  Lower is better. FID is **biased at small N** (it falls as N grows): compare scores only at equal sample counts.
  The Inception weights are torchmetrics' (through ``torch-fidelity``); images are resized to 299 px inside the
  extractor, with or without antialiasing (torchmetrics' default changed to antialias in 2025): the setting is
  recorded with every score, and scores are comparable only within one setting.
- **CLIP-T**: ``mean_i cos(e_img(generated_i), e_txt(prompt_i))`` — the RAW cosine (≈ 0.29 for good course
  solutions), as the course reports it. torchmetrics' ``CLIPScore`` is ``mean_i 100 * max(cos, 0)``; it is shown
  beside CLIP-T, labelled.
- **CLIP-I**: ``mean_i s_i`` with ``s_i = mean_{r in R_i} cos(e_img(generated_i), e_img(r))``, where ``R_i`` are the
  reference images of prompt ``i`` (the course has exactly one per prompt, then ``s_i`` is a plain cosine; the
  held-out split of :mod:`helpers.split` has every frame of the held-out ``monsterID_ACTION`` as references).
- **Fréchet distance in (demo-)VAE latent space — not FID**: the same Fréchet distance, in the feature space of the
  profile's VAE encoder (per-channel statistics of the latent mean, see :class:`VAELatentFeatures`). It runs offline
  and ranks checkpoints, but its numbers are not comparable with FID or with any published score.

Every image (generated or reference) is read the way training reads images: :func:`helpers.data.load_image`
(alpha composited on white, resized to the profile's resolution), then converted to the range each model expects.

Where a scoring model cannot be loaded (offline and not cached, package missing) the result says
``skipped: <why>`` and holds no number — never a number computed from random weights.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
FID_RECOMMENDED_MIN = 2000  # below this FID is strongly biased (upwards); compare only at equal N
VAE_FD_NAME = "Fréchet distance in demo-VAE latent space — not FID"

__all__ = [
    "MetricResult", "metrics_table", "print_metrics", "feature_stats", "frechet_distance", "frechet_distance_features",
    "inception_problem", "InceptionFeatures", "VAELatentFeatures", "extract_features", "fid", "vae_frechet_distance",
    "ClipScorer", "load_clip", "clip_problem", "cosine_rows", "clip_t_from_embeddings", "clip_i_from_embeddings",
    "clip_t", "clip_i", "score_folder", "generate_for_scoring", "generated_files", "examples_figure", "sweep",
    "SweepResult", "plot_sweep", "load_reference_map", "DEFAULT_CLIP", "VAE_FD_NAME",
]


# --------------------------------------------------------------------------------------------------- results
@dataclass
class MetricResult:
    """One score, with everything needed to read it honestly.

    ``value`` is None when the metric was skipped (``note`` says why). ``model`` names what computed the number;
    ``settings`` holds what changes the number (resolution, antialias, feature size...). ``per_image`` maps an
    image name to its own score (CLIP-T / CLIP-I), for worst/best examples. ``beside`` is a related number shown
    next to the value (e.g. CLIPScore ×100 next to the raw CLIP-T cosine).
    """

    name: str
    value: float | None
    model: str
    n_images: int
    settings: dict = field(default_factory=dict)
    note: str = ""
    per_image: dict[str, float] = field(default_factory=dict, repr=False)
    beside: str = ""
    higher_is_better: bool = True

    @property
    def skipped(self) -> bool:
        return self.value is None

    @classmethod
    def skip(cls, name: str, why: str, *, model: str = "", n_images: int = 0, settings: dict | None = None,
             higher_is_better: bool = True) -> MetricResult:
        """A result that holds no number: ``note`` = ``skipped: <why>``."""
        return cls(name=name, value=None, model=model, n_images=n_images, settings=dict(settings or {}),
                   note=f"skipped: {why}", higher_is_better=higher_is_better)

    def worst_best(self, k: int = 4) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The ``k`` worst and ``k`` best images by their own score (per_image), worst first / best first."""
        items = sorted(self.per_image.items(), key=lambda kv: kv[1], reverse=not self.higher_is_better)
        return items[:k], items[::-1][:k]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_image")
        return d

    def __str__(self) -> str:
        value = "—" if self.value is None else f"{self.value:.4f}"
        return f"{self.name}: {value} ({self.model or 'no model'}, n={self.n_images}) {self.note}".strip()


def metrics_table(results: Sequence[MetricResult]) -> str:
    """A plain-text table: metric, value, better, model, n, settings, note (one row per result)."""
    rows = [("metric", "value", "better", "computed with", "n", "settings", "note")]
    for r in results:
        value = "skipped" if r.value is None else f"{r.value:.4f}"
        if r.beside:
            value += f"  [{r.beside}]"
        settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        rows.append((r.name, value, "higher" if r.higher_is_better else "lower", r.model or "-", str(r.n_images),
                     settings or "-", r.note or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
        if j == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 4))
    return "\n".join(line.rstrip() for line in lines)


def print_metrics(results: Sequence[MetricResult]) -> None:
    """Print :func:`metrics_table`."""
    print(metrics_table(results))


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


# --------------------------------------------------------------------------------------------------- images
def _list_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """PNG/JPEG files of a folder (sorted by name), or the given list of files."""
    from .data import DataError

    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of images")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not paths:
            raise DataError(f"{folder}: holds no images (.png/.jpg)")
        return paths
    paths = [Path(p) for p in source]
    if not paths:
        raise DataError("an empty list of images was given")
    return paths


def _load_batch(paths: Sequence[Path], resolution: int, background: tuple[int, int, int]) -> torch.Tensor:
    """Images as float32 [B,3,H,W] in [-1, 1], read like training (helpers.data.load_image)."""
    from .data import load_image, pil_to_tensor

    return torch.stack([pil_to_tensor(load_image(p, resolution, background=background)) for p in paths])


def _load_pils(paths: Sequence[Path], resolution: int, background: tuple[int, int, int]) -> list:
    from .data import load_image

    return [load_image(p, resolution, background=background) for p in paths]


@torch.inference_mode()
def extract_features(extractor: nn.Module, paths: Sequence[Path], *, resolution: int, batch_size: int = 32,
                     device: str | torch.device = "cpu", background: tuple[int, int, int] = (255, 255, 255)
                     ) -> np.ndarray:
    """Features [N,F] (float64) of images read like training; the extractor gets float32 [B,3,H,W] in [-1, 1]."""
    extractor = extractor.eval()
    out = []
    for i in range(0, len(paths), batch_size):
        batch = _load_batch(paths[i:i + batch_size], resolution, background).to(device)
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
        from .frozen import encode_images

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
        model: str | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> MetricResult:
    """FID between a folder (or list) of generated images and a folder (or list) of reference images.

    Both sets are read like training images at ``resolution``. ``feature_extractor``: any ``nn.Module`` mapping
    float32 [B,3,H,W] in [-1, 1] to [B,F]; None = torchmetrics' FID Inception-v3 (2048-d), when torch-fidelity and
    its weights are available — otherwise the result is ``skipped: <why>`` with no number. ``antialias`` is the
    Inception resize setting (recorded in ``settings``). Warns below ~2,000 images: FID is biased at small N.
    """
    gen, ref = _list_images(generated_dir), _list_images(reference_dir)
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
                         name: str = VAE_FD_NAME, background: tuple[int, int, int] = (255, 255, 255)
                         ) -> MetricResult:
    """The offline stand-in: Fréchet distance in the VAE's latent space (:class:`VAELatentFeatures`) — NOT FID.

    Lower is better; useful to compare checkpoints of one run at equal image counts, not comparable with FID.
    """
    gen, ref = _list_images(generated_dir), _list_images(reference_dir)
    extractor = VAELatentFeatures(vae, pool=pool)
    return _fd_result(name, vae_name, gen, ref, extractor, resolution=resolution, batch_size=batch_size,
                      device=device, background=background,
                      settings={"features": "latent mean: avg-pool + channel std", "pool": pool},
                      warn_below=0, note="not FID; not comparable with published scores")


# --------------------------------------------------------------------------------------------------- CLIP
def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of [N,D] and [N,D] (or [1,D] broadcast) -> [N], float64."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)


def clip_t_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Per-image raw cosines [N], CLIP-T (their mean) and torchmetrics' CLIPScore (mean of 100·max(cos, 0))."""
    cos = cosine_rows(image_emb, text_emb)
    return cos, float(cos.mean()), float((100 * cos.clamp(min=0)).mean())


def clip_i_from_embeddings(gen_emb: torch.Tensor, ref_embs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Per-image ``s_i = mean_r cos(gen_i, ref_{i,r})`` [N] and CLIP-I = ``mean_i s_i``.

    ``ref_embs[i]`` is [k_i, D] (k_i >= 1 reference images of prompt i) or [D].
    """
    if len(ref_embs) != gen_emb.shape[0]:
        raise ValueError(f"{gen_emb.shape[0]} generated embeddings but {len(ref_embs)} reference lists")
    per = []
    for g, refs in zip(gen_emb, ref_embs):
        refs = torch.as_tensor(refs)
        refs = refs.reshape(-1, refs.shape[-1])
        if refs.shape[0] == 0:
            raise ValueError("every generated image needs at least one reference image for CLIP-I")
        per.append(cosine_rows(g.unsqueeze(0), refs).mean())
    s = torch.stack(per)
    return s, float(s.mean())


def clip_problem(model_id: str) -> str | None:
    """Why the CLIP model ``model_id`` cannot be loaded (offline and not cached, no such folder), or None."""
    from .hub import model_problem

    return model_problem(model_id)


class ClipScorer:
    """A CLIP model (transformers ``CLIPModel`` + processor) that embeds images and texts for CLIP-T/CLIP-I."""

    def __init__(self, model, processor, model_id: str, device: str | torch.device = "cpu"):
        self.model, self.processor, self.model_id, self.device = model, processor, model_id, torch.device(device)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected embedding
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        """Embeddings [N,D] (float32, projected, not normalised) of RGB PIL images."""
        out = []
        for i in range(0, len(images), batch_size):
            px = self.processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
            out.append(self._features(self.model.get_image_features(pixel_values=px.to(self.device))).float().cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings [N,D] of texts (tokenized with padding, truncated to CLIP's 77 tokens)."""
        out = []
        tok = getattr(self.processor, "tokenizer", self.processor)
        max_len = min(int(getattr(tok, "model_max_length", 77) or 77), 77)
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_len,
                      return_tensors="pt")
            feats = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                                 attention_mask=enc["attention_mask"].to(self.device))
            out.append(self._features(feats).float().cpu())
        return torch.cat(out)


def load_clip(model_id: str = DEFAULT_CLIP, device: str | torch.device = "cpu") -> ClipScorer:
    """``CLIPModel`` + ``CLIPProcessor`` from a hub id or a local folder (``from_pretrained``), frozen, eval."""
    from transformers import CLIPModel, CLIPProcessor

    from .frozen import _quiet_loading

    with _quiet_loading():
        model = CLIPModel.from_pretrained(model_id).to(device).eval().requires_grad_(False)
        processor = CLIPProcessor.from_pretrained(model_id)
    return ClipScorer(model, processor, str(model_id), device)


def _clip_or_skip(clip: ClipScorer | str | None, names: Sequence[str], n: int, device
                  ) -> tuple[ClipScorer | None, list[MetricResult]]:
    if isinstance(clip, ClipScorer):
        return clip, []
    model_id = str(clip or DEFAULT_CLIP)
    key = (model_id, str(device))
    if key in _LOADED_CLIP:  # loaded once per session (a notebook scores several folders)
        return _LOADED_CLIP[key], []
    problem = clip_problem(model_id)
    if problem is None:
        try:
            _LOADED_CLIP.clear()  # keep at most one CLIP model in memory
            _LOADED_CLIP[key] = load_clip(model_id, device)
            return _LOADED_CLIP[key], []
        except Exception as err:
            problem = f"cannot load {model_id} ({type(err).__name__}: {err})"
    return None, [MetricResult.skip(name, problem, model=model_id, n_images=n) for name in names]


_LOADED_CLIP: dict[tuple[str, str], ClipScorer] = {}


def clip_t(images: Sequence, prompts: Sequence[str], *, clip: ClipScorer | str | None = None,
           names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> MetricResult:
    """CLIP-T (raw cosine, mean over images) with torchmetrics' CLIPScore ×100 beside it.

    ``images``: RGB PIL images (already read like training); ``prompts[i]`` belongs to ``images[i]``;
    ``names``: image names for ``per_image``. ``clip``: a :class:`ClipScorer`, a model id/folder, or None (default).
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    scorer, skipped = _clip_or_skip(clip, ["CLIP-T"], len(images), device)
    if scorer is None:
        return skipped[0]
    cos, mean, x100 = clip_t_from_embeddings(scorer.image_embeddings(images), scorer.text_embeddings(prompts))
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    return MetricResult(name="CLIP-T", value=mean, model=scorer.model_id, n_images=len(images),
                        settings={"similarity": "raw cosine"}, per_image=dict(zip(names, cos.tolist())),
                        beside=f"CLIPScore x100 = {x100:.2f} (torchmetrics: 100*max(cos,0))")


def clip_i(images: Sequence, references: Sequence[Sequence], *, clip: ClipScorer | str | None = None,
           names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> MetricResult:
    """CLIP-I: mean over generated images of the mean cosine to their reference images (module docstring).

    ``references[i]``: the RGB PIL reference images of ``images[i]`` (one or more).
    """
    if len(images) != len(references):
        raise ValueError(f"{len(images)} images but {len(references)} reference lists")
    scorer, skipped = _clip_or_skip(clip, ["CLIP-I"], len(images), device)
    if scorer is None:
        return skipped[0]
    gen = scorer.image_embeddings(images)
    flat = [r for refs in references for r in refs]
    ref_emb = scorer.image_embeddings(flat)
    ref_lists, k = [], 0
    for refs in references:
        ref_lists.append(ref_emb[k:k + len(refs)])
        k += len(refs)
    per, mean = clip_i_from_embeddings(gen, ref_lists)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    return MetricResult(name="CLIP-I", value=mean, model=scorer.model_id, n_images=len(images),
                        settings={"similarity": "raw cosine", "n_reference": len(flat)},
                        per_image=dict(zip(names, per.tolist())))


# --------------------------------------------------------------------------------------------------- folders
def load_reference_map(reference: str | Path | Mapping[str, Sequence[str | Path]], prompts=None
                       ) -> dict[str, list[Path]]:
    """``image_name -> [reference image paths]`` from a mapping, a ``reference_map.json`` file, a split folder
    (holding ``reference_map.json``), or a plain folder of reference images named like the prompts' ``image_name``
    (the course's layout, and the demo's ``test_reference/``; needs ``prompts``).

    Relative paths in a JSON file are relative to the file's folder.
    """
    from .data import DataError

    if isinstance(reference, Mapping):
        return {str(k): [Path(p) for p in (v if isinstance(v, (list, tuple)) else [v])] for k, v in reference.items()}
    path = Path(reference)
    if path.is_dir():
        if not (path / "reference_map.json").exists() and prompts is not None:
            return {p.image_name: [path / p.image_name] for p in prompts if (path / p.image_name).is_file()}
        path = path / "reference_map.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no reference map (run helpers.split.holdout_split first)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    return {k: [(path.parent / p) if not Path(p).is_absolute() else Path(p) for p in v] for k, v in raw.items()}


EXTRA_SEP = "__"  # extra images of a prompt: <stem>__<k>.png (see generate_for_scoring)


def generated_files(generated_dir: str | Path, prompt) -> list[Path]:
    """The generated images of one prompt in a folder: ``<image_name>`` then ``<stem>__<k>.png`` (k = 1, 2, ...)."""
    folder = Path(generated_dir)
    stem = Path(prompt.image_name).stem
    extra = []
    for p in folder.glob(f"{stem}{EXTRA_SEP}*.png"):
        k = p.stem[len(stem) + len(EXTRA_SEP):]
        if k.isdigit():
            extra.append((int(k), p))
    return [folder / prompt.image_name] + [p for _, p in sorted(extra)]


def generate_for_scoring(tti, prompts, out_dir: str | Path, *, size: int, images_per_prompt: int = 1, seed: int = 0,
                         guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim", batch_size: int = 16,
                         overwrite: bool = True, progress: bool = True) -> Path:
    """Generate ``images_per_prompt`` images per prompt into ``out_dir`` for scoring (not a submission folder).

    Image 0 of a prompt is ``<image_name>`` with seed :func:`helpers.submission.seed_for` ``(key, seed)`` — the same
    image the submission export makes; image ``k >= 1`` is ``<stem>__<k>.png`` with seed ``seed_for(f"{key}#{k}",
    seed)``. More images per prompt make the Fréchet distances less noisy (compare only at equal counts) and the
    CLIP means steadier. The folder is replaced whole (``overwrite=True`` by default).
    """
    from .submission import generate_folder, read_prompts, seed_for

    plist = read_prompts(prompts)
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, not {images_per_prompt}")
    items = []
    for p in plist:
        stem = Path(p.image_name).stem
        for k in range(images_per_prompt):
            name = p.image_name if k == 0 else f"{stem}{EXTRA_SEP}{k}.png"
            items.append((name, p.text_prompt, seed_for(p.key if k == 0 else f"{p.key}#{k}", seed)))
    out, _ = generate_folder(tti, items, out_dir, size=size, guidance_scale=guidance_scale, steps=steps,
                             scheduler=scheduler, batch_size=batch_size, overwrite=overwrite, progress=progress)
    return out


def _clip_scores(scorer: ClipScorer, pairs, refs: dict[str, list[Path]], resolution: int, background,
                 batch_size: int) -> list[MetricResult]:
    """CLIP-T and CLIP-I of ``(generated path, prompt)`` pairs; every image, prompt and reference embedded once."""
    gen_emb = torch.cat([scorer.image_embeddings(_load_pils([f for f, _ in pairs[i:i + batch_size]], resolution,
                                                            background))
                         for i in range(0, len(pairs), batch_size)])
    texts = sorted({p.text_prompt for _, p in pairs})
    text_emb = dict(zip(texts, scorer.text_embeddings(texts)))
    ref_emb: dict[str, torch.Tensor] = {}
    for _, p in pairs:
        if p.image_name not in ref_emb:
            ref_emb[p.image_name] = scorer.image_embeddings(_load_pils(refs[p.image_name], resolution, background))
    names = [f.name for f, _ in pairs]
    cos_t, mean_t, x100 = clip_t_from_embeddings(gen_emb, torch.stack([text_emb[p.text_prompt] for _, p in pairs]))
    per_i, mean_i = clip_i_from_embeddings(gen_emb, [ref_emb[p.image_name] for _, p in pairs])
    n_ref = sum(len(v) for v in ref_emb.values())
    return [
        MetricResult(name="CLIP-T", value=mean_t, model=scorer.model_id, n_images=len(pairs),
                     settings={"similarity": "raw cosine"}, per_image=dict(zip(names, cos_t.tolist())),
                     beside=f"CLIPScore x100 = {x100:.2f} (torchmetrics: 100*max(cos,0))"),
        MetricResult(name="CLIP-I", value=mean_i, model=scorer.model_id, n_images=len(pairs),
                     settings={"similarity": "raw cosine", "n_reference": n_ref},
                     per_image=dict(zip(names, per_i.tolist()))),
    ]


def _vae_label(profile) -> str:
    return "demo-VAE" if getattr(profile, "name", "demo") == "demo" else "SD-VAE"


def score_folder(generated_dir: str | Path, prompts, reference, profile, *, clip_model: str | ClipScorer | None = None,
                 fid_extractor: nn.Module | None = None, vae=None, antialias: bool = True, batch_size: int = 32,
                 device: str | torch.device | None = None, compute_fid: bool = True, compute_clip: bool = True,
                 compute_vae_fd: bool = True, vae_pool: int = 4) -> list[MetricResult]:
    """Every metric that can be computed for a folder of generated images ``<image_name>`` (one per prompt).

    ``prompts``: a test.json-style file or a list of ``TestPrompt``; ``reference``: ``image_name -> reference
    images`` (a mapping, a ``reference_map.json``, a split folder, or a folder of images named like the prompts; see
    :func:`load_reference_map`). Extra images of a prompt
    (``<stem>__<k>.png``, :func:`generate_for_scoring`) are scored too. Returns, in order: FID (torchmetrics Inception,
    or skipped), CLIP-T (with CLIPScore ×100 beside it), CLIP-I (CLIP ``clip_model``, default
    ``openai/clip-vit-base-patch32``, or skipped), and the Fréchet distance in the profile VAE's latent space
    (labelled "not FID"; ``vae`` = a loaded VAE, else the profile's is loaded). A missing generated image is an error
    that names it.
    """
    from .data import DataError, read_test_prompts

    device = device or getattr(profile, "device", "cpu")
    gen_dir = Path(generated_dir)
    plist = read_test_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    refs = load_reference_map(reference, plist)
    missing = [p.image_name for p in plist if not (gen_dir / p.image_name).is_file()]
    if missing:
        raise DataError(f"{gen_dir}: {len(missing)} generated image(s) missing, e.g. {missing[:5]} "
                        "(generate them first, e.g. with helpers.metrics.generate_for_scoring)")
    no_ref = [p.image_name for p in plist if not refs.get(p.image_name)]
    if no_ref:
        raise DataError(f"no reference image for {no_ref[:5]} in the reference map")
    res, bg = int(profile.resolution), tuple(getattr(profile, "background", (255, 255, 255)))
    # every generated image with its prompt (a prompt may have several: <stem>__<k>.png)
    pairs = [(f, p) for p in plist for f in generated_files(gen_dir, p)]
    gen_paths = [f for f, _ in pairs]
    ref_paths = sorted({r for p in plist for r in refs[p.image_name]})
    results: list[MetricResult] = []

    if compute_fid:
        results.append(fid(gen_paths, ref_paths, feature_extractor=fid_extractor, resolution=res,
                           batch_size=batch_size, antialias=antialias, device=device, background=bg))
    if compute_clip:
        scorer, skipped = _clip_or_skip(clip_model, ["CLIP-T", "CLIP-I"], len(gen_paths), device)
        if scorer is None:
            results += skipped
        else:
            results += _clip_scores(scorer, pairs, refs, res, bg, batch_size)
    if compute_vae_fd:
        name = VAE_FD_NAME if _vae_label(profile) == "demo-VAE" else VAE_FD_NAME.replace("demo-VAE", "SD-VAE")
        where = f"{profile.vae}{'/' + profile.vae_subfolder if profile.vae_subfolder else ''}"
        problem = None
        if vae is None:
            try:
                from .frozen import load_vae

                vae = load_vae(profile.vae, profile.vae_subfolder, device=device)
            except Exception as err:  # VAE not loadable
                problem = f"cannot load the VAE {where} ({type(err).__name__}: {err})"
        if problem:
            results.append(MetricResult.skip(name, problem, model=where, n_images=len(gen_paths),
                                             higher_is_better=False))
        else:
            results.append(vae_frechet_distance(gen_paths, ref_paths, vae, resolution=res, batch_size=batch_size,
                                                pool=vae_pool, device=device, name=name, background=bg,
                                                vae_name=f"{_vae_label(profile)} ({where})"))
    return results


def examples_figure(result: MetricResult, generated_dir: str | Path, prompts, reference=None, k: int = 4,
                    background: tuple[int, int, int] = (255, 255, 255)):
    """The ``k`` worst (top row) and ``k`` best (bottom row) generated images by ``result.per_image``, each with its
    score and prompt, and — when ``reference`` (a reference map) is given — its first reference image beside it."""
    from .data import read_test_prompts
    from .plots import show_images

    if result.skipped or not result.per_image:
        raise ValueError(f"{result.name} has no per-image scores ({result.note or 'nothing computed'})")
    plist = read_test_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    gen_dir = Path(generated_dir)
    owner = {f.name: p for p in plist for f in generated_files(gen_dir, p)}
    refs = load_reference_map(reference, plist) if reference is not None else None
    worst, best = result.worst_best(k)
    images, captions = [], []
    for label, rows in (("worst", worst), ("best", best)):
        for name, score in rows:
            p = owner.get(name)
            images.append(gen_dir / name)
            captions.append(f"{label} {result.name} {score:.3f}: {p.text_prompt if p else name}")
            if refs is not None:
                ref = refs.get(p.image_name, [None])[0] if p else None
                images.append(ref if ref is not None else gen_dir / name)
                captions.append("reference" if ref is not None else "(no reference)")
    from .data import load_image

    pil = [load_image(path, None, background=background) for path in images]
    ncols = len(worst) * (2 if refs is not None else 1)
    return show_images(pil, captions, ncols=max(1, ncols), size=1.6,
                       title=f"{result.name}: worst (top) and best (bottom) images")


# --------------------------------------------------------------------------------------------------- sweeps
@dataclass
class SweepResult:
    """Scores per swept value: ``results[i]`` are the metrics of ``values[i]``; ``figure`` plots them."""

    param: str
    values: list
    results: list[list[MetricResult]]
    folders: list[Path]
    figure: Any = None

    def table(self) -> str:
        names = [r.name for r in self.results[0]] if self.results else []
        header = [self.param] + names
        rows = [header]
        for v, res in zip(self.values, self.results):
            rows.append([_label(v)] + ["skipped" if r.value is None else f"{r.value:.4f}" for r in res])
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

    def best(self, metric: str) -> Any:
        """The swept value with the best score of ``metric`` (None if it was skipped everywhere)."""
        scored = [(v, r) for v, res in zip(self.values, self.results) for r in res
                  if r.name == metric and not r.skipped]
        if not scored:
            return None
        key = (lambda vr: vr[1].value) if scored[0][1].higher_is_better else (lambda vr: -vr[1].value)
        return max(scored, key=key)[0]


def _label(v) -> str:
    return Path(v).name if isinstance(v, Path) else str(v)


def plot_sweep(param: str, values: Sequence, results: Sequence[Sequence[MetricResult]]):
    """One small panel per computed metric (skipped ones are left out), score vs the swept value."""
    from .plots import _new_figure

    names = []
    for res in results:
        for r in res:
            if not r.skipped and r.name not in names:
                names.append(r.name)
    fig = _new_figure((3.6 * max(1, len(names)), 3.0))
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    numeric = all(isinstance(v, (int, float)) for v in values)
    xs = list(values) if numeric else list(range(len(values)))
    for ax, name in zip(axes, names):
        pts = [(x, r.value) for x, res in zip(xs, results) for r in res if r.name == name and not r.skipped]
        hib = next(r.higher_is_better for res in results for r in res if r.name == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.set_title(f"{name}\n({'higher' if hib else 'lower'} is better)", fontsize=8)
        ax.set_xlabel(param)
        if not numeric:
            ax.set_xticks(xs, [_label(v) for v in values], rotation=30, fontsize=7)
    if not names:
        axes[0].text(0.5, 0.5, "every metric was skipped", ha="center", va="center")
    fig.tight_layout()
    return fig


def sweep(values: Sequence, prompts, reference, profile, *, out_dir: str | Path, param: str = "guidance_scale",
          tti=None, make_tti: Callable[[Any], Any] | None = None, steps: int = 50, scheduler: str = "ddim",
          guidance_scale: float = 7.5, seed: int = 0, batch_size: int = 16, images_per_prompt: int = 1,
          score_kwargs: dict | None = None, progress: bool = False) -> SweepResult:
    """Generate the prompts once per swept value, score each folder, and plot the metrics vs the value.

    ``param``: ``"guidance_scale"`` or ``"steps"`` (one ``tti`` is used), or anything else (e.g. ``"checkpoint"``)
    with ``make_tti(value) -> text-to-image object`` (e.g. ``lambda ck: TextToImage.from_checkpoint(ck, frozen)``).
    Images go to ``out_dir/<param>_<value>/`` (:func:`generate_for_scoring`, ``images_per_prompt`` each; the folders
    are replaced). Seeds are per prompt key (:func:`helpers.submission.seed_for`), so every value sees the same
    initial noise. ``score_kwargs`` go to :func:`score_folder` (the CLIP model and the VAE are loaded once).
    """
    from .data import read_test_prompts

    plist = read_test_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    out_dir = Path(out_dir)
    score_kwargs = dict(score_kwargs or {})
    device = score_kwargs.get("device") or getattr(profile, "device", "cpu")
    if score_kwargs.get("compute_clip", True) and not isinstance(score_kwargs.get("clip_model"), ClipScorer):
        scorer, _ = _clip_or_skip(score_kwargs.get("clip_model"), ["CLIP"], 0, device)  # load once, not per value
        if scorer is not None:
            score_kwargs["clip_model"] = scorer
    if score_kwargs.get("compute_vae_fd", True) and score_kwargs.get("vae") is None:
        try:
            from .frozen import load_vae

            score_kwargs["vae"] = load_vae(profile.vae, profile.vae_subfolder, device=device)
        except Exception:  # score_folder reports it as skipped
            pass
    all_results, folders = [], []
    for value in values:
        kw = {"guidance_scale": guidance_scale, "steps": steps}
        if param in kw:
            kw[param] = value
            gen = tti
        else:
            if make_tti is None:
                raise ValueError(f"sweeping {param!r} needs make_tti(value) -> text-to-image object")
            gen = make_tti(value)
        if gen is None:
            raise ValueError("sweep needs tti= (or make_tti=)")
        folder = out_dir / f"{param}_{_label(value)}"
        generate_for_scoring(gen, plist, folder, size=int(profile.resolution), scheduler=scheduler, seed=seed,
                             batch_size=batch_size, images_per_prompt=images_per_prompt, overwrite=True,
                             progress=progress, **kw)
        all_results.append(score_folder(folder, plist, reference, profile, **score_kwargs))
        folders.append(folder)
    return SweepResult(param=param, values=list(values), results=all_results, folders=folders,
                       figure=plot_sweep(param, list(values), all_results))
