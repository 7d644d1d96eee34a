"""The frozen VAE (``AutoencoderKL``): images <-> latents, and the one place for the latent geometry.

Images are float32 ``[B, 3, H, W]`` in ``[-1, 1]``; "raw" latents are the VAE's ``latent_dist`` mean/std,
"scaled" latents (what the UNet sees) are raw x ``vae.config.scaling_factor``. The side of a latent is the image
side divided by the VAE's downsampling factor, ``2 ** (levels - 1)`` (:func:`downsample_factor`; 8 for Stable
Diffusion's VAE, 4 for the demo VAE).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from .loading import ModelLoadError, check_local, hub_error, quiet_loading


def load_vae(model_id: str | Path, subfolder: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
    """Load a frozen ``AutoencoderKL`` (eval, no grad) from a hub id or a local folder.

    The course uses ``load_vae("CompVis/stable-diffusion-v1-4", subfolder="vae")``.
    """
    model_id = str(model_id)
    folder = check_local(model_id, subfolder, "VAE")
    if folder is not None:
        try:
            cls_name = json.loads((folder / "config.json").read_text()).get("_class_name")
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{folder / 'config.json'} cannot be read as JSON ({err}).") from err
        if cls_name != "AutoencoderKL":
            if not cls_name:
                arch = json.loads((folder / "config.json").read_text()).get("architectures") or ["?"]
                cls_name = f"transformers model ({arch[0]})"
            raise ModelLoadError(
                f"{folder} holds a {cls_name}, not an AutoencoderKL. "
                "Pass the folder of the VAE (for a Stable Diffusion folder: subfolder='vae').")
    kw = {"subfolder": subfolder} if subfolder else {}
    try:
        with quiet_loading(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            vae = AutoencoderKL.from_pretrained(model_id, torch_dtype=dtype, **kw)
    except (OSError, ValueError) as err:
        raise hub_error(model_id, subfolder, "VAE", err) from err
    vae.eval().requires_grad_(False).to(device)
    return vae


def scaling_factor(vae) -> float:
    """The factor that makes latents have std ~ 1 (``vae.config.scaling_factor``; 0.18215 for SD v1-4)."""
    value = getattr(vae.config, "scaling_factor", None)
    return 1.0 if value is None else float(value)


def _config(vae_or_config) -> Mapping[str, Any]:
    return vae_or_config if isinstance(vae_or_config, Mapping) else vae_or_config.config


def downsample_factor(vae_or_config) -> int:
    """Image side / latent side of a VAE (or of its config): ``2 ** (levels - 1)``, 8 for SD's VAE, 4 for the demo's."""
    return 2 ** (len(_config(vae_or_config)["block_out_channels"]) - 1)


def latent_shape(vae_or_config, resolution: int) -> tuple[int, int, int]:
    """``(C, h, w)`` of the latents of a ``resolution`` px image through a VAE (or a VAE config)."""
    config = _config(vae_or_config)
    side = int(resolution) // downsample_factor(config)
    return (int(config.get("latent_channels", 4)), side, side)


def _vae_device_dtype(vae) -> tuple[torch.device, torch.dtype]:
    p = next(vae.parameters())
    return p.device, p.dtype


def encode_images(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` ``[B,3,H,W]`` in [-1, 1] -> ``(mean_raw, std_raw)`` of the latent distribution, float32, unscaled,
    on the VAE's device (multiply by :func:`scaling_factor` to get what the UNet sees)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"encode_images expects [B, 3, H, W] images, got shape {tuple(images.shape)}")
    device, dtype = _vae_device_dtype(vae)
    with torch.inference_mode():
        dist = vae.encode(images.to(device=device, dtype=dtype)).latent_dist
        return dist.mean.float().clone(), dist.std.float().clone()


def decode_latents(vae, latents_scaled: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images ``[B,3,H,W]`` float32 in [-1, 1] (divides by :func:`scaling_factor` first)."""
    device, dtype = _vae_device_dtype(vae)
    with torch.inference_mode():
        x = vae.decode(latents_scaled.to(device=device, dtype=dtype) / scaling_factor(vae)).sample
        return x.float().clamp(-1, 1).clone()


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error (inf for a perfect round trip)."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)
