"""helpers.demo.vae: tiny training runs on a tiny course-format folder (seconds), loaded back through load_vae."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers.demo import vae as demo_vae
from helpers.data import load_train_set
from helpers.demo.dataset import make_demo_dataset
from helpers.data.images import load_image
from helpers.frozen import load_vae, scaling_factor
from helpers.profiles import resolve_profile

TINY_CONFIG = dict(demo_vae.DEMO_VAE_CONFIG, block_out_channels=(8, 16), norm_num_groups=4,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                   sample_size=32)
FAST = dict(steps=3, batch_size=2, resolution=32, config=TINY_CONFIG, progress=False, num_threads=1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A course-format folder: 4 monsters x 4 actions x 1 frame (16 sprites)."""
    return make_demo_dataset(tmp_path_factory.mktemp("vae-data") / "demo", n_species=4, n_frames=1)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    return demo_vae.train_demo_vae(tiny_data, tmp_path_factory.mktemp("vae-out") / "vae", seed=0, **FAST)


def test_train_saves_a_loadable_vae_with_scaling_factor(trained, tiny_data):
    assert (trained / "config.json").exists()
    assert (trained / "diffusion_pytorch_model.safetensors").exists()
    assert not list(trained.parent.glob(".vae.tmp-*"))  # the temporary folder was renamed away
    vae = load_vae(trained)  # the same from_pretrained path as the course VAE
    assert type(vae).__name__ == "AutoencoderKL"
    report = json.loads((trained / "training_report.json").read_text())
    assert scaling_factor(vae) == pytest.approx(report["scaling_factor"])
    assert scaling_factor(vae) == pytest.approx(1 / report["latent_std_raw"])
    assert scaling_factor(vae) != pytest.approx(0.18215)  # not the default: computed from the data
    for key in ("steps", "seconds_train", "seconds_cpu", "psnr_train_db", "psnr_heldout_db", "data_hash",
                "heldout_monsters"):
        assert key in report, key
    assert report["steps"] == 3 and report["data_hash"] == demo_vae.data_hash(load_train_set(tiny_data, verbose=False))
    assert report["latent_shape"] == [4, 16, 16]
    assert report["n_heldout_images"] > 0 and report["n_train_images"] + report["n_heldout_images"] == 16


def test_heldout_monsters_are_never_trained_on(trained):
    report = demo_vae.read_report(trained)
    held = set(report["heldout_monsters"])
    assert len(held) == 1  # 10 % of 4 monsters, at least one
    assert demo_vae.heldout_monsters([f"m00{i}_walk" for i in range(4)], 0.1, seed=0) == held


def test_training_is_deterministic(trained, tiny_data, tmp_path):
    again = demo_vae.train_demo_vae(tiny_data, tmp_path / "again", seed=0, **FAST)
    other = demo_vae.train_demo_vae(tiny_data, tmp_path / "other", seed=1, **FAST)
    a, b, c = (load_vae(p).state_dict() for p in (trained, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_existing_output_is_not_overwritten_silently(trained, tiny_data):
    before = (trained / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        demo_vae.train_demo_vae(tiny_data, trained, **FAST)
    assert (trained / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_reconstruction_psnr(trained):
    assert demo_vae.psnr_from_mse(0.01) == pytest.approx(20.0)
    assert demo_vae.psnr_from_mse(0.0) == float("inf")
    vae = load_vae(trained)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    value = demo_vae.reconstruction_psnr(vae, images)
    assert isinstance(value, float) and 0 < value < 60
    with pytest.raises(ValueError):
        demo_vae.reconstruction_psnr(vae, images[:0])


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_monster_ids_may_contain_underscores():
    held = demo_vae.heldout_monsters(["fire_imp_01_attack", "fire_imp_01_walk", "ice_bat_attack"], 0.5)
    assert held in ({"fire_imp_01"}, {"ice_bat"})


def test_training_images_are_prepared_like_the_profiles(tiny_data):
    """crop_to_content: the VAE trains on the cropped sprites (as the cache and the held-out references see them)."""
    train_set = load_train_set(tiny_data, verbose=False)
    plain, keys = demo_vae.load_images(train_set, 32)
    cropped, _ = demo_vae.load_images(train_set, 32, crop_to_content=True)
    first = train_set.examples[0]
    assert keys[0] == first.key and cropped.shape == plain.shape == (16, 3, 32, 32)
    want = torch.from_numpy(__import__("numpy").asarray(load_image(first.path, 32, crop_to_content=True)).copy())
    assert torch.equal(cropped[0], want.permute(2, 0, 1)) and not torch.equal(cropped[0], plain[0])


def test_ensure_demo_vae_trains_once_under_outputs_then_reuses(tmp_path, monkeypatch):
    data = make_demo_dataset(tmp_path / "my_sprites", n_species=2, n_frames=1)
    before = _files(data)
    calls = []
    real_train = demo_vae.train_demo_vae

    def counting_train(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(demo_vae, "train_demo_vae", counting_train)
    profile = resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "out", device="cpu",
                              verbose=False)
    path = demo_vae.ensure_demo_vae(profile, progress=False)
    assert path == Path(profile.vae) and path.parent == tmp_path / "out" / "vae" and len(calls) == 1
    assert calls[0]["steps"] == demo_vae.SMOKE_STEPS and calls[0]["num_threads"] == 1
    assert calls[0]["crop_to_content"] is False and calls[0]["resolution"] == 64
    assert _files(data) == before  # the data folder is only read
    vae = load_vae(path)
    assert list(vae.config.block_out_channels) == list(demo_vae.DEMO_VAE_CONFIG["block_out_channels"])
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)  # 64 px -> 16x16x4

    assert demo_vae.ensure_demo_vae(profile, progress=False) == path
    assert len(calls) == 1  # reused
    # cropped sprites are other training images: another VAE, trained on them
    cropped = resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "out", device="cpu",
                              verbose=False, crop_to_content=True)
    assert demo_vae.ensure_demo_vae(cropped, progress=False) != path
    assert len(calls) == 2 and calls[1]["crop_to_content"] is True
    assert demo_vae.read_report(cropped.vae)["crop_to_content"] is True
    elsewhere = shutil.copytree(path, tmp_path / "my_vae")
    own = resolve_profile("demo", data_dir=data, vae=elsewhere, outputs_dir=tmp_path / "out", device="cpu",
                          verbose=False)
    assert not own.vae_trained_here
    with pytest.raises(ValueError, match="not a VAE trained by helpers.demo.vae"):
        demo_vae.ensure_demo_vae(own)


def test_load_frozen_models_demo_profile(tmp_path, monkeypatch):
    """The demo profile end to end: the packaged MiniLM text encoder + the demo VAE trained on first use."""
    from helpers import profiles
    from helpers.frozen import load_frozen_models

    monkeypatch.setattr(profiles, "data_root", lambda: tmp_path / "data")
    profile = resolve_profile("demo", smoke=True, outputs_dir=tmp_path / "out", device="cpu", verbose=False)
    fm = load_frozen_models(profile)
    assert (Path(profile.vae) / "training_report.json").exists()
    assert Path(profile.vae).parent == tmp_path / "out" / "vae"
    assert not (profile.data_dir / "vae").exists()
    assert fm.text_encoder.kind == "bert" and fm.cross_attention_dim == 384
    assert fm.latent_shape == (4, 16, 16)
    assert fm.text_encoder.encode([""]).shape == (1, 77, 384)
