"""Chapter 06's exercises: CLIP-T as a mean cosine, and the Fréchet distance of two Gaussians.

- :data:`clip_t`: ``fn(image_emb, text_emb) -> float`` (embeddings [N, D], row i of each belongs together), the raw
  mean cosine as the course reports it: :func:`helpers.submission.clip_scores.clip_t_from_embeddings`.
- :data:`frechet`: ``fn(mu1, sigma1, mu2, sigma2) -> float`` (numpy arrays [F] and [F, F]), FID's formula:
  :func:`helpers.submission.frechet.frechet_distance`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import sqrtm

from helpers.submission.clip_scores import clip_t_from_embeddings
from helpers.submission.frechet import frechet_distance
from .core import Case, Exercise, Mistake, Question

__all__ = ["clip_t", "frechet", "fid_small_n", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- CLIP-T
def _ref_clip_t(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    return clip_t_from_embeddings(image_emb, text_emb)[1]


def _solution_clip_t(image_emb, text_emb):
    img = image_emb / image_emb.norm(dim=-1, keepdim=True)     # unit vectors
    txt = text_emb / text_emb.norm(dim=-1, keepdim=True)
    return (img * txt).sum(dim=-1).mean().item()               # cosine of each pair, mean over the pairs


def _clip_cases() -> list[Case]:
    g = torch.Generator().manual_seed(60)
    cases = []
    for n, d, shared in ((9, 8, 0.0), (6, 16, 0.8), (4, 32, 0.2)):  # the first has negative cosines
        base = torch.randn(n, d, generator=g)
        img = (base + torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g).add(0.5) * 3
        txt = (shared * base + torch.randn(n, d, generator=g)) * torch.rand(n, 1, generator=g).add(0.5)
        cases.append(Case((img, txt), f"{n} image and text embeddings of size {d}"))
    return cases


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


clip_t = Exercise(
    "ch06.clip_t", "CLIP-T: the mean cosine between each image's and its prompt's embedding",
    reference=_ref_clip_t, solution=_solution_clip_t, cases=_clip_cases,
    fallback_name="the helpers' version (helpers.submission.clip_scores.clip_t_from_embeddings)",
    mistakes=[
        Mistake("The embeddings are not normalised: a cosine is the dot product of UNIT vectors (divide each row "
                "by its norm).", lambda a, b: float((a * b).sum(-1).mean())),
        Mistake("That is torchmetrics' CLIPScore (100 · max(cos, 0)): CLIP-T as the course reports it is the raw "
                "cosine, no ×100 and no clamp.", lambda a, b: float((100 * (_unit(a) * _unit(b)).sum(-1)
                                                                      .clamp(min=0)).mean())),
        Mistake("No ×100: CLIP-T is the raw mean cosine (≈ 0.29 for a good course model).",
                lambda a, b: float(100 * (_unit(a) * _unit(b)).sum(-1).mean())),
        Mistake("Only matching pairs count: image i with prompt i (the diagonal), not every image with every "
                "prompt.", lambda a, b: float((_unit(a) @ _unit(b).T).mean())),
        Mistake("Normalise both sides: the image AND the text embeddings.",
                lambda a, b: float((_unit(a) * b).sum(-1).mean())),
        Mistake("Normalise both sides: the text AND the image embeddings.",
                lambda a, b: float((a * _unit(b)).sum(-1).mean())),
        Mistake("The cosine runs along the embedding dimension (dim=-1), one per pair, not along the batch (dim=0).",
                lambda a, b: float(F.cosine_similarity(a, b, dim=0).mean())),
    ],
    hint="""Normalise each row to length 1 (x / x.norm(dim=-1, keepdim=True)); the cosine of pair i is the sum of
    the products of row i of both; CLIP-T is the mean of those N cosines, as a float.""",
    stub='''
    def clip_t(image_emb, text_emb):
        """CLIP-T: the mean over i of cos(image_emb[i], text_emb[i]) (tensors [N, D]); returns a float."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- Fréchet
def _solution_frechet(mu1, sigma1, mu2, sigma2):
    covmean = sqrtm(sigma1 @ sigma2).real  # the MATRIX square root (.real: rounding leaves tiny imaginary parts)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))


def _spd(rng: np.random.Generator, f: int) -> np.ndarray:
    a = rng.normal(size=(f, f + 3))
    return a @ a.T / f + 0.1 * np.eye(f)


def _frechet_cases() -> list[Case]:
    rng = np.random.default_rng(61)
    cases = []
    for f, shift in ((3, 1.0), (5, 0.3), (8, 2.0)):
        mu1, mu2 = rng.normal(size=f), rng.normal(size=f) * shift
        cases.append(Case((mu1, _spd(rng, f), mu2, _spd(rng, f)), f"Gaussians in {f} dimensions"))
    return cases


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _tr_sqrt(s1: np.ndarray, s2: np.ndarray) -> float:
    r = _sqrt_psd(s1)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum())


def _fd(mean_term: str = "sq", cov_term: str = "ok"):
    def wrong(m1, s1, m2, s2):
        mean = {"sq": float(((m1 - m2) ** 2).sum()), "norm": float(np.linalg.norm(m1 - m2)), "none": 0.0}[mean_term]
        cross = {"ok": 2 * _tr_sqrt(s1, s2), "nosqrt": 2 * float(np.trace(s1 @ s2)), "one": _tr_sqrt(s1, s2),
                 "separate": 2 * float(np.trace(_sqrt_psd(s1) @ _sqrt_psd(s2))),
                 "elementwise": 2 * float(np.sqrt(np.diag(s1) * np.diag(s2)).sum())}[cov_term]
        return mean + float(np.trace(s1) + np.trace(s2)) - cross
    return wrong


frechet = Exercise(
    "ch06.frechet", "the Fréchet distance between two Gaussians (FID's formula)",
    reference=frechet_distance, solution=_solution_frechet, cases=_frechet_cases, rtol=1e-5, atol=1e-6,
    fallback_name="the helpers' version (helpers.submission.frechet_distance)", imports="from scipy.linalg import sqrtm",
    mistakes=[
        Mistake("The square root of sigma1 @ sigma2 is missing: the cross term is 2 Tr((sigma1 sigma2)^(1/2)), a "
                "MATRIX square root (scipy.linalg.sqrtm).", _fd(cov_term="nosqrt")),
        Mistake("The mean term is the SQUARED distance |mu1 - mu2|², not the distance.", _fd(mean_term="norm")),
        Mistake("The factor 2 is missing: ... - 2 Tr((sigma1 sigma2)^(1/2)).", _fd(cov_term="one")),
        Mistake("The mean term |mu1 - mu2|² is missing.", _fd(mean_term="none")),
        Mistake("(sigma1 sigma2)^(1/2) is the square root of the PRODUCT, not the product of the square roots.",
                _fd(cov_term="separate")),
        Mistake("np.sqrt is element-wise: the formula needs the matrix square root of sigma1 @ sigma2 "
                "(scipy.linalg.sqrtm).", _fd(cov_term="elementwise")),
    ],
    hint="""|mu1 - mu2|² + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 @ sigma2)). `from scipy.linalg import
    sqrtm`; it may return a complex matrix with tiny imaginary parts: keep .real. Return a float.""",
    stub='''
    from scipy.linalg import sqrtm


    def frechet(mu1, sigma1, mu2, sigma2):
        """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): numpy arrays [F] and [F, F];
        returns a float."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- question
fid_small_n = Question(
    "ch06.fid_small_n",
    "The same model, the same reference images: FID computed from 500 generated images, then from 2,000. "
    "What do you expect?",
    ["The same FID, up to noise", "A higher FID with 500 images", "A lower FID with 500 images",
     "FID cannot be computed from fewer than 2,048 images"],
    answer="B",
    explanation="FID is biased upwards at small N: the covariance estimated from few samples is noisy, which adds "
                "to the trace term. FIDs are only comparable at the same N (and the same resize setting).",
    feedback={"D": "It can (the covariance is then singular, and sqrtm copes); it is only biased.",
              "A": "The bias is systematic, not noise: it shrinks roughly like 1/N."})

EXERCISES = [clip_t, frechet]
QUESTIONS = [fid_small_n]
