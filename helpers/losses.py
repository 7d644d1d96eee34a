"""The training loss of a latent diffusion model: what the UNet must predict and how far off it is.

For a clean latent ``x0``, Gaussian noise ``eps`` and a timestep ``t`` with ``alpha_bar = alphas_cumprod[t]``:

- the noisy input is ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` (``noise_scheduler.add_noise``);
- the target is ``eps`` (``prediction_type="epsilon"``) or ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0``
  (``"v_prediction"``, ``noise_scheduler.get_velocity``);
- the loss is the per-sample MSE between the UNet's prediction and the target, weighted per timestep by
  min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"), with
  ``SNR(t) = alpha_bar / (1 - alpha_bar)``: ``min(SNR, gamma) / SNR`` for epsilon and ``min(SNR, gamma) / (SNR + 1)``
  for v (both equal the x0-space weight ``min(SNR, gamma)``), then the mean over the batch.

:func:`diffusion_loss` is the function the training loop (:func:`helpers.train.train_step`) calls; chapter 04
writes the same maths out by hand and checks it against this one.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from .schedule import PREDICTION_TYPES

__all__ = ["snr", "snr_weights", "diffusion_target", "diffusion_loss"]


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
