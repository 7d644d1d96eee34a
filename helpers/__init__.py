"""helpers: the library the workbook's chapters import, one package per chapter.

- ``helpers.data`` (01): records, the readers of every source, the data check, images, the held-out split;
- ``helpers.frozen`` (02): the frozen text encoder and VAE, the latent/text cache;
- ``helpers.unet`` (03): the UNet presets, building one, what it costs;
- ``helpers.training`` (04): the config, the loss, one optimizer step, the loop, the run folder, the live plot,
  the command line (``python -m helpers.training``);
- ``helpers.generation`` (05): guided sampling, ``TextToImage``, attention maps, widgets, pipeline export;
- ``helpers.submission`` (06): scores (FID, CLIP), the settings pick, the export;
- ``helpers.demo``: the offline wing (generated sprites, the demo VAE, the demo judge); only ``helpers.profiles``
  imports it.

Shared by several chapters: ``profiles`` (course / demo / auto), ``paths`` (atomic files and folders), ``plots``,
``schedule`` (the one noise schedule), ``checkpoints``, ``notebooks`` (the headless runner of ``make run``).

Conventions shared by the modules:

- image tensors are float32 ``[B, 3, H, W]`` in [-1, 1]; PIL images are RGB (alpha composited on
  ``helpers.data.WHITE``);
- "raw" latents are the VAE's latent-distribution mean/std; "scaled" latents (what the UNet sees) are
  raw x ``vae.config.scaling_factor``;
- text embeddings are the encoder's last hidden state ``[B, 77, D]`` (padded to 77 tokens, truncation reported);
  the UNet gets no attention mask, as in Stable Diffusion; the unconditional embedding is the encoding of "";
- bad input raises ``helpers.data.DataError`` (a ``ValueError``) naming the file and the fix;
- weights are read and written with safetensors, everything else as JSON: no pickle.
"""

__version__ = "0.1.0"
