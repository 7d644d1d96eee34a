"""Chapter 02's exercises: the VAE's scale factor from latent statistics, and the PSNR of a round trip.

- :data:`scaling_factor`: ``fn(latents) -> float``, the factor that gives the latents a standard deviation of 1:
  ``1 / latents.std()``, as the demo VAE calibrates itself (``helpers.demo.vae``: ``scaling_factor = 1 / std`` of
  the training latents; Stable Diffusion's 0.18215 was measured the same way).
- :data:`psnr`: ``fn(images, reconstructions) -> Tensor [B]``, the PSNR in dB of each image in [-1, 1], as chapter
  02 computes it: ``helpers.frozen.psnr_from_mse`` of the per-image MSE on the [0, 1] scale.
"""

from __future__ import annotations

import torch

from helpers.frozen.vae import psnr_from_mse
from .core import Case, Exercise, Mistake, Question

__all__ = ["scaling_factor", "psnr", "compression", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- scale factor
def _ref_scaling_factor(latents: torch.Tensor) -> float:
    return float(1.0 / latents.double().std())  # helpers.demo.vae's calibration: 1 / std of the latents


def _solution_scaling_factor(latents):
    return 1.0 / latents.std().item()      # scaled latents = latents * factor then have std 1


def _scale_cases() -> list[Case]:
    g = torch.Generator().manual_seed(20)
    cases = []
    for shape, std, mean in (((8, 4, 16, 16), 5.5, 0.7), ((4, 4, 32, 32), 0.3, -0.1), ((16, 4, 8, 8), 2.0, 1.5)):
        lat = torch.randn(shape, generator=g) * std + mean
        cases.append(Case((lat,), f"latents of shape {shape} with std ~{std}"))
    return cases


scaling_factor = Exercise(
    "ch02.scaling_factor", "the scale factor that gives the latents a standard deviation of 1",
    reference=_ref_scaling_factor, solution=_solution_scaling_factor, cases=_scale_cases, rtol=1e-3,
    fallback_name="the helpers' version (the demo VAE's calibration, 1 / std)",
    mistakes=[
        Mistake("That is the standard deviation itself: the factor is its inverse, 1 / std, so that "
                "latents * factor has std 1.", lambda x: float(x.std())),
        Mistake("A square root is missing: 1 / variance is not 1 / std (std = sqrt(variance)).",
                lambda x: float(1 / x.var())),
        Mistake("Use the standard deviation, not the mean absolute value: the noise the UNet removes has std 1.",
                lambda x: float(1 / x.abs().mean())),
        Mistake("Use the standard deviation, not the largest value (that would scale the latents into [-1, 1]).",
                lambda x: float(1 / x.abs().max())),
        Mistake("One factor for all latents, a float: the std over every value, not per channel.",
                lambda x: 1 / x.std(dim=(0, 2, 3))),
        Mistake("The root mean square includes the mean: use the standard deviation, 1 / latents.std().",
                lambda x: float(1 / x.pow(2).mean().sqrt())),
    ],
    hint="""torch's .std() over all values (no dim argument). Multiplying by the factor must give std 1, so the
    factor is 1 / std. Return a float (.item()).""",
    stub='''
    def scaling_factor(latents):
        """The factor k such that latents * k has standard deviation 1 (latents: a tensor [N, 4, h, w]);
        returns a float."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- PSNR
def _ref_psnr(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    mse = ((reconstructions.double() - images.double()) / 2).pow(2).mean(dim=(1, 2, 3))  # on the [0, 1] scale
    return torch.tensor([psnr_from_mse(float(m)) for m in mse], dtype=torch.float64)


def _solution_psnr(images, reconstructions):
    mse = ((reconstructions - images) / 2).pow(2).mean(dim=(1, 2, 3))   # /2: from [-1, 1] to the [0, 1] scale
    return 10 * torch.log10(1 / mse)                                   # one PSNR per image, in dB


def _psnr_cases() -> list[Case]:
    g = torch.Generator().manual_seed(21)
    cases = []
    for shape, noise in (((4, 3, 16, 16), 0.05), ((2, 3, 8, 12), 0.2), ((3, 3, 32, 32), 0.01)):
        x = torch.rand(shape, generator=g) * 2 - 1
        err = torch.randn(shape, generator=g) * noise * torch.rand(shape[0], 1, 1, 1, generator=g).add(0.5)
        cases.append(Case((x, (x + err).clamp(-1, 1)), f"images of shape {shape}, noise ~{noise}"))
    return cases


def _mse(x, y, scale=2.0):
    return ((y - x) / scale).pow(2).mean(dim=(1, 2, 3))


psnr = Exercise(
    "ch02.psnr", "the PSNR of each reconstruction, in dB",
    reference=_ref_psnr, solution=_solution_psnr, cases=_psnr_cases, rtol=1e-4, atol=1e-3,
    fallback_name="the helpers' version (helpers.frozen.psnr_from_mse)",
    mistakes=[
        Mistake("The images are in [-1, 1], a range of 2: divide the difference by 2 (the [0, 1] scale) before "
                "squaring. Your PSNR is 6.02 dB too low.", lambda x, y: 10 * torch.log10(1 / _mse(x, y, 1.0))),
        Mistake("PSNR is 10 log10(1 / MSE) (MSE is already a square): 20 log10 doubles it.",
                lambda x, y: 20 * torch.log10(1 / _mse(x, y))),
        Mistake("Decibels use log10, not the natural log.", lambda x, y: 10 * torch.log(1 / _mse(x, y))),
        Mistake("One PSNR per image: average the squared error over (C, H, W) only, not over the batch.",
                lambda x, y: 10 * torch.log10(1 / _mse(x, y).mean())),
        Mistake("Sign: PSNR = 10 log10(1 / MSE) = -10 log10(MSE): a good reconstruction has a HIGH PSNR.",
                lambda x, y: 10 * torch.log10(_mse(x, y))),
        Mistake("PSNR uses the squared error; you took the square root (the RMSE) inside the log.",
                lambda x, y: 10 * torch.log10(1 / _mse(x, y).sqrt())),
    ],
    hint="""Per image: mse = mean over (C, H, W) of ((reconstruction - image) / 2) ** 2 (the /2 maps the [-1, 1]
    range onto [0, 1], whose peak is 1); then 10 * log10(1 / mse).""",
    stub='''
    def psnr(images, reconstructions):
        """The PSNR in dB of each reconstruction: images and reconstructions [B, 3, H, W] in [-1, 1];
        returns a tensor [B] (higher is better)."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- question
compression = Question(
    "ch02.compression",
    "The course's VAE turns a 256×256×3 image into a 32×32×4 latent. How many times fewer numbers is that?",
    ["8 (the side shrinks 8 times)", "16", "48", "64 (8 × 8)"],
    answer="C",
    explanation=f"256·256·3 = {256 * 256 * 3:,} numbers against 32·32·4 = {32 * 32 * 4:,}: "
                f"{256 * 256 * 3 // (32 * 32 * 4)} times fewer (64 times fewer positions, each with 4 channels "
                f"instead of 3). The UNet runs on the latent: that is why latent diffusion is affordable.",
    feedback={"A": "The side shrinks 8 times, but an image has two sides, and the channels change too.",
              "D": "64 times fewer positions, yes, but each position has 4 numbers instead of 3."})

EXERCISES = [scaling_factor, psnr]
QUESTIONS = [compression]
