"""Chapter 02: the frozen text encoder and VAE, and the cache of what they compute once.

- :mod:`.text_encoder`: :class:`TextEncoder` / :func:`load_text_encoder` (CLIP or BERT-like, ``[N, 77, D]``);
- :mod:`.vae`: :func:`load_vae`, :func:`encode_images` / :func:`decode_latents`, the scaling factor and the latent
  geometry (:func:`downsample_factor`, :func:`latent_shape`: the one place for them);
- :mod:`.models`: :class:`FrozenModels` / :func:`load_frozen_models` (both, for a profile);
- :mod:`.loading`: quiet, checked ``from_pretrained`` and :func:`parameter_count`; :mod:`.hub`: "can this load
  offline?";
- :mod:`.cache`: :func:`build_cache` / :func:`load_cache`, the latents and text embeddings training reads.
"""

from .cache import LatentCache, build_cache, cache_key, load_cache
from .hub import model_problem
from .loading import ModelLoadError, parameter_count, quiet_loading
from .models import FrozenModels, load_frozen_models
from .text_encoder import MAX_LENGTH, TextEncoder, load_text_encoder
from .vae import (decode_latents, downsample_factor, encode_images, latent_shape, load_vae, psnr_from_mse,
                  scaling_factor)

__all__ = ["LatentCache", "build_cache", "cache_key", "load_cache", "model_problem", "ModelLoadError",
           "parameter_count", "quiet_loading", "FrozenModels", "load_frozen_models", "MAX_LENGTH", "TextEncoder",
           "load_text_encoder", "decode_latents", "downsample_factor", "encode_images", "latent_shape", "load_vae",
           "psnr_from_mse", "scaling_factor"]
