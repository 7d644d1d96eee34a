"""helpers.training.losses and helpers.training.train_step against the maths written out by hand.

The min-SNR-gamma weights against their closed form (SNR computed from the betas here), the v target against
``sqrt(ab) eps - sqrt(1 - ab) x0``, the loss against a by-hand weighted MSE, and one optimizer step done by hand
(noise, target, forward, weighted MSE, accumulation, clipping, AdamW, EMA) against ``train_step``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers.training import losses
from helpers.schedule import default_scheduler_config, training_scheduler
from helpers.training import Batch, TrainConfig, build_train_parts, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

TIMESTEPS = [0, 10, 100, 400, 700, 999]


def by_hand_alphas_cumprod() -> torch.Tensor:
    """Stable Diffusion's scaled_linear betas (0.00085 ... 0.012 over 1000 steps), accumulated, in float64."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


@pytest.fixture(scope="module")
def scheduler():
    return training_scheduler(default_scheduler_config("v_prediction"))


def test_the_scheduler_uses_the_betas_written_out_here(scheduler):
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), by_hand_alphas_cumprod(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weights_follow_the_closed_form(scheduler, prediction_type, gamma):
    weights = losses.snr_weights(scheduler.alphas_cumprod, gamma, prediction_type)
    assert weights.dtype == torch.float32 and weights.shape == (1000,)
    ab = by_hand_alphas_cumprod()
    for t in TIMESTEPS:
        snr = float(ab[t] / (1 - ab[t]))
        expected = min(snr, gamma) / (snr if prediction_type == "epsilon" else snr + 1)
        assert float(weights[t]) == pytest.approx(expected, rel=1e-4), t
    # the shape of the curve: epsilon weights are 1 where SNR <= gamma (noisy end), v weights SNR/(SNR+1) there
    if prediction_type == "epsilon":
        assert float(weights[999]) == pytest.approx(1.0) and float(weights[0]) < 0.01
    else:
        snr_999 = float(ab[999] / (1 - ab[999]))
        assert float(weights[999]) == pytest.approx(snr_999 / (snr_999 + 1), rel=1e-4)
    assert losses.snr_weights(scheduler.alphas_cumprod, None, prediction_type) is None


def test_snr_is_alpha_bar_over_one_minus_alpha_bar(scheduler):
    s = losses.snr(scheduler.alphas_cumprod)
    ab = scheduler.alphas_cumprod.double()
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, ab / (1 - ab))


def test_v_target_is_the_velocity(scheduler):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(len(TIMESTEPS), 4, 8, 8, generator=g), torch.randn(len(TIMESTEPS), 4, 8, 8, generator=g)
    t = torch.tensor(TIMESTEPS)
    v = losses.diffusion_target(scheduler, x0, eps, t, "v_prediction")
    torch.testing.assert_close(v, scheduler.get_velocity(x0, eps, t))
    ab = by_hand_alphas_cumprod()[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-5, rtol=1e-5)
    assert losses.diffusion_target(scheduler, x0, eps, t, "epsilon") is eps
    with pytest.raises(ValueError, match="prediction_type"):
        losses.diffusion_target(scheduler, x0, eps, t, "x0")


class Linear1x1(torch.nn.Module):
    """A stand-in denoiser (a 1x1 convolution plus the mean of the text embedding): exact, fast, differentiable."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x, t, encoder_hidden_states, return_dict=True):
        out = self.conv(x) + encoder_hidden_states.mean() + 0.001 * t.float().view(-1, 1, 1, 1)
        return (out,)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_is_the_weighted_mse_written_out(scheduler, prediction_type):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    cond, t = torch.randn(6, 77, 16, generator=g), torch.tensor(TIMESTEPS)
    unet = Linear1x1()
    weights = losses.snr_weights(scheduler.alphas_cumprod, 5.0, prediction_type)
    loss = losses.diffusion_loss(unet, scheduler, x0, eps, t, cond, prediction_type, weights)

    ab = by_hand_alphas_cumprod()[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    target = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
    pred = unet(x_t, t, encoder_hidden_states=cond)[0]
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert loss.shape == () and loss.requires_grad
    torch.testing.assert_close(loss, (per_sample * weights[t]).mean(), atol=1e-5, rtol=1e-5)
    plain = losses.diffusion_loss(unet, scheduler, x0, eps, t, cond, prediction_type)
    torch.testing.assert_close(plain, per_sample.mean(), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- one step by hand
def step_config(**overrides) -> TrainConfig:
    base = dict(unet_preset="tiny", batch_size=2, grad_accum=2, lr=1e-3, warmup_steps=0, lr_schedule="constant",
                prediction_type="v_prediction", snr_gamma=5.0, max_grad_norm=0.05, mixed_precision="no", ema=True,
                ema_decay=0.999, ema_warmup=True, weight_decay=1e-2, device="cpu", seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def random_batch(seed: int, n: int = 4, hidden: int = 32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(latents=torch.randn(n, 4, 8, 8, generator=g), text=torch.randn(n, 77, hidden, generator=g),
                 noise=torch.randn(n, 4, 8, 8, generator=g), timesteps=torch.randint(0, 1000, (n,), generator=g))


def step_by_hand(unet, scheduler, optimizer, shadow, config: TrainConfig, batch: Batch, step: int
                 ) -> tuple[float, float]:
    """One optimizer step written out (v-prediction, min-SNR weights, accumulation, clipping, AdamW, EMA): returns
    (loss, grad norm before clipping) and updates ``shadow`` (the EMA weights) in place."""
    ab_all = scheduler.alphas_cumprod.double()
    total = 0.0
    for k in range(config.grad_accum):
        mb = slice(k * config.batch_size, (k + 1) * config.batch_size)
        x0, eps, t, cond = batch.latents[mb], batch.noise[mb], batch.timesteps[mb], batch.text[mb]
        x_t = scheduler.add_noise(x0, eps, t)
        v = scheduler.get_velocity(x0, eps, t)
        pred = unet(x_t, t, encoder_hidden_states=cond).sample
        snr = ab_all[t] / (1 - ab_all[t])
        weight = (torch.clamp(snr, max=config.snr_gamma) / (snr + 1)).float()
        loss = (F.mse_loss(pred, v, reduction="none").mean(dim=(1, 2, 3)) * weight).mean() / config.grad_accum
        loss.backward()
        total += loss.item()
    norm = float(torch.nn.utils.clip_grad_norm_(unet.parameters(), config.max_grad_norm))
    optimizer.step()
    optimizer.zero_grad()
    decay = 0.0 if step == 1 else min(config.ema_decay, 1 - (1 + (step - 1) / config.ema_inv_gamma) ** -config.ema_power)
    with torch.no_grad():
        for s, p in zip(shadow, unet.parameters()):
            s.mul_(decay).add_(p, alpha=1 - decay)
    return total, norm


def test_one_step_by_hand_equals_train_step():
    config = step_config()
    parts = build_train_parts(config, (4, 8, 8), 32, "cpu")
    unet = copy.deepcopy(parts.unet)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                                  eps=config.adam_eps, weight_decay=config.weight_decay)
    shadow = [p.detach().clone() for p in unet.parameters()]
    for step in (1, 2):  # two steps: the EMA's first decay is 0, AdamW's moments start at 0
        batch = random_batch(step)
        loss, norm = step_by_hand(unet, parts.noise_scheduler, optimizer, shadow, config, batch, step)
        stats = train_step(parts, batch, config)
        assert norm > config.max_grad_norm  # the clipping was used
        assert float(stats.loss) == pytest.approx(loss, rel=1e-5)
        assert float(stats.grad_norm) == pytest.approx(norm, rel=1e-5)
        assert stats.lr == pytest.approx(config.lr)
        for (name, a), b in zip(parts.unet.named_parameters(), unet.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), f"step {step}: {name} differs"
        for (name, _), a, b in zip(parts.unet.named_parameters(), parts.ema.shadow_params, shadow):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), f"step {step}: EMA of {name} differs"
    assert all(p.grad is None for p in parts.params)  # zero_grad(set_to_none=True)


def test_train_step_refuses_a_batch_of_the_wrong_size_and_a_non_finite_loss():
    from helpers.training import NonFiniteLossError

    config = step_config(ema=False)
    parts = build_train_parts(config, (4, 8, 8), 32, "cpu")
    with pytest.raises(ValueError, match=r"batch_size x grad_accum = 2 x 2 = 4 samples, not 6"):
        train_step(parts, random_batch(0, n=6), config)
    before = [p.detach().clone() for p in parts.params]
    bad = random_batch(0)
    bad.latents[0, 0, 0, 0] = math.inf
    with pytest.raises(NonFiniteLossError) as err:
        train_step(parts, bad, config)
    assert err.value.what == "loss" and not math.isfinite(err.value.value)
    assert all(torch.equal(a, b) for a, b in zip(before, parts.params))  # nothing applied
    assert all(p.grad is None for p in parts.params)  # and the gradients dropped


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_soft_min_snr_and_no_weights_follow_their_closed_forms(scheduler, prediction_type):
    ab = by_hand_alphas_cumprod()
    gamma = 5.0
    soft = losses.loss_weights(scheduler.alphas_cumprod, "soft_min_snr", gamma, prediction_type)
    mins = losses.loss_weights(scheduler.alphas_cumprod, "min_snr", gamma, prediction_type)
    for t in TIMESTEPS:
        s = (ab[t] / (1 - ab[t])).item()
        x0_weight = gamma * s / (gamma + s)  # a smooth min(SNR, gamma)
        expected = x0_weight / s if prediction_type == "epsilon" else x0_weight / (s + 1)
        assert soft[t].item() == pytest.approx(expected, rel=1e-4)
        assert soft[t].item() < mins[t].item()  # below the hard minimum everywhere
    assert losses.loss_weights(scheduler.alphas_cumprod, "none", gamma, prediction_type) is None
    assert losses.loss_weights(scheduler.alphas_cumprod, "min_snr", None, prediction_type) is None
    with pytest.raises(ValueError, match="loss_weighting"):
        losses.loss_weights(scheduler.alphas_cumprod, "p3", gamma, prediction_type)


def test_logit_normal_timesteps_favour_the_middle_and_are_reproducible():
    n, T = 20_000, 1000
    uniform = losses.sample_timesteps(n, T, torch.Generator().manual_seed(0))
    ln = losses.sample_timesteps(n, T, torch.Generator().manual_seed(0), sampling="logit_normal")
    again = losses.sample_timesteps(n, T, torch.Generator().manual_seed(0), sampling="logit_normal")
    assert torch.equal(ln, again) and ln.dtype == torch.long and 0 <= int(ln.min()) and int(ln.max()) < T
    middle = lambda t: ((t >= 250) & (t < 750)).float().mean().item()  # noqa: E731
    # P(|u| < logit(0.75) = 1.0986) for u ~ N(0, 1) is 0.7275; uniform puts half of the timesteps there
    assert middle(ln) == pytest.approx(0.7275, abs=0.015) and middle(uniform) == pytest.approx(0.5, abs=0.015)
    shifted = losses.sample_timesteps(n, T, torch.Generator().manual_seed(0), sampling="logit_normal", loc=1.0)
    assert shifted.float().mean() > ln.float().mean() + 100  # loc > 0: noisier timesteps
    with pytest.raises(ValueError, match="timestep_sampling"):
        losses.sample_timesteps(4, T, torch.Generator(), sampling="beta")


def test_a_config_saved_before_the_new_fields_resumes_with_their_defaults():
    old = TrainConfig(run_name="x").to_dict()
    for name in ("loss_weighting", "timestep_sampling", "timestep_loc", "timestep_scale"):
        old.pop(name)
    assert TrainConfig(run_name="x").differences(old) == {}
    assert "loss_weighting" in TrainConfig(run_name="x", loss_weighting="none").differences(old)
