"""Chapter 05: generation with classifier-free guidance, and what to do with a trained UNet.

- :mod:`.sampling`: :func:`sample_latents` (the guided loop, one batched UNet call per step), :func:`apply_guidance`,
  :func:`initial_noise` (a seed per image), :func:`decode_to_pil`;
- :mod:`.text_to_image`: :class:`TextToImage` (a checkpoint + the frozen models + its schedule: prompts -> images);
- :mod:`.widgets`: the checkpoint picker, the generation panel, the prompt and guidance sliders;
- :mod:`.attention_maps`: :func:`cross_attention_maps` (what each word of a prompt attends to) and its plot;
- :mod:`.pipeline`: :func:`export_pipeline` / :func:`load_pipeline` (a standard diffusers pipeline folder).
"""

from .attention_maps import AttentionMaps, cross_attention_maps, plot_attention_maps
from .pipeline import export_pipeline, load_pipeline
from .sampling import SAMPLER_NAMES, apply_guidance, decode_to_pil, default_batch_size, initial_noise, sample_latents
from .text_to_image import TextToImage, check_unet_folder, check_unet_matches, timed_generate
from .widgets import CheckpointPicker, GenerationPanel, PromptSliderDemo, SliderDemo

__all__ = ["AttentionMaps", "cross_attention_maps", "plot_attention_maps", "export_pipeline", "load_pipeline", "SAMPLER_NAMES", "apply_guidance", "decode_to_pil",
           "default_batch_size", "initial_noise", "sample_latents", "TextToImage", "check_unet_folder",
           "check_unet_matches", "timed_generate", "CheckpointPicker", "GenerationPanel", "PromptSliderDemo",
           "SliderDemo"]
