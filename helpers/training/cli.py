"""The command line of the training loop: build what :func:`helpers.training.train` takes, then call it.

    python -m helpers.training --config outputs/main/train_config.json [--resume latest] [--max-steps N]
    accelerate launch --multi_gpu --num_processes 2 -m helpers.training --config outputs/main/train_config.json

The data flows one way: from the config's fields this module rebuilds the profile, loads the latent cache
(``cache_dir``) or builds it from the data set (``data_dir``, with the frozen models; the main process first, the
others then find it), loads the frozen models that the sample grids need (main process), and hands both to
``train``. The loop itself never reads the data set or loads a model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accelerate import PartialState

from helpers.frozen import FrozenModels, LatentCache, build_cache, load_cache, load_frozen_models
from helpers.paths import atomic_write
from helpers.profiles import Profile, default_device

from .config import TrainConfig
from .loop import TrainResult, train

__all__ = ["profile_from_config", "prepare", "run", "main"]


def profile_from_config(config: TrainConfig) -> Profile:
    """A Profile equivalent to the one the config was made from (what the cache and the frozen models are)."""
    return Profile(
        name=config.profile_name, smoke=config.smoke, reason="from the training config",
        data_dir=Path(config.data_dir) if config.data_dir else Path("."), outputs_dir=config.run_path.parent,
        resolution=config.resolution, text_encoder=config.text_encoder, vae=config.vae,
        vae_subfolder=config.vae_subfolder, unet_preset=config.unet_preset,
        device=config.device or default_device(), crop_to_content=config.crop_to_content,
        image_column=config.image_column, caption_column=config.caption_column)


def prepare(config: TrainConfig) -> tuple[LatentCache, FrozenModels | None]:
    """The latent cache of ``config`` and the frozen models the sample grids need (main process; None elsewhere).

    ``config.cache_dir`` is loaded; otherwise the cache is built from ``config.data_dir`` (main process first).
    """
    if not config.cache_dir and not config.data_dir:
        raise ValueError("The training config names no cache: set cache_dir (a folder from helpers.frozen.cache.build_cache) "
                         "or data_dir (the data set to build it from).")
    profile = profile_from_config(config)
    state = PartialState(cpu=profile.device == "cpu")
    frozen = None
    with state.main_process_first():
        if config.cache_dir:
            cache = load_cache(config.cache_dir)
        else:
            frozen = load_frozen_models(profile)
            cache = load_cache(build_cache(profile.load_train_set(), frozen, profile))
    if not state.is_main_process:
        return cache, None
    if frozen is None and config.eval_freq > 0 and config.sample_prompts:
        frozen = load_frozen_models(profile)
    return cache, frozen


def run(config: TrainConfig, *, callback=None) -> TrainResult:
    """:func:`prepare` the cache and the frozen models of ``config``, then :func:`helpers.training.train`."""
    cache, frozen = prepare(config)
    return train(config, cache, frozen, callback=callback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.training",
        description="Train the UNet with a TrainConfig JSON file (e.g. outputs/<run>/train_config.json). "
                    "Runs as is, or under `accelerate launch --multi_gpu --num_processes N` / `torchrun`.")
    parser.add_argument("--config", required=True, help="a TrainConfig JSON file")
    parser.add_argument("--resume", default=None, help="'latest', 'none' or a state folder (overrides the file)")
    parser.add_argument("--max-steps", type=int, default=None, help="overrides max_steps")
    parser.add_argument("--run-dir", default=None, help="overrides run_dir")
    parser.add_argument("--result-json", default=None, help="write the TrainResult (main process) to this file")
    args = parser.parse_args(argv)

    config = TrainConfig.load(args.config)
    if args.resume is not None:
        config.resume = None if args.resume.lower() == "none" else args.resume
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.run_dir is not None:
        config.run_dir = args.run_dir
    result = run(config)
    print(result)
    if args.result_json and PartialState().is_main_process:
        atomic_write(args.result_json, json.dumps({
            "step": result.step, "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
            "state": str(result.state), "interrupted": result.interrupted, "finished": result.finished,
            "losses": result.losses}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
