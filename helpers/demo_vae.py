"""The demo profile's small VAE: an ``AutoencoderKL`` trained here on the demo sprites (or any course-format folder).

Stable Diffusion's VAE was trained once and frozen; the demo does the same at toy scale: ``train_demo_vae`` trains a
small ``AutoencoderKL`` (64 px images -> 16x16x4 latents), then sets ``scaling_factor`` = 1 / std of the training
latents (the way SD's 0.18215 was chosen) so that scaled latents have std ~ 1, and saves it with ``save_pretrained``
(safetensors) plus a ``training_report.json``. ``ensure_demo_vae`` trains it once into ``<data_dir>/vae`` and reuses
it afterwards; ``helpers.frozen.load_vae`` loads it like any other VAE.

Training is deterministic for a given seed, data set and number of threads (it fixes torch's thread count while it
runs). Some monsters are held out (never trained on) to measure reconstruction PSNR on unseen sprites.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .paths import atomic_folder

DEMO_VAE_VERSION = 1  # bump when the recipe changes: ensure_demo_vae then retrains

# 3 levels -> downsampling factor 4: 64 px images <-> 16x16x4 latents. Narrow on purpose: the decoder at full
# resolution dominates the cost; this size reaches ~28 dB held-out PSNR in 1500 steps (~2 min on 2 CPU cores).
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
DEFAULT_STEPS = 1500
SMOKE_STEPS = 8
DEFAULT_BATCH_SIZE = 12
DEFAULT_CROP = 24  # train on random 24x24 crops (on the 4-px latent grid): 7x cheaper than 64 px, same network
DEFAULT_LR = 6e-3
KL_WEIGHT = 1e-6
LOGVAR_INIT = -4.0  # start with a narrow posterior (std ~0.14) so the sampled latents are useful from step 0
REPORT_NAME = "training_report.json"


# --------------------------------------------------------------------------------------------------- metrics
def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


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
def monster_id(key: str) -> str:
    """The monster of a course key ``<monsterID>_<ACTION>`` (the whole key when it has no ``_``)."""
    return key.split("_", 1)[0] if "_" in key else key


def data_hash(data_dir: str | Path) -> str:
    """A quick fingerprint of a data set: the training file names and sizes, and the caption file."""
    root = Path(data_dir)
    h = hashlib.sha256()
    for name in ("train_info.json", "metadata.jsonl"):
        if (root / name).exists():
            h.update(name.encode() + b"\0" + (root / name).read_bytes())
    train = root / "train" if (root / "train").is_dir() else root
    for p in sorted(train.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"):
            h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def split_holdout(keys: Sequence[str], holdout_fraction: float, seed: int = 0) -> tuple[set[str], set[str]]:
    """Split monsters (not single images) into ``(train_monsters, heldout_monsters)``, seeded.

    At least one monster is held out when ``holdout_fraction > 0`` and there are at least two monsters.
    """
    monsters = sorted({monster_id(k) for k in keys})
    rng = random.Random(seed)
    shuffled = monsters[:]
    rng.shuffle(shuffled)
    n_hold = 0
    if holdout_fraction > 0 and len(monsters) >= 2:
        n_hold = min(len(monsters) - 1, max(1, round(holdout_fraction * len(monsters))))
    held = set(shuffled[:n_hold])
    return set(monsters) - held, held


def load_images(data_dir: str | Path, resolution: int, background=(255, 255, 255),
                ) -> tuple[torch.Tensor, list[str]]:
    """All training images of a course-format (or imagefolder) data set as uint8 ``[N,3,R,R]`` + their keys."""
    import numpy as np

    from .data import load_image, load_train_set

    train_set = load_train_set(data_dir)
    if not train_set.examples:
        from .data import DataError

        raise DataError(f"{data_dir} has no training images: the demo VAE needs some (see data/README.md).")
    arrays, keys = [], []
    for ex in tqdm(train_set.examples, desc="loading images", leave=False, disable=len(train_set.examples) < 500):
        img = load_image(ex.path, resolution, background=background)
        arrays.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
        keys.append(ex.key)
    return torch.stack(arrays), keys


def _to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------- training
def build_demo_vae(config: dict | None = None, seed: int = 0):
    """A freshly initialised ``AutoencoderKL`` with ``DEMO_VAE_CONFIG`` (or ``config``), posterior std ~0.14."""
    from diffusers import AutoencoderKL

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


def train_demo_vae(data_dir: str | Path, out_dir: str | Path, *, steps: int = DEFAULT_STEPS,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, resolution: int = 64,
                   holdout_fraction: float = 0.1, lr: float = DEFAULT_LR, kl_weight: float = KL_WEIGHT,
                   crop_size: int | None = DEFAULT_CROP,
                   config: dict | None = None, num_threads: int | None = None, device: str = "cpu",
                   overwrite: bool = False, progress: bool = True, smoke: bool = False) -> Path:
    """Train the demo ``AutoencoderKL`` on the images of ``data_dir`` and save it into ``out_dir``; returns it.

    Recipe: MSE reconstruction of a posterior sample + ``kl_weight`` * KL, AdamW (``lr``, warm-up then cosine),
    random horizontal flips and random ``crop_size`` crops (the network is convolutional: it is trained on crops
    and used on whole images, as Stable Diffusion's VAE was; ``None`` trains on whole images). The monsters in a
    ``holdout_fraction`` are never trained on; their reconstruction PSNR is reported. Afterwards
    ``scaling_factor`` = 1 / std of the training latents. Saving is atomic (temporary folder, then rename); an
    existing ``out_dir`` is replaced only with ``overwrite=True``. Deterministic for a given seed, data set,
    ``num_threads`` (default: min(4, CPU count)) and device.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it (or delete it).")
    t0 = time.perf_counter()
    images_u8, keys = load_images(data_dir, resolution)
    train_monsters, held_monsters = split_holdout(keys, holdout_fraction, seed)
    train_idx = [i for i, k in enumerate(keys) if monster_id(k) in train_monsters]
    held_idx = [i for i, k in enumerate(keys) if monster_id(k) in held_monsters]
    train_u8 = images_u8[train_idx]
    load_seconds = time.perf_counter() - t0

    old_threads = torch.get_num_threads()
    threads = num_threads or min(4, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        vae = build_demo_vae(config, seed).to(device)
        vae.train()
        opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4, betas=(0.9, 0.99))
        warmup = max(1, min(50, steps // 10))
        t_train, cpu_train = time.perf_counter(), time.process_time()
        bar = tqdm(range(steps), desc="training the demo VAE", disable=not progress, mininterval=1.0)
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
            rec = vae.decode(z).sample
            mse = F.mse_loss(rec, x)
            kl = posterior.kl().mean()
            loss = mse + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            mse_ema = mse.item() if mse_ema is None else 0.95 * mse_ema + 0.05 * mse.item()
            if progress and (step % 20 == 0 or step == steps - 1):  # PSNR of the (noisy) training crops
                bar.set_postfix(mse=f"{mse_ema:.4f}", psnr=f"{psnr_from_mse(mse_ema / 4):.1f} dB")
        train_seconds, cpu_seconds = time.perf_counter() - t_train, time.process_time() - cpu_train

        vae.eval().requires_grad_(False)
        # scaling factor: 1 / std of the training latents the UNet will see (posterior samples), as SD did
        lat = []
        with torch.no_grad():
            for start in range(0, len(train_u8), 64):
                post = vae.encode(_to_float(train_u8[start:start + 64]).to(device)).latent_dist
                lat.append((post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)).cpu())
        lat = torch.cat(lat)
        latent_std, latent_mean = lat.std().item(), lat.mean().item()
        vae.register_to_config(scaling_factor=float(1.0 / latent_std))
        psnr_train = reconstruction_psnr(vae, _to_float(train_u8[::max(1, len(train_u8) // 256)]))
        psnr_held = reconstruction_psnr(vae, _to_float(images_u8[held_idx])) if held_idx else None
    finally:
        torch.set_num_threads(old_threads)

    report = {
        "version": DEMO_VAE_VERSION,
        "smoke": smoke,
        "data_dir": str(data_dir),
        "data_hash": data_hash(data_dir),
        "resolution": resolution,
        "n_images": len(keys),
        "n_train_images": len(train_idx),
        "n_heldout_images": len(held_idx),
        "heldout_monsters": sorted(held_monsters),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "kl_weight": kl_weight,
        "crop_size": crop_size,
        "seed": seed,
        "num_threads": threads,
        "device": str(device),
        "seconds_train": round(train_seconds, 1),
        "seconds_cpu": round(cpu_seconds, 1),  # CPU time of the training loop, all threads
        "seconds_total": round(time.perf_counter() - t0, 1),
        "seconds_loading": round(load_seconds, 1),
        "psnr_train_db": round(psnr_train, 2),
        "psnr_heldout_db": None if psnr_held is None else round(psnr_held, 2),
        "scaling_factor": vae.config.scaling_factor,
        "latent_std_raw": latent_std,
        "latent_mean_raw": latent_mean,
        "latent_shape": [int(vae.config.latent_channels), resolution // 2 ** (len(vae.config.block_out_channels) - 1),
                         resolution // 2 ** (len(vae.config.block_out_channels) - 1)],
        "parameters": sum(p.numel() for p in vae.parameters()),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (config or DEMO_VAE_CONFIG).items()},
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    _save_atomic(vae.cpu(), report, out_dir, overwrite)
    return out_dir


def _save_atomic(vae, report: dict, out_dir: Path, overwrite: bool) -> None:
    with atomic_folder(out_dir, replace=overwrite) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")


def read_report(vae_dir: str | Path) -> dict | None:
    """The ``training_report.json`` of a demo VAE folder, or None."""
    path = Path(vae_dir) / REPORT_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _usable(vae_dir: Path, data_dir: Path, smoke: bool) -> bool:
    report = read_report(vae_dir)
    return (report is not None and (vae_dir / "config.json").exists()
            and any(vae_dir.glob("diffusion_pytorch_model*.safetensors"))
            and report.get("version") == DEMO_VAE_VERSION and report.get("data_hash") == data_hash(data_dir)
            and (smoke or not report.get("smoke")))


def ensure_demo_vae(data_dir: str | Path, smoke: bool = False, *, progress: bool = True) -> Path:
    """``<data_dir>/vae``: trained when missing or outdated (data or recipe changed), reused otherwise.

    ``smoke`` trains only a few steps (for tests); a smoke VAE is never reused by a non-smoke run.
    """
    data_dir = Path(data_dir)
    vae_dir = data_dir / "vae"
    if _usable(vae_dir, data_dir, smoke):
        return vae_dir
    if progress:
        how = "smoke: a few steps" if smoke else "about 2 minutes on a 2-core CPU"
        print(f"Training the demo VAE into {vae_dir} ({how})...")
    steps = SMOKE_STEPS if smoke else DEFAULT_STEPS
    batch_size = 4 if smoke else DEFAULT_BATCH_SIZE
    # smoke: one thread (a few tiny steps; avoids slow thread hand-offs when tests share a busy CPU)
    train_demo_vae(data_dir, vae_dir, steps=steps, batch_size=batch_size, overwrite=True, progress=progress,
                   smoke=smoke, num_threads=1 if smoke else None)
    if progress and not smoke:
        report = read_report(vae_dir) or {}
        print(f"Demo VAE: held-out PSNR {report.get('psnr_heldout_db')} dB, train PSNR {report.get('psnr_train_db')}"
              f" dB, scaling_factor {report.get('scaling_factor', 0):.4f}, {report.get('seconds_total')} s.")
    return vae_dir
