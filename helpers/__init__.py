"""helpers: the small library the workbook's notebooks import.

One idea per module: ``profiles`` (which setup runs), ``demo_data`` (the offline sprite set), ``data``
(readers, image loading, dataset checks), ``frozen`` (CLIP/BERT text encoders and the VAE), ``demo_vae``
(the small VAE of the demo profile), ``cache`` (latents and text embeddings computed once), ``unet``,
``train``, ``checkpoints``, ``sampling``, ``widgets``, ``submission``, ``metrics``.
"""

__version__ = "0.1.0"
