"""Chapter 05's exercises: classifier-free guidance, x̂₀ from a v prediction, one DDIM step.

Tensors as in chapter 05: predictions and latents [B, C, h, w], ``alphas_cumprod`` [1000], ``t`` a LongTensor [B]
(:data:`x0_from_v`) or one int for the whole batch (:data:`ddim_step`, as the sampling loop). The references are
:func:`helpers.generation.apply_guidance` (what ``sample_latents`` runs) and diffusers' ``DDIMScheduler.step``
(:func:`helpers.schedule.sampling_scheduler`): its ``pred_original_sample`` and ``prev_sample``.

A chapter's check cell continues with the student's function or the helpers' version:
``guidance = ch05.guidance.use(guidance, solution=solutions)``.
"""

from __future__ import annotations

import torch

from helpers.generation.sampling import apply_guidance
from ._common import SHAPES, alphas_cumprod, ddim, latent_cases, per_sample, scheduler_for
from .core import Case, Exercise, Mistake, Question

__all__ = ["guidance", "x0_from_v", "ddim_step", "guidance_grows", "attention_words", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- guidance
def _ref_guidance(pred_uncond: torch.Tensor, pred_cond: torch.Tensor, scale: float) -> torch.Tensor:
    return apply_guidance(pred_uncond, pred_cond, scale)


def _solution_guidance(pred_uncond, pred_cond, scale):
    return pred_uncond + scale * (pred_cond - pred_uncond)     # move `scale` times from uncond towards cond


def _guidance_cases() -> list[Case]:
    g = torch.Generator().manual_seed(50)
    cases = []
    for shape, scale in zip(SHAPES, (7.5, 3.0, 1.0, 0.0)):
        u, c = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(Case((u, c, scale), f"predictions of shape {shape}, scale = {scale}"))
    return cases


guidance = Exercise(
    "ch05.guidance", "classifier-free guidance: uncond + scale (cond - uncond)",
    reference=_ref_guidance, solution=_solution_guidance, cases=_guidance_cases,
    fallback_name="the helpers' version (helpers.generation.apply_guidance)",
    mistakes=[
        Mistake("The halves are swapped: start from the UNconditional prediction and move towards the conditional "
                "one, pred_uncond + scale * (pred_cond - pred_uncond).",
                lambda u, c, s: c + s * (u - c)),
        Mistake("The scale multiplies the wrong term: it scales the difference (pred_cond - pred_uncond), "
                "not pred_uncond.", lambda u, c, s: s * u + (c - u)),
        Mistake("The scale multiplies the wrong term: it scales the difference (pred_cond - pred_uncond), "
                "not pred_cond alone.", lambda u, c, s: u + s * c - u),
        Mistake("pred_uncond is missing in front: guided = pred_uncond + scale * (pred_cond - pred_uncond).",
                lambda u, c, s: s * (c - u)),
        Mistake("Sign: guidance moves TOWARDS the conditional prediction (+ scale * (cond - uncond)).",
                lambda u, c, s: u - s * (c - u)),
        Mistake("The scale is ignored: your result is the conditional prediction at every scale (right only at "
                "scale 1).", lambda u, c, s: c),
        Mistake("That is the average of the two predictions: the scale decides the mix, "
                "pred_uncond + scale * (pred_cond - pred_uncond).", lambda u, c, s: (u + c) / 2),
    ],
    hint="""Start at pred_uncond and walk `scale` times the step from pred_uncond to pred_cond. Scale 1 must give
    pred_cond exactly, scale 0 pred_uncond; above 1 it goes past pred_cond.""",
    stub='''
    def guidance(pred_uncond, pred_cond, scale):
        """Classifier-free guidance: the guided prediction from the unconditional and conditional predictions
        (tensors [B, C, h, w]) and the guidance scale (a float)."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- x0 from v
def _ref_x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor
                   ) -> torch.Tensor:
    """DDIMScheduler.step's own estimate of the clean latent, one sample (its own timestep) at a time."""
    sched = ddim("v_prediction", 50)
    sched.alphas_cumprod = scheduler_for(alphas_cumprod).alphas_cumprod
    out = [sched.step(v[i:i + 1], int(t[i]), x_t[i:i + 1]).pred_original_sample for i in range(len(t))]
    return torch.cat(out)


def _solution_x0_from_v(x_t, v, alphas_cumprod, t):
    ab = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return ab.sqrt() * x_t - (1 - ab).sqrt() * v     # x_t = sqrt(ab) x0 + sqrt(1-ab) eps, v = sqrt(ab) eps - ...


def _x0(kind: str, shift: int = 0):
    def wrong(x_t, v, ac, t):
        ab = per_sample(ac, (t + shift).clamp(0, len(ac) - 1), x_t)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        return {"ok": a * x_t - b * v, "sign": a * x_t + b * v, "swap": b * x_t - a * v,
                "eps": (x_t - b * v) / a, "nosqrt": ab * x_t - (1 - ab) * v}[kind]
    return wrong


x0_from_v = Exercise(
    "ch05.x0_from_v", "the clean-latent estimate x̂₀ from a v prediction",
    reference=_ref_x0_from_v, solution=_solution_x0_from_v, cases=lambda: latent_cases(51), atol=1e-4,
    fallback_name="the helpers' version (DDIMScheduler.step's pred_original_sample)",
    mistakes=[
        Mistake("Sign: x̂₀ = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v (v carries -x0, so it is subtracted).",
                _x0("sign")),
        Mistake("The coefficients are swapped: sqrt(alpha_bar) multiplies x_t and sqrt(1 - alpha_bar) the "
                "prediction v.", _x0("swap")),
        Mistake("That is x̂₀ from an epsilon prediction, (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar): with v "
                "it is sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v.", _x0("eps")),
        Mistake("The coefficients need square roots: sqrt(alpha_bar) and sqrt(1 - alpha_bar).", _x0("nosqrt")),
        Mistake("Off by one: timestep t uses alphas_cumprod[t], not t - 1.", _x0("ok", -1)),
        Mistake("Off by one: timestep t uses alphas_cumprod[t], not t + 1.", _x0("ok", 1)),
    ],
    hint="""Write x_t = a x0 + b eps and v = a eps - b x0 with a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar) and
    a² + b² = 1. Multiply the first by a, the second by b and subtract: a x_t - b v = x0.""",
    stub='''
    def x0_from_v(x_t, v, alphas_cumprod, t):
        """The clean latent the UNet's v prediction implies: x_t, v [B, C, h, w]; alphas_cumprod [1000];
        t: LongTensor [B]. Returns x0_hat [B, C, h, w]."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- DDIM step
def _ref_ddim_step(x_t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor, t: int, t_prev: int
                   ) -> torch.Tensor:
    """DDIMScheduler.step (eta 0) from t to t_prev, with as many steps as make its stride t - t_prev."""
    if not 0 <= t_prev < t:
        raise ValueError(f"need 0 <= t_prev < t, got t={t}, t_prev={t_prev}")
    sched = ddim("epsilon", 1)
    sched.alphas_cumprod = scheduler_for(alphas_cumprod).alphas_cumprod
    sched.num_inference_steps = sched.config.num_train_timesteps // (t - t_prev)  # step() strides by 1000 // this
    if t - sched.config.num_train_timesteps // sched.num_inference_steps != t_prev:
        raise ValueError(f"t - t_prev = {t - t_prev} must divide 1000 (a DDIM stride)")
    return sched.step(eps, int(t), x_t, eta=0.0).prev_sample


def _solution_ddim_step(x_t, eps, alphas_cumprod, t, t_prev):
    ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t_prev]
    x0_hat = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()              # the clean latent eps implies
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps     # re-noised to the level of t_prev


def _ddim_cases() -> list[Case]:
    g = torch.Generator().manual_seed(52)
    ac = alphas_cumprod()
    cases = []
    for shape, (t, stride) in zip(SHAPES, ((999, 50), (499, 20), (59, 20), (300, 100))):
        x, e = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(Case((x, e, ac, t, t - stride), f"latents of shape {shape}, t = {t}, t_prev = {t - stride}"))
    return cases


def _ddim(kind: str):
    def wrong(x_t, eps, ac, t, t_prev):
        ab, ap = ac[t].double(), ac[t_prev].double()
        if kind == "swap_t":
            ab, ap = ap, ab
        sign = -1 if kind == "x0_sign" else 1
        x0 = (x_t - sign * (1 - ab).sqrt() * eps) / ab.sqrt()
        if kind == "nosqrt":
            x0 = (x_t - (1 - ab) * eps) / ab
            return (ap * x0 + (1 - ap) * eps).float()
        noise_coef = {"same_noise": (1 - ab).sqrt(), "no_noise": 0 * ab, "x0": 0 * ab}.get(kind, (1 - ap).sqrt())
        signal_coef = 1 + 0 * ab if kind == "x0" else ap.sqrt()
        return (signal_coef * x0 + noise_coef * eps).float()
    return wrong


ddim_step = Exercise(
    "ch05.ddim_step", "one deterministic DDIM step from t to t_prev (epsilon prediction)",
    reference=_ref_ddim_step, solution=_solution_ddim_step, cases=_ddim_cases, atol=1e-4,
    fallback_name="the helpers' version (DDIMScheduler.step, eta = 0)",
    mistakes=[
        Mistake("x̂₀ has the wrong sign: x̂₀ = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).",
                _ddim("x0_sign")),
        Mistake("The noise direction must use alpha_bar of t_prev: sqrt(1 - alpha_bar_prev) eps, not "
                "sqrt(1 - alpha_bar_t) eps.", _ddim("same_noise")),
        Mistake("The noise term is missing: DDIM re-noises x̂₀ to the level of t_prev, "
                "x_prev = sqrt(alpha_bar_prev) x̂₀ + sqrt(1 - alpha_bar_prev) eps.", _ddim("no_noise")),
        Mistake("You returned x̂₀, the clean estimate: one step only goes to t_prev, "
                "x_prev = sqrt(alpha_bar_prev) x̂₀ + sqrt(1 - alpha_bar_prev) eps.", _ddim("x0")),
        Mistake("t and t_prev are swapped: x̂₀ uses alpha_bar_t (the current noise level), the re-noising "
                "alpha_bar_prev (the next, lower one).", _ddim("swap_t")),
        Mistake("The coefficients need square roots: sqrt(alpha_bar) and sqrt(1 - alpha_bar), in both halves.",
                _ddim("nosqrt")),
    ],
    hint="""Two lines. First the clean latent the noise prediction implies: solve x_t = sqrt(ab_t) x0 +
    sqrt(1 - ab_t) eps for x0. Then put it back at the next noise level with the SAME eps: sqrt(ab_prev) x0_hat +
    sqrt(1 - ab_prev) eps, where ab_prev = alphas_cumprod[t_prev].""",
    stub='''
    def ddim_step(x_t, eps, alphas_cumprod, t, t_prev):
        """One deterministic DDIM step (eta = 0): the latent at t_prev from the latent x_t at t and the
        predicted noise eps (both [B, C, h, w]); t and t_prev are ints (one timestep for the whole batch)."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- question
guidance_grows = Question(
    "ch05.guidance_grows",
    "Same prompt, same seed: what happens to the images as the guidance scale grows from 1 to 12?",
    ["Nothing visible: the scale only changes how fast sampling converges",
     "They follow the prompt more closely and look more alike; at large scales colours saturate and shapes "
     "distort",
     "They become more varied and creative",
     "They turn into noise as soon as the scale passes 2"],
    answer="B",
    explanation="guidance extrapolates past the conditional prediction: the prompt's features are exaggerated "
                "(adherence rises, diversity falls) until the latents leave the range the UNet was trained on: "
                "over-saturated colours and broken shapes. The demo scores best at 2-3, the course's FID near 3.",
    feedback={"A": "The scale changes the prediction itself at every step, not the number of steps.",
              "C": "Variety shrinks: every seed is pushed towards the same 'most prompt-like' image."})

attention_words = Question(
    "ch05.attention_words",
    "The heat maps below show where each word of a prompt sends the image's attention, summed over the sampling "
    "steps. For a model that has learned its captions, where should a colour word such as 'red' look?",
    ["Evenly over the whole image: attention spreads over every pixel alike",
     "Mostly on the background, the part of the image the caption does not describe",
     "Mostly on the creature's body, where that colour is painted",
     "Only on the first few pixels of the top row: attention follows the order of the words"],
    answer="C",
    explanation="cross-attention is how a word reaches a pixel: a pixel whose query matches the word's key takes "
                "that word's value. Once the model has learned 'red', the pixels that become red are the ones that "
                "listen to it. A map spread evenly, or on the background, means the model has not learned the word "
                "yet (or it is a word the captions rarely vary, such as 'a').",
    feedback={"A": "Even spread is what an untrained model shows: every pixel listens to every word alike.",
              "D": "Attention has no notion of word order in the image; positions come from the text encoder."})

EXERCISES = [guidance, x0_from_v, ddim_step]
QUESTIONS = [guidance_grows, attention_words]
