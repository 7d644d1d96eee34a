"""The training loss of a latent diffusion model: what the UNet must predict and how far off it is.

For a clean latent ``x0``, Gaussian noise ``eps`` and a timestep ``t`` with ``alpha_bar = alphas_cumprod[t]``:

- the noisy input is ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` (``noise_scheduler.add_noise``);
- the target is ``eps`` (``prediction_type="epsilon"``) or ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0``
  (``"v_prediction"``, ``noise_scheduler.get_velocity``);
- the loss is the per-sample MSE between the UNet's prediction and the target, weighted per timestep by
  min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"), with
  ``SNR(t) = alpha_bar / (1 - alpha_bar)``: ``min(SNR, gamma) / SNR`` for epsilon and ``min(SNR, gamma) / (SNR + 1)``
  for v (both equal the x0-space weight ``min(SNR, gamma)``), then the mean over the batch.

:func:`diffusion_loss` is the function the training loop (:func:`helpers.training.train_step`) calls; chapter 04
writes the same maths out by hand and checks it against this one.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from helpers.schedule import PREDICTION_TYPES

__all__ = ["snr", "snr_weights", "loss_weights", "sample_timesteps", "diffusion_target", "diffusion_loss",
           "LOSS_WEIGHTINGS", "TIMESTEP_SAMPLINGS"]

#: How the per-sample losses are weighted by timestep (``TrainConfig.loss_weighting``).
LOSS_WEIGHTINGS = ("min_snr", "soft_min_snr", "none")
#: How the training timesteps are drawn (``TrainConfig.timestep_sampling``).
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")


def snr(alphas_cumprod: Tensor) -> Tensor:
    """The signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` of every timestep, in float64."""
    ac = alphas_cumprod.double()
    return ac / (1 - ac)


def snr_weights(alphas_cumprod: Tensor, gamma: float | None, prediction_type: str) -> Tensor | None:
    """min-SNR-gamma loss weights per timestep ``[T]`` (float32), or None when ``gamma`` is None (plain MSE).

    ``min(SNR, gamma) / SNR`` for ``"epsilon"``, ``min(SNR, gamma) / (SNR + 1)`` for ``"v_prediction"``.
    """
    _check_prediction_type(prediction_type)
    if gamma is None:
        return None
    s = snr(alphas_cumprod)
    clipped = torch.clamp(s, max=float(gamma))
    weights = clipped / s if prediction_type == "epsilon" else clipped / (s + 1)
    return weights.float()


def loss_weights(alphas_cumprod: Tensor, weighting: str, gamma: float | None, prediction_type: str
                 ) -> Tensor | None:
    """Per-timestep loss weights ``[T]`` (float32) of a weighting in :data:`LOSS_WEIGHTINGS`, or None (plain MSE).

    - ``"min_snr"``: :func:`snr_weights`, the x0-space weight ``min(SNR, gamma)`` (Hang et al. 2023);
    - ``"soft_min_snr"``: its smooth version, the x0-space weight ``gamma SNR / (gamma + SNR)`` (the soft-min-SNR
      weighting of Crowson et al. 2024; for epsilon it is ``gamma / (gamma + SNR)``, Choi et al. 2022's P2 weighting
      with k = gamma and exponent 1, up to the factor gamma);
    - ``"none"`` (or ``gamma`` None): no weights.
    """
    _check_prediction_type(prediction_type)
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, not {weighting!r}")
    if weighting == "none" or gamma is None:
        return None
    if weighting == "min_snr":
        return snr_weights(alphas_cumprod, gamma, prediction_type)
    s = snr(alphas_cumprod)
    x0_weight = float(gamma) * s / (float(gamma) + s)
    return (x0_weight / s if prediction_type == "epsilon" else x0_weight / (s + 1)).float()


def sample_timesteps(n: int, num_train_timesteps: int, generator: torch.Generator, *, sampling: str = "uniform",
                     loc: float = 0.0, scale: float = 1.0) -> Tensor:
    """``n`` training timesteps (long, on the generator's device), drawn with ``generator``.

    - ``"uniform"``: uniform in ``[0, T)`` (DDPM, Stable Diffusion);
    - ``"logit_normal"``: ``t / T = sigmoid(u)`` with ``u ~ N(loc, scale)`` (Esser et al. 2024, Stable Diffusion 3):
      more of the middle timesteps, where the denoising task is neither trivial nor hopeless, fewer of both ends.
    """
    if sampling not in TIMESTEP_SAMPLINGS:
        raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, not {sampling!r}")
    device = generator.device
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (n,), generator=generator, device=device)
    u = torch.randn(n, generator=generator, device=device) * float(scale) + float(loc)
    return (torch.sigmoid(u) * num_train_timesteps).long().clamp_(0, num_train_timesteps - 1)


def diffusion_target(noise_scheduler, x0: Tensor, noise: Tensor, t: Tensor, prediction_type: str) -> Tensor:
    """What the UNet learns to predict: the noise (``"epsilon"``) or the velocity ``v`` (``"v_prediction"``)."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    return noise_scheduler.get_velocity(x0, noise, t)


def diffusion_loss(unet, noise_scheduler, x0: Tensor, noise: Tensor, t: Tensor, cond: Tensor, prediction_type: str,
                   weights: Tensor | None = None, *, autocast: AbstractContextManager | None = None) -> Tensor:
    """The mean over the batch of the (weighted) per-sample MSE of the UNet's prediction: a differentiable scalar.

    - ``x0`` [B, C, h, w] scaled clean latents, ``noise`` like it, ``t`` [B] timesteps, ``cond`` [B, L, D] text
      embeddings; ``unet`` may be wrapped (DDP).
    - ``weights``: per-timestep weights ``[T]`` (e.g. :func:`snr_weights`); sample i is weighted by ``weights[t[i]]``.
    - ``autocast``: a context manager for the UNet forward only (e.g. ``torch.autocast("cuda", torch.bfloat16)``);
      noising, target and the MSE stay in float32.
    """
    x_t = noise_scheduler.add_noise(x0, noise, t)
    target = diffusion_target(noise_scheduler, x0, noise, t, prediction_type)
    with autocast if autocast is not None else nullcontext():
        pred = unet(x_t, t, encoder_hidden_states=cond, return_dict=False)[0]
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    if weights is not None:
        per_sample = per_sample * weights[t]
    return per_sample.mean()
