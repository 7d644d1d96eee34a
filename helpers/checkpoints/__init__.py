"""Checkpoints of a training run: atomic, never overwritten silently, no pickle anywhere.

Layout (``run_dir`` = ``outputs/<run_name>``)::

    run_dir/ckpt/unet_<step>/    config.json + diffusion_pytorch_model.safetensors
                                 (UNet2DConditionModel.save_pretrained: from_pretrained loads the folder),
                                 scheduler_config.json (the run's noise schedule), workbook.json (meta + step),
                                 complete.json (the marker, written last: size + sha256 of every file)
    run_dir/ckpt/state_<step>/   everything for an exact resume:
        model.safetensors                   the trained model's state_dict
        optimizer.safetensors + .json       optimizer state tensors ("state.<param_idx>.<name>") + the rest
                                            (param_groups, python-number state) as JSON
        lr_scheduler.json                   lr_scheduler.state_dict()
        ema.safetensors + ema.json          diffusers EMAModel: shadow params + decay/optimization_step/...
        rng.safetensors + rng.json          torch CPU (and CUDA/MPS) RNG states, extra torch.Generators;
                                            python ``random`` and numpy states
        extra.json (+ extra.safetensors)    what the training loop needs (step, data position, config...)
        complete.json                       the marker, written last: a state without it is never used; it
                                            records each file's size and sha256 ("digests")

Every save writes into a temporary sibling folder ``ckpt/.tmp-<name>-...`` and renames it into place when complete,
so an interrupted save (crash, Ctrl-C, full disk) never leaves a folder that :func:`list_checkpoints` or
:func:`latest_state` would pick; :func:`clean_incomplete` removes such leftovers. Before use (a resume, a load for
generation) :func:`verify_checkpoint` checks every file against its digest, so a damaged file is named instead of
loaded; a save checks the free space first and reports a disk error as :class:`CheckpointWriteError`. JSON-side
values may be nested dicts (any key type), lists, tuples, numbers (inf/nan too), strings, None, numpy arrays and
tensors: tuples and non-string keys round-trip exactly, tensors go to the ``.safetensors`` file next to the JSON.

The package: :mod:`.store` (save, load, list, prune), :mod:`.integrity` (digests, verification, disk space and
disk errors), :mod:`.codec` (how the parts become safetensors + JSON files).
"""

from .integrity import (CheckpointDamagedError, CheckpointError, CheckpointStatus, CheckpointWriteError, HASH_NAME,
                        InsufficientSpaceError, MARKER_NAME, UNET_WEIGHTS, check_space, check_unet_checkpoint,
                        disk_errors, file_digest, is_complete, record_files, verify_checkpoint)
from .store import (CKPT_DIR, META_NAME, NoCheckpointError, checkpoint_statuses, clean_incomplete, ema_weights,
                    latest_intact_state, latest_state, latest_unet, list_checkpoints, load_state, prune, read_meta,
                    require_checkpoint, resume_state, save_state, save_unet, set_aside)

__all__ = ["save_unet", "save_state", "load_state", "list_checkpoints", "latest_state", "latest_unet",
           "require_checkpoint", "NoCheckpointError", "prune", "clean_incomplete", "read_meta", "ema_weights",
           "checkpoint_statuses", "latest_intact_state", "resume_state", "set_aside", "CKPT_DIR", "META_NAME",
           "CheckpointError", "CheckpointDamagedError", "CheckpointWriteError", "InsufficientSpaceError",
           "CheckpointStatus", "MARKER_NAME", "UNET_WEIGHTS", "HASH_NAME", "is_complete", "file_digest",
           "record_files", "verify_checkpoint", "check_unet_checkpoint", "check_space", "disk_errors"]
