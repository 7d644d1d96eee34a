"""Chapter 04's exercises: the forward process, the v target, the min-SNR weights and the weighted loss.

Tensors as in chapter 04: ``x0`` and ``noise`` [B, C, h, w], ``alphas_cumprod`` [1000] (``sched.alphas_cumprod``),
``t`` a LongTensor [B]. Each check compares with the helpers' function that does the job in training:
``DDPMScheduler.add_noise`` / ``get_velocity`` (:func:`helpers.schedule.training_scheduler`),
:func:`helpers.training.losses.snr_weights` and :func:`helpers.training.losses.diffusion_loss`.

A chapter cell shows the exercise's ``stub`` (e.g. ``print(ch04.add_noise.stub)``), and the check cell continues
with the student's function or the helpers' version: ``add_noise = ch04.add_noise.use(add_noise,
solution=solutions)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.training.losses import diffusion_loss, snr_weights
from ._common import alphas_cumprod, latent_cases, per_sample, scheduler_for
from .core import Case, Exercise, Mistake, Question

__all__ = ["add_noise", "v_target", "min_snr_weights", "weighted_loss", "noise_at_999", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- add_noise
def _ref_add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
                   ) -> torch.Tensor:
    return scheduler_for(alphas_cumprod).add_noise(x0, noise, t)


def _solution_add_noise(x0, noise, alphas_cumprod, t):
    ab = alphas_cumprod[t].reshape(-1, 1, 1, 1)          # alpha_bar_t, one per sample, broadcast over C, h, w
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _noised(a: str, b: str, shift: int = 0, first_only: bool = False):
    """A wrong add_noise: ``a`` and ``b`` name the coefficients of x0 and noise as functions of alpha_bar."""
    coef = {"sqrt": torch.sqrt, "1-sqrt": lambda ab: 1 - ab.sqrt(), "sqrt1m": lambda ab: (1 - ab).sqrt(),
            "lin": lambda ab: ab, "1m": lambda ab: 1 - ab, "-sqrt1m": lambda ab: -(1 - ab).sqrt()}

    def wrong(x0, noise, ac, t):
        tt = t[:1].expand_as(t) if first_only else (t + shift).clamp(0, len(ac) - 1)
        ab = per_sample(ac, tt, x0)
        return coef[a](ab) * x0 + coef[b](ab) * noise
    return wrong


add_noise = Exercise(
    "ch04.add_noise", "the forward process x_t = sqrt(ab) x0 + sqrt(1 - ab) eps",
    reference=_ref_add_noise, solution=_solution_add_noise, cases=lambda: latent_cases(40),
    fallback_name="the helpers' version (noise_scheduler.add_noise)",
    mistakes=[
        Mistake("The coefficients need square roots: x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps. Without "
                "them the variances do not add up to 1.", _noised("lin", "1m")),
        Mistake("The halves are swapped: sqrt(alpha_bar) multiplies the clean latent x0 and sqrt(1 - alpha_bar) "
                "the noise (at t = 0 alpha_bar is ~1 and x_t is almost x0).", _noised("sqrt1m", "sqrt")),
        Mistake("The noise's coefficient is missing its square root: sqrt(1 - alpha_bar), not 1 - alpha_bar.",
                _noised("sqrt", "1m")),
        Mistake("The clean latent's coefficient is missing its square root: sqrt(alpha_bar), not alpha_bar.",
                _noised("lin", "sqrt1m")),
        Mistake("sqrt(1 - alpha_bar) is not 1 - sqrt(alpha_bar): take the square root of 1 - alpha_bar.",
                _noised("sqrt", "1-sqrt")),
        Mistake("Sign: the noise is added, x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps.",
                _noised("sqrt", "-sqrt1m")),
        Mistake("Off by one: timestep t uses alphas_cumprod[t] (indices 0..999), not t - 1.",
                _noised("sqrt", "sqrt1m", shift=-1)),
        Mistake("Off by one: timestep t uses alphas_cumprod[t] (indices 0..999), not t + 1.",
                _noised("sqrt", "sqrt1m", shift=1)),
        Mistake("Every sample has its own timestep: use alphas_cumprod[t] (one value per sample, reshaped to "
                "[B, 1, 1, 1]), not the first sample's t[0] for the whole batch.",
                _noised("sqrt", "sqrt1m", first_only=True)),
    ],
    hint="""alpha_bar = alphas_cumprod[t] has shape [B]: reshape it to [B, 1, 1, 1] so that it multiplies every
    value of its own sample. Then x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise (torch.sqrt or .sqrt()).""",
    stub='''
    def add_noise(x0, noise, alphas_cumprod, t):
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, with alpha_bar_t = alphas_cumprod[t].
        x0, noise: [B, C, h, w]; alphas_cumprod: [1000]; t: LongTensor [B]. Returns x_t [B, C, h, w]."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- v_target
def _ref_v_target(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
                  ) -> torch.Tensor:
    return scheduler_for(alphas_cumprod).get_velocity(x0, noise, t)


def _solution_v_target(x0, noise, alphas_cumprod, t):
    ab = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


def _velocity(a: str, b: str, shift: int = 0):
    """A wrong v: ``a`` and ``b`` name the coefficients of noise and x0."""
    coef = {"sqrt": torch.sqrt, "sqrt1m": lambda ab: (1 - ab).sqrt(), "lin": lambda ab: ab, "1m": lambda ab: 1 - ab,
            "-sqrt": lambda ab: -ab.sqrt(), "-sqrt1m": lambda ab: -(1 - ab).sqrt(), "-1m": lambda ab: -(1 - ab),
            "0": lambda ab: 0 * ab, "1": lambda ab: torch.ones_like(ab)}

    def wrong(x0, noise, ac, t):
        ab = per_sample(ac, (t + shift).clamp(0, len(ac) - 1), x0)
        return coef[a](ab) * noise + coef[b](ab) * x0
    return wrong


v_target = Exercise(
    "ch04.v_target", "the v-prediction target v = sqrt(ab) eps - sqrt(1 - ab) x0",
    reference=_ref_v_target, solution=_solution_v_target, cases=lambda: latent_cases(41),
    fallback_name="the helpers' version (noise_scheduler.get_velocity)",
    mistakes=[
        Mistake("The sign is flipped: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0, you computed its negative.",
                _velocity("-sqrt", "sqrt1m")),
        Mistake("That is the epsilon target (the noise itself): v mixes the noise and the clean latent, "
                "v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0.", _velocity("1", "0")),
        Mistake("The coefficients are swapped: sqrt(alpha_bar) multiplies the noise and sqrt(1 - alpha_bar) the "
                "clean latent x0.", _velocity("sqrt1m", "-sqrt")),
        Mistake("The coefficients need square roots: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0.",
                _velocity("lin", "-1m")),
        Mistake("Sign: x0 is subtracted, v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0.",
                _velocity("sqrt", "sqrt1m")),
        Mistake("That is x_t (the noisy latent), not v: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0.",
                _velocity("sqrt1m", "sqrt")),
        Mistake("Off by one: timestep t uses alphas_cumprod[t], not t - 1.", _velocity("sqrt", "-sqrt1m", -1)),
        Mistake("Off by one: timestep t uses alphas_cumprod[t], not t + 1.", _velocity("sqrt", "-sqrt1m", 1)),
    ],
    hint="""As in add_noise, alpha_bar = alphas_cumprod[t].reshape(-1, 1, 1, 1). v is the noise weighted by
    sqrt(alpha_bar) MINUS the clean latent weighted by sqrt(1 - alpha_bar): at t = 999 (alpha_bar ~ 0) v is ~ -x0,
    at t = 0 it is ~ the noise.""",
    stub='''
    def v_target(x0, noise, alphas_cumprod, t):
        """v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (the "v_prediction" target).
        x0, noise: [B, C, h, w]; alphas_cumprod: [1000]; t: LongTensor [B]. Returns v [B, C, h, w]."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- min-SNR
def _ref_min_snr(alphas_cumprod: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    return snr_weights(alphas_cumprod, gamma, prediction_type)


def _solution_min_snr_weights(alphas_cumprod, gamma, prediction_type):
    snr = alphas_cumprod.double() / (1 - alphas_cumprod.double())   # SNR_t = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)                                 # min(SNR_t, gamma)
    if prediction_type == "epsilon":
        return (clipped / snr).float()
    return (clipped / (snr + 1)).float()                           # "v_prediction"


def _weights(kind: str):
    def wrong(ac, gamma, prediction_type):
        ac = ac.double()
        s = ac / (1 - ac) if kind != "inverted" else (1 - ac) / ac
        low = torch.clamp(s, min=gamma) if kind == "max" else torch.clamp(s, max=gamma)
        if kind == "x0":
            return low.float()
        if kind == "no_min":
            low = gamma * torch.ones_like(s)
        eps = prediction_type == "epsilon"
        if kind == "always_eps":
            eps = True
        elif kind == "always_v":
            eps = False
        return (low / s if eps else low / (s + 1)).float()
    return wrong


def _min_snr_cases() -> list[Case]:
    ac = alphas_cumprod()
    return [Case((ac, gamma, kind), f"gamma = {gamma}, prediction_type = {kind!r}")
            for gamma, kind in ((5.0, "epsilon"), (5.0, "v_prediction"), (1.0, "v_prediction"), (20.0, "epsilon"))]


min_snr_weights = Exercise(
    "ch04.min_snr_weights", "the min-SNR-gamma loss weight of every timestep",
    reference=_ref_min_snr, solution=_solution_min_snr_weights, cases=_min_snr_cases, rtol=1e-3, atol=1e-6,
    fallback_name="the helpers' version (helpers.training.losses.snr_weights)",
    mistakes=[
        Mistake("That is the x0-space weight min(SNR, gamma): divide it by SNR for epsilon, by SNR + 1 for v.",
                _weights("x0")),
        Mistake("Use the minimum, min(SNR, gamma): the cap lowers the weight of the easy (low-noise) timesteps.",
                _weights("max")),
        Mistake("For v_prediction divide by SNR + 1, not by SNR (SNR is for epsilon).", _weights("always_eps")),
        Mistake("For epsilon divide by SNR, not by SNR + 1 (SNR + 1 is for v_prediction).", _weights("always_v")),
        Mistake("SNR is alpha_bar / (1 - alpha_bar) (signal over noise), not its inverse.", _weights("inverted")),
        Mistake("The min is missing: gamma / SNR exceeds 1 where SNR < gamma; the weight is min(SNR, gamma) / SNR.",
                _weights("no_min")),
    ],
    hint="""SNR = alphas_cumprod / (1 - alphas_cumprod) (compute in float64: 1 - alpha_bar is tiny at t = 0).
    min(SNR, gamma) is SNR.clamp(max=gamma). Divide by SNR for "epsilon", by SNR + 1 for "v_prediction".""",
    stub='''
    def min_snr_weights(alphas_cumprod, gamma, prediction_type):
        """The min-SNR-gamma weight of every timestep, a tensor [1000]:
        min(SNR, gamma) / SNR for "epsilon", min(SNR, gamma) / (SNR + 1) for "v_prediction"."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- weighted loss
class _Fixed(torch.nn.Module):
    """A stand-in UNet that returns a fixed prediction (so diffusion_loss computes the loss of ``pred``)."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        self.pred = pred

    def forward(self, x_t, t, encoder_hidden_states=None, return_dict=False):
        return (self.pred,)


def _ref_weighted_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, t: torch.Tensor
                       ) -> torch.Tensor:
    # diffusion_loss with prediction_type "epsilon" compares the UNet's prediction with `noise`: pass the target
    sched = scheduler_for(alphas_cumprod())
    return diffusion_loss(_Fixed(pred), sched, torch.zeros_like(target), target, t, None, "epsilon", weights)


def _solution_weighted_loss(pred, target, weights, t):
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))    # one MSE per sample [B]
    return (per_sample * weights[t]).mean()                     # weighted by its timestep, mean over the batch


def _loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(44)
    cases = []
    for shape in ((4, 4, 8, 8), (3, 4, 5, 7), (6, 4, 4, 4)):
        pred, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 1.5
        weights = torch.rand(1000, generator=g) * 2 + 0.1
        t = torch.randint(0, 1000, (shape[0],), generator=g)
        cases.append(Case((pred, target, weights, t), f"pred of shape {shape}, t = {t.tolist()}"))
    return cases


def _per(pred, target):
    return ((pred - target) ** 2).mean(dim=(1, 2, 3))


weighted_loss = Exercise(
    "ch04.weighted_loss", "the per-sample MSE, weighted by timestep, averaged over the batch",
    reference=_ref_weighted_loss, solution=_solution_weighted_loss, cases=_loss_cases,
    fallback_name="the helpers' version (helpers.training.losses.diffusion_loss)",
    mistakes=[
        Mistake("The weights are missing: multiply each sample's MSE by weights[t[i]] before the batch mean.",
                lambda p, y, w, t: F.mse_loss(p, y)),
        Mistake("Weight each sample before averaging: mean(mse_i * w[t_i]), not mean(mse_i) * mean(w[t_i]).",
                lambda p, y, w, t: _per(p, y).mean() * w[t].mean()),
        Mistake("Index the weights by the timesteps, weights[t], not by the position in the batch (weights[:B]).",
                lambda p, y, w, t: (_per(p, y) * w[:len(t)]).mean()),
        Mistake("Average over C, h and w (a mean squared error), do not sum.",
                lambda p, y, w, t: (((p - y) ** 2).sum(dim=(1, 2, 3)) * w[t]).mean()),
        Mistake("Sum over the batch: take the mean of the weighted per-sample losses instead.",
                lambda p, y, w, t: (_per(p, y) * w[t]).sum()),
        Mistake("That is a root mean square: the loss is the MSE itself, no square root.",
                lambda p, y, w, t: (_per(p, y).sqrt() * w[t]).mean()),
        Mistake("That is an absolute (L1) error: square the differences.",
                lambda p, y, w, t: ((p - y).abs().mean(dim=(1, 2, 3)) * w[t]).mean()),
    ],
    hint="""Three steps: the squared error averaged over dims (1, 2, 3) gives one number per sample [B];
    multiply by weights[t] (also [B]); take the mean over the batch.""",
    stub='''
    def weighted_loss(pred, target, weights, t):
        """mean_i( w[t_i] * MSE(pred_i, target_i) ): pred, target [B, C, h, w]; weights [1000]; t [B].
        Returns a scalar tensor."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- question
noise_at_999 = Question(
    "ch04.noise_at_999",
    "At t = 999 (the last timestep of the schedule), what does x_t = add_noise(x0, noise, t) look like?",
    ["The sprite, slightly blurred",
     "Almost pure Gaussian noise: the sprite is barely there",
     "A black (all-zero) latent",
     "The sprite at half contrast plus half noise"],
    answer="B",
    explanation="alpha_bar_999 is about 0.0047 in the workbook's schedule, so x_t = 0.07 x0 + 0.998 eps: the "
                "signal is ~7 % of the noise's scale. (Decoded, the VAE still finds an outline in those 7 %: the "
                "schedule never quite reaches pure noise.) Sampling starts from pure noise at t = 999.",
    feedback={"D": "Half and half is the middle of the schedule, around t = 500 or so.",
              "C": "Noise is not zero: x_t keeps unit variance at every t."})

EXERCISES = [add_noise, v_target, min_snr_weights, weighted_loss]
QUESTIONS = [noise_at_999]
