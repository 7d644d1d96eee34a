"""helpers.profiles: which profile runs and why, and where its models come from."""

from __future__ import annotations

import pytest

from helpers import profiles
from helpers.demo_data import SMOKE, make_demo_dataset
from helpers.profiles import COURSE_TEXT_ENCODER, COURSE_VAE, resolve_profile, vae_location


@pytest.fixture()
def offline(monkeypatch):
    """The hub is unreachable (as on the test machines): hub ids never load."""
    monkeypatch.setattr("helpers.hub.hub_problem", lambda model_id, subfolder=None: f"{model_id}: hub unreachable")
    for name in ("WORKBOOK_PROFILE", "WORKBOOK_SMOKE", "WORKBOOK_TEXT_ENCODER", "WORKBOOK_VAE"):
        monkeypatch.delenv(name, raising=False)


def test_vae_location(tmp_path, tiny_sd_dir, tiny_vae_dir):
    assert vae_location(COURSE_VAE) == (COURSE_VAE, "vae")
    assert vae_location("stabilityai/sd-vae-ft-mse") == ("stabilityai/sd-vae-ft-mse", None)
    assert vae_location("runwayml/stable-diffusion-v1-5/vae") == ("runwayml/stable-diffusion-v1-5", "vae")
    assert vae_location(str(tiny_sd_dir)) == (str(tiny_sd_dir), "vae")  # a whole SD folder: its vae/
    assert vae_location(str(tiny_vae_dir)) == (str(tiny_vae_dir), None)  # the VAE's own folder


def test_demo_when_asked(tmp_path, offline, capsys):
    p = resolve_profile("demo", smoke=True, data_dir=tmp_path / "d", outputs_dir=tmp_path / "o", device="cpu")
    assert (p.name, p.smoke, p.resolution, p.unet_preset) == ("demo", True, 64, "tiny")
    assert p.vae == str(tmp_path / "d" / "vae") and (tmp_path / "d" / "train_info.json").exists()
    assert p.run_dir("main") == tmp_path / "o" / "main-smoke"
    assert "Profile: demo (smoke) - asked for" in capsys.readouterr().out


def test_auto_falls_back_to_demo_and_says_why(tmp_path, offline, monkeypatch, capsys):
    monkeypatch.setattr(profiles, "data_root", lambda: tmp_path / "data")
    p = resolve_profile("auto", smoke=True, outputs_dir=tmp_path / "o", device="cpu")
    assert p.name == "demo" and p.data_dir == tmp_path / "data" / "demo-smoke"
    assert f"no course data in {tmp_path / 'data' / 'hw6'}" in p.reason
    # with the data there, the missing models are the reason
    course = make_demo_dataset(tmp_path / "data" / "hw6", **SMOKE)
    p = resolve_profile("auto", smoke=True, outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    assert p.name == "demo" and f"{COURSE_TEXT_ENCODER}: hub unreachable" in p.reason
    assert course.exists()


def test_course_refuses_with_what_is_missing(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match=r"course profile cannot run: no course data in .*missing train"):
        resolve_profile("course", data_dir=tmp_path / "nothing", device="cpu", verbose=False)


def test_course_with_local_models(tmp_path, offline, tiny_clip_dir, tiny_sd_dir, monkeypatch):
    data = make_demo_dataset(tmp_path / "hw6", **SMOKE)
    p = resolve_profile("auto", data_dir=data, outputs_dir=tmp_path / "o", device="cpu", verbose=False,
                        text_encoder=tiny_clip_dir, vae=tiny_sd_dir)
    assert (p.name, p.resolution, p.unet_preset) == ("course", 256, "reference")
    assert (p.text_encoder, p.vae, p.vae_subfolder) == (str(tiny_clip_dir), str(tiny_sd_dir), "vae")
    # the same through the environment (headless runs), and a folder without config.json is named
    monkeypatch.setenv("WORKBOOK_TEXT_ENCODER", str(tiny_clip_dir))
    monkeypatch.setenv("WORKBOOK_VAE", str(tiny_sd_dir))
    assert resolve_profile("course", data_dir=data, device="cpu", verbose=False).vae_subfolder == "vae"
    monkeypatch.setenv("WORKBOOK_VAE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no config.json"):
        resolve_profile("course", data_dir=data, device="cpu", verbose=False)


def test_unknown_profile(offline):
    with pytest.raises(ValueError, match="'auto', 'course' or 'demo'"):
        resolve_profile("laptop", verbose=False)
