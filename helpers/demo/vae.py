"""The demo stack's small VAE: an ``AutoencoderKL`` trained here on the data at hand (any data set).

Stable Diffusion's VAE was trained once and frozen; the demo does the same at toy scale: ``train_demo_vae`` trains a
small ``AutoencoderKL`` (64 px images -> 16x16x4 latents), then sets ``scaling_factor`` = 1 / std of the training
latents (the way SD's 0.18215 was chosen) so that scaled latents have std ~ 1, and saves it with ``save_pretrained``
(safetensors) plus a ``training_report.json``. ``ensure_demo_vae(profile)`` trains it once and reuses it
afterwards; ``helpers.frozen.load_vae`` loads it like any other VAE.

Where: ``<outputs>/vae/<data-name>-<res>px-<hash>/`` (:func:`demo_vae_dir`), never inside the data folder. The hash
covers the training images (names and sizes), their preparation (resolution, background, crop to content) and the
recipe (:func:`recipe`, with :data:`DEMO_VAE_VERSION`): change any of them and a new VAE is trained; re-run and the
old one is reused.

Training is deterministic for a given seed, data set and number of threads (it fixes torch's thread count while it
runs). Some monsters are held out (never trained on) to measure reconstruction PSNR on unseen sprites.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from helpers.progress import tqdm

from helpers.data import WHITE, DataError, TrainSet, choose_heldout, data_hash, load_images, load_train_set, split_key
from helpers.frozen import downsample_factor, psnr_from_mse
from helpers.paths import atomic_folder

# bump when the recipe changes: ensure_demo_vae then trains a new one (2: any data set; 3: the workbook's one
# hold-out rule, helpers.data.choose_heldout, picks the monsters it never trains on; 4: lr 3e-3 x 2500 steps)
DEMO_VAE_VERSION = 4

# 3 levels -> downsampling factor 4: 64 px images <-> 16x16x4 latents. Narrow on purpose: the decoder at full
# resolution dominates the cost; this size reaches ~28 dB held-out PSNR in 2500 steps (~2 min on 2 CPU cores).
DEMO_VAE_CONFIG: dict = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    act_fn="silu",
    sample_size=64,
    mid_block_add_attention=False,
)

# The recipe (measured on 2 CPU cores: see training_report.json of a trained VAE and the workbook's README).
# lr 6e-3 x 1500 steps (version 3) swung by 2 dB with the draw of held-out monsters and the seed on the demo set
# (train PSNR 25.5-27.2 dB; held-out 23.5-27.9): the 25.5 dB draw shifted colours (teal -> blue, brown -> red)
# and the UNets trained on its latents followed the prompt's colour half as often. lr 3e-3 x 2500 steps: train
# 29.7 dB / held-out 27.8 dB on that draw (benchmarks/RESULTS.md, "Demo VAE recipe").
DEFAULT_STEPS = 2500
SMOKE_STEPS = 8
DEFAULT_BATCH_SIZE = 12
SMOKE_BATCH_SIZE = 4
DEFAULT_CROP = 24  # train on random 24x24 crops (on the 4-px latent grid): 7x cheaper than 64 px, same network
DEFAULT_LR = 3e-3
KL_WEIGHT = 1e-6
HOLDOUT_FRACTION = 0.1
LOGVAR_INIT = -4.0  # start with a narrow posterior (std ~0.14) so the sampled latents are useful from step 0
REPORT_NAME = "training_report.json"


# --------------------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode (posterior mean) and decode ``images`` in [-1, 1]; returns reconstructions in [-1, 1]."""
    p = next(vae.parameters())
    outs = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device=p.device, dtype=p.dtype)
        z = vae.encode(x).latent_dist.mean
        outs.append(vae.decode(z).sample.float().clamp(-1, 1).cpu())
    return torch.cat(outs) if outs else images[:0].float()


def reconstruction_psnr(vae, images: torch.Tensor, batch_size: int = 64) -> float:
    """Reconstruction PSNR (dB) of ``images`` ``[B,3,H,W]`` in [-1, 1] through ``vae`` (posterior mean).

    Both images and reconstructions are mapped to [0, 1]; the PSNR is computed from the MSE over all pixels of all
    images (a conservative average: bad images weigh more than in a mean of per-image PSNRs).
    """
    if len(images) == 0:
        raise ValueError("reconstruction_psnr needs at least one image")
    was_training = vae.training
    vae.eval()
    try:
        rec = reconstruct(vae, images, batch_size=batch_size)
    finally:
        vae.train(was_training)
    mse = F.mse_loss((rec + 1) / 2, (images.float().cpu().clamp(-1, 1) + 1) / 2).item()
    return psnr_from_mse(mse)


# --------------------------------------------------------------------------------------------------- data
def recipe(smoke: bool = False) -> dict:
    """What :func:`ensure_demo_vae` trains with (``smoke``: a few steps, for tests)."""
    return {"version": DEMO_VAE_VERSION, "steps": SMOKE_STEPS if smoke else DEFAULT_STEPS,
            "batch_size": SMOKE_BATCH_SIZE if smoke else DEFAULT_BATCH_SIZE, "crop_size": DEFAULT_CROP,
            "lr": DEFAULT_LR, "kl_weight": KL_WEIGHT, "holdout_fraction": HOLDOUT_FRACTION, "seed": 0,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_VAE_CONFIG.items()}}


def demo_vae_dir(profile, train_set: TrainSet) -> Path:
    """``<outputs>/vae/<data-name>-<res>px-<hash>/``: the folder of the VAE that :func:`ensure_demo_vae` trains for
    ``profile`` on ``train_set`` (the hash covers :func:`data_hash`, the image preparation and :func:`recipe`)."""
    settings = {"data": data_hash(train_set), "resolution": profile.resolution,
                "background": list(profile.background), "crop_to_content": profile.crop_to_content,
                "recipe": recipe(profile.smoke)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return profile.demo_vae_root / f"{train_set.root.name}-{profile.resolution}px-{key}"


def heldout_monsters(keys, holdout_fraction: float, seed: int = 0) -> set[str]:
    """The monsters (not single images) whose images are never trained on: :func:`helpers.data.choose_heldout` over
    the monster IDs of ``keys`` (none when ``holdout_fraction`` is 0 or there are fewer than 2 monsters)."""
    monsters = {split_key(k)[0] for k in keys}
    if holdout_fraction <= 0 or len(monsters) < 2:
        return set()
    return set(choose_heldout(monsters, holdout_fraction, seed))


def _to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------- training
def build_demo_vae(config: dict | None = None, seed: int = 0):
    """A freshly initialised ``AutoencoderKL`` with ``DEMO_VAE_CONFIG`` (or ``config``), posterior std ~0.14."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**(config or DEMO_VAE_CONFIG))
    if getattr(vae, "quant_conv", None) is not None:  # moments = (mean, logvar) along channels
        with torch.no_grad():
            vae.quant_conv.bias[vae.config.latent_channels:] = LOGVAR_INIT
    return vae


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator, grid: int = 4) -> torch.Tensor:
    """One random ``size`` x ``size`` crop per image, its corner on a ``grid``-pixel lattice."""
    if size >= x.shape[-1] and size >= x.shape[-2]:
        return x
    n_y, n_x = (x.shape[-2] - size) // grid + 1, (x.shape[-1] - size) // grid + 1
    oy = torch.randint(n_y, (len(x),), generator=generator) * grid
    ox = torch.randint(n_x, (len(x),), generator=generator) * grid
    return torch.stack([img[:, y:y + size, x_:x_ + size] for img, y, x_ in zip(x, oy.tolist(), ox.tolist())])


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _train_loop(vae, train_u8: torch.Tensor, gen: torch.Generator, *, steps: int, batch_size: int, lr: float,
                kl_weight: float, crop_size: int | None, device: str, progress: bool) -> dict:
    """The optimisation: ``steps`` AdamW steps on flipped random crops; returns wall and CPU seconds."""
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4, betas=(0.9, 0.99))
    warmup = max(1, min(50, steps // 10))
    t_train, cpu_train = time.perf_counter(), time.process_time()
    bar = tqdm(range(steps), desc="training the demo VAE", disable=not progress)
    mse_ema = None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        idx = torch.randint(len(train_u8), (batch_size,), generator=gen)
        x = _to_float(train_u8[idx])
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if crop_size:
            x = random_crops(x, crop_size, gen)
        x = x.to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        mse = F.mse_loss(vae.decode(z).sample, x)
        loss = mse + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        mse_ema = mse.item() if mse_ema is None else 0.95 * mse_ema + 0.05 * mse.item()
        if progress and (step % 20 == 0 or step == steps - 1):  # PSNR of the (noisy) training crops
            bar.set_postfix(mse=f"{mse_ema:.4f}", psnr=f"{psnr_from_mse(mse_ema / 4):.1f} dB", refresh=False)
    return {"seconds_train": round(time.perf_counter() - t_train, 1),
            "seconds_cpu": round(time.process_time() - cpu_train, 1)}  # CPU time of the loop, all threads


@torch.no_grad()
def _calibrate_and_measure(vae, train_u8: torch.Tensor, held_u8: torch.Tensor, gen: torch.Generator,
                           device: str) -> dict:
    """Freeze ``vae``, set ``scaling_factor`` = 1 / std of the training latents the UNet will see (posterior
    samples, as SD did) and measure the reconstruction PSNR of (some) training and all held-out images."""
    vae.eval().requires_grad_(False)
    lat = []
    for start in range(0, len(train_u8), 64):
        post = vae.encode(_to_float(train_u8[start:start + 64]).to(device)).latent_dist
        lat.append((post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)).cpu())
    lat = torch.cat(lat)
    latent_std, latent_mean = lat.std().item(), lat.mean().item()
    vae.register_to_config(scaling_factor=float(1.0 / latent_std))
    psnr_train = reconstruction_psnr(vae, _to_float(train_u8[::max(1, len(train_u8) // 256)]))
    psnr_held = reconstruction_psnr(vae, _to_float(held_u8)) if len(held_u8) else None
    factor = downsample_factor(vae)
    return {"psnr_train_db": round(psnr_train, 2),
            "psnr_heldout_db": None if psnr_held is None else round(psnr_held, 2),
            "scaling_factor": vae.config.scaling_factor, "latent_std_raw": latent_std,
            "latent_mean_raw": latent_mean,
            "latent_shape": [int(vae.config.latent_channels), train_u8.shape[-2] // factor,
                             train_u8.shape[-1] // factor]}


def train_demo_vae(source: TrainSet | str | Path, out_dir: str | Path, *, steps: int = DEFAULT_STEPS,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, resolution: int = 64,
                   holdout_fraction: float = HOLDOUT_FRACTION, lr: float = DEFAULT_LR, kl_weight: float = KL_WEIGHT,
                   crop_size: int | None = DEFAULT_CROP, config: dict | None = None,
                   background: tuple[int, int, int] = WHITE, crop_to_content: bool = False,
                   num_threads: int | None = None, device: str = "cpu", overwrite: bool = False,
                   progress: bool = True, smoke: bool = False) -> Path:
    """Train the demo ``AutoencoderKL`` on the images of ``source`` (a TrainSet or a data folder, read only) and
    save it into ``out_dir``; returns ``out_dir``.

    Images are prepared like training images (``resolution``, ``background``, ``crop_to_content``). Recipe: MSE
    reconstruction of a posterior sample + ``kl_weight`` * KL, AdamW (``lr``, warm-up then cosine), random
    horizontal flips and random ``crop_size`` crops (the network is convolutional: it is trained on crops and used
    on whole images, as Stable Diffusion's VAE was; ``None`` trains on whole images). The monsters in a
    ``holdout_fraction`` are never trained on; their reconstruction PSNR is reported. Afterwards ``scaling_factor``
    = 1 / std of the training latents. Saving is atomic (temporary folder, then rename); an existing ``out_dir``
    is replaced only with ``overwrite=True``. Deterministic for a given seed, data set, ``num_threads`` (default:
    min(4, CPU count)) and device.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it (or delete it).")
    t0 = time.perf_counter()
    train_set = source if isinstance(source, TrainSet) else load_train_set(source, verbose=False)
    if not train_set.examples:
        raise DataError(f"{train_set.root} has no training images: the demo VAE needs some (see data/README.md).")
    images_u8, keys = load_images(train_set, resolution, background, crop_to_content, progress=progress)
    held_monsters = heldout_monsters(keys, holdout_fraction, seed)
    held = torch.tensor([split_key(k)[0] in held_monsters for k in keys], dtype=torch.bool)
    train_u8, held_u8 = images_u8[~held], images_u8[held]
    load_seconds = time.perf_counter() - t0

    old_threads = torch.get_num_threads()
    threads = num_threads or min(4, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        vae = build_demo_vae(config, seed).to(device)
        timing = _train_loop(vae, train_u8, gen, steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight,
                             crop_size=crop_size, device=device, progress=progress)
        measured = _calibrate_and_measure(vae, train_u8, held_u8, gen, device)
    finally:
        torch.set_num_threads(old_threads)
    report = {
        "version": DEMO_VAE_VERSION, "smoke": smoke, "data": str(train_set.root), "data_format": train_set.format,
        "data_hash": data_hash(train_set), "resolution": resolution, "background": list(background),
        "crop_to_content": crop_to_content, "n_images": len(keys), "n_train_images": len(train_u8),
        "n_heldout_images": len(held_u8), "heldout_monsters": sorted(held_monsters), "steps": steps,
        "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "crop_size": crop_size, "seed": seed,
        "num_threads": threads, "device": str(device), **timing,
        "seconds_total": round(time.perf_counter() - t0, 1), "seconds_loading": round(load_seconds, 1),
        **measured, "parameters": sum(p.numel() for p in vae.parameters()),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (config or DEMO_VAE_CONFIG).items()},
        "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    with atomic_folder(out_dir, replace=overwrite) as tmp:
        vae.cpu().save_pretrained(tmp, safe_serialization=True)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return out_dir


def read_report(vae_dir: str | Path) -> dict | None:
    """The ``training_report.json`` of a demo VAE folder, or None."""
    path = Path(vae_dir) / REPORT_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _complete(vae_dir: Path) -> bool:
    """A finished VAE of the current recipe (config, weights, report) is in ``vae_dir``."""
    report = read_report(vae_dir)
    return (report is not None and report.get("version") == DEMO_VAE_VERSION and (vae_dir / "config.json").exists()
            and any(vae_dir.glob("diffusion_pytorch_model*.safetensors")))


def ensure_demo_vae(profile, train_set: TrainSet | None = None, *, progress: bool = True) -> Path:
    """The VAE ``profile.vae`` (a :func:`demo_vae_dir` folder): trained on the profile's data on first use, reused
    afterwards. ``train_set``: the profile's data set when already loaded (else it is loaded here).

    The training images are prepared like the profile's (resolution, background, ``crop_to_content``); a smoke
    profile trains only a few steps (its folder differs from a full run's, so it never serves one).
    """
    if not profile.vae_trained_here:
        raise ValueError(f"{profile.vae} is not a VAE trained by helpers.demo.vae (those live in "
                         f"{profile.demo_vae_root}); load it with helpers.frozen.load_vae.")
    vae_dir = Path(profile.vae)
    if _complete(vae_dir):
        return vae_dir
    if progress:
        how = "smoke: a few steps" if profile.smoke else "about 2 minutes on a 2-core CPU"
        print(f"Training the demo VAE on {profile.data_dir} into {vae_dir} ({how})...")
    if train_set is None:
        train_set = profile.load_train_set(verbose=False, progress=progress)
    r = recipe(profile.smoke)
    # smoke: one thread (a few tiny steps; avoids slow thread hand-offs when tests share a busy CPU)
    train_demo_vae(train_set, vae_dir, steps=r["steps"], batch_size=r["batch_size"], seed=r["seed"],
                   resolution=profile.resolution, holdout_fraction=r["holdout_fraction"], lr=r["lr"],
                   kl_weight=r["kl_weight"], crop_size=r["crop_size"], background=profile.background,
                   crop_to_content=profile.crop_to_content, overwrite=True, progress=progress, smoke=profile.smoke,
                   num_threads=1 if profile.smoke else None)
    if progress and not profile.smoke:
        report = read_report(vae_dir) or {}
        print(f"Demo VAE: held-out PSNR {report.get('psnr_heldout_db')} dB, train PSNR {report.get('psnr_train_db')}"
              f" dB, scaling_factor {report.get('scaling_factor', 0):.4f}, {report.get('seconds_total')} s.")
    return vae_dir
