"""helpers: the small library the workbook's notebooks import (one idea per module).

Setup and data: ``paths`` (where things live, atomic folders), ``profiles`` (course / demo / auto, smoke),
``hub`` (a quick "can this model load offline?" check), ``demo_data`` (the offline sprite set), ``data``
(readers, image loading, the dataset check), ``plots``.
Frozen models: ``frozen`` (CLIP/BERT text encoders and the VAE), ``demo_vae`` (the demo profile's small VAE),
``cache`` (latents and text embeddings computed once).
Training: ``unet`` (reference config, presets, summary), ``schedule`` (the one noise schedule), ``losses`` (the
diffusion loss, min-SNR weights), ``train_config`` (TrainConfig), ``train`` (the step and the loop), ``train_cli``
(its command line), ``run_folder`` (one trainer per run, resume policy, metrics.jsonl), ``checkpoints``,
``colour_check`` (does a sample follow the prompt's colour?).
Generation and scoring: ``sampling`` (batched classifier-free guidance), ``widgets``, ``split`` (held-out keys),
``submission``, ``metrics``. ``notebooks`` runs the chapters headless (``make run``, the tests).

Conventions shared by the modules:

- image tensors are float32 ``[B, 3, H, W]`` in [-1, 1]; PIL images are RGB (alpha composited on white);
- "raw" latents are the VAE's latent-distribution mean/std; "scaled" latents (what the UNet sees) are
  raw x ``vae.config.scaling_factor``;
- text embeddings are the encoder's last hidden state ``[B, 77, D]`` (padded to 77 tokens, truncation reported);
  the UNet gets no attention mask, as in Stable Diffusion; the unconditional embedding is the encoding of "";
- bad input raises ``helpers.data.DataError`` (a ``ValueError``) naming the file and the fix;
- weights are read and written with safetensors, everything else as JSON: no pickle.
"""

__version__ = "0.1.0"
