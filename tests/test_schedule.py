"""helpers.schedule: one noise schedule for training and sampling, saved with every checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import schedule
from helpers.schedule import (COURSE_SAMPLE_CODE_CONFIG, SAMPLER_NAMES, default_scheduler_config,
                              load_scheduler_config, sampling_scheduler, save_scheduler_config,
                              scheduler_config_or_course_default, training_scheduler)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_config_is_stable_diffusions_schedule():
    c = default_scheduler_config()
    assert (c["beta_schedule"], c["beta_start"], c["beta_end"], c["num_train_timesteps"]) == \
        ("scaled_linear", 0.00085, 0.012, 1000)
    assert c["clip_sample"] is False and c["set_alpha_to_one"] is False and c["steps_offset"] == 1
    assert c["timestep_spacing"] in ("leading", "trailing")
    assert c["prediction_type"] == "epsilon"
    assert default_scheduler_config("v_prediction")["prediction_type"] == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        default_scheduler_config("sample!")


def test_training_and_every_sampler_share_the_same_noise_levels():
    from diffusers import DDPMScheduler

    c = default_scheduler_config()
    train = training_scheduler(c)
    assert isinstance(train, DDPMScheduler)
    for name in SAMPLER_NAMES:
        s = sampling_scheduler(name, c)
        assert torch.equal(s.alphas_cumprod, train.alphas_cumprod), name
        assert s.config.prediction_type == "epsilon"


@pytest.mark.parametrize("steps", [15, 50])
def test_sampling_starts_at_the_last_training_timestep(steps):
    for name in SAMPLER_NAMES:
        s = sampling_scheduler(name, default_scheduler_config())
        s.set_timesteps(steps)
        assert len(s.timesteps) == steps
        assert int(s.timesteps[0]) == 999, (name, s.timesteps[:3])


def test_sampler_names_and_classes():
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    c = default_scheduler_config()
    assert isinstance(sampling_scheduler("ddim", c), DDIMScheduler)
    assert isinstance(sampling_scheduler(config=c), DDIMScheduler)  # ddim is the default
    dpm = sampling_scheduler("dpm++", c)
    assert isinstance(dpm, DPMSolverMultistepScheduler) and dpm.config.algorithm_type == "dpmsolver++"
    assert isinstance(sampling_scheduler("euler", c), EulerDiscreteScheduler)
    assert isinstance(sampling_scheduler("DDPM", c), DDPMScheduler)
    with pytest.raises(ValueError) as err:
        sampling_scheduler("heun", c)
    assert all(name in str(err.value) for name in SAMPLER_NAMES)


def test_save_and_load_round_trip_in_diffusers_format(tmp_path):
    from diffusers import DDIMScheduler

    c = default_scheduler_config("v_prediction")
    path = save_scheduler_config(c, tmp_path / "unet_10")
    assert path.name == "scheduler_config.json"
    assert load_scheduler_config(tmp_path / "unet_10") == c
    loaded = DDIMScheduler.from_pretrained(tmp_path / "unet_10")  # diffusers reads it as it is
    assert loaded.config.beta_schedule == "scaled_linear" and loaded.config.prediction_type == "v_prediction"
    assert load_scheduler_config(tmp_path) is None


def test_bad_scheduler_config_names_the_file(tmp_path):
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="scheduler_config.json"):
        load_scheduler_config(tmp_path)


def test_course_sample_code_config_has_ddpm_defaults_betas():
    from diffusers import DDPMScheduler

    bare = DDPMScheduler()
    s = training_scheduler(COURSE_SAMPLE_CODE_CONFIG)
    assert torch.equal(s.betas, bare.betas)
    assert s.config.prediction_type == bare.config.prediction_type


def test_folder_without_config_falls_back_to_course_defaults_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="scheduler_config.json"):
        c = scheduler_config_or_course_default(tmp_path)
    assert c == COURSE_SAMPLE_CODE_CONFIG
    save_scheduler_config(default_scheduler_config(), tmp_path)
    assert scheduler_config_or_course_default(tmp_path) == default_scheduler_config()
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["_class_name"] == "DDIMScheduler"
    assert schedule.SCHEDULER_CONFIG_NAME == "scheduler_config.json"
