"""Both frozen models of a profile, loaded together (what chapters 02-06 and the training command line use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .loading import parameter_count
from .text_encoder import TextEncoder, load_text_encoder
from .vae import latent_shape, load_vae, scaling_factor


@dataclass
class FrozenModels:
    """The profile's frozen text encoder and VAE."""

    text_encoder: TextEncoder
    vae: Any  # diffusers.AutoencoderKL
    profile: Any  # helpers.profiles.Profile

    @property
    def cross_attention_dim(self) -> int:
        """The text encoder's hidden size (the UNet's cross_attention_dim)."""
        return self.text_encoder.hidden_size

    @property
    def scaling_factor(self) -> float:
        return scaling_factor(self.vae)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latents at the profile's resolution."""
        return latent_shape(self.vae, self.profile.resolution)

    def summary(self) -> str:
        te, vae = self.text_encoder, self.vae
        c, h, w = self.latent_shape
        vae_name = self.profile.vae + (f"/{self.profile.vae_subfolder}" if self.profile.vae_subfolder else "")
        return (f"text encoder: {te.model_id} ({te.kind}, {type(te.model).__name__}, "
                f"{parameter_count(te.model) / 1e6:.1f} M params, hidden size {te.hidden_size}, "
                f"{te.max_length} tokens)\n"
                f"VAE:          {vae_name} ({parameter_count(vae) / 1e6:.1f} M params, "
                f"{self.profile.resolution} px -> {c}x{h}x{w} latents, scaling_factor {self.scaling_factor:.5g})")


def load_frozen_models(profile) -> FrozenModels:
    """Load the profile's text encoder and VAE, frozen, on ``profile.device``.

    ``profile.prepare_vae()`` runs first: the profile decides whether its VAE has to be made (the demo stack trains
    a small VAE on the profile's data on first use; :meth:`helpers.profiles.Profile.prepare_vae`).
    """
    profile.prepare_vae()
    text_encoder = load_text_encoder(profile.text_encoder, device=profile.device)
    vae = load_vae(profile.vae, subfolder=profile.vae_subfolder, device=profile.device)
    return FrozenModels(text_encoder=text_encoder, vae=vae, profile=profile)


