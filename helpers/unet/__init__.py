"""Chapter 03: the denoiser, a text-conditioned ``UNet2DConditionModel``: its presets and what it costs.

- :mod:`.presets`: :data:`PRESETS` (``reference``: the course's 241.36 M UNet; ``demo``: CPU-sized; ``tiny``: tests),
  :func:`build_unet`, :func:`build_for_profile`, :func:`text_hidden_size` (the UNet's ``cross_attention_dim``);
- :mod:`.costs`: parameters per block, FLOPs, memory, shapes (:func:`summary`, :func:`shape_check`,
  :func:`attention_costs`, :func:`plot_blocks`).
"""

from helpers.frozen import parameter_count

from .costs import ShapeCheck, UNetSummary, attention_costs, plot_blocks, shape_check, summary
from .presets import (PRESETS, REFERENCE_PARAMETERS, build_for_profile, build_unet, levels_factor, reference_config,
                      text_hidden_size, unet_config)

__all__ = ["parameter_count", "ShapeCheck", "UNetSummary", "attention_costs", "plot_blocks", "shape_check", "summary",
           "PRESETS", "REFERENCE_PARAMETERS", "build_for_profile", "build_unet", "levels_factor", "reference_config",
           "text_hidden_size", "unet_config"]
