"""The latent/text cache: built once from real (tiny) encoders, reused, and sampled reproducibly."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file as real_save_file

import helpers.frozen.cache as cache_mod
from helpers.frozen.cache import build_cache, load_cache
from helpers.data import load_train_set
from helpers.data.images import load_image, pil_to_tensor
from helpers.demo.dataset import ensure_demo_dataset
from helpers.frozen import FrozenModels, encode_images, load_text_encoder, load_vae
from helpers.profiles import Profile


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_clip_text_dir, tiny_vae_dir):
    root = tmp_path_factory.mktemp("cache")
    data = ensure_demo_dataset(root / "data", smoke=True)
    profile = Profile(name="demo", smoke=True, reason="test", data_dir=data, outputs_dir=root / "outputs",
                      resolution=32, text_encoder=str(tiny_clip_text_dir), vae=str(tiny_vae_dir),
                      vae_subfolder=None, unet_preset="tiny", device="cpu")
    frozen = FrozenModels(text_encoder=load_text_encoder(profile.text_encoder), vae=load_vae(profile.vae),
                          profile=profile)
    train_set = load_train_set(data, verbose=False)
    folder = build_cache(train_set, frozen, profile, batch_size=16)
    return profile, frozen, train_set, folder


def test_cache_holds_every_image_view_and_caption(setup):
    profile, frozen, train_set, folder = setup
    cache = load_cache(folder)
    assert cache.n_images == len(train_set.examples)
    assert cache.latent_shape == (4, 16, 16)  # tiny VAE downsamples by 2
    assert cache.captions == train_set.distinct_captions() and cache.captions[cache.empty_index] == ""
    assert cache.scaling_factor == pytest.approx(frozen.vae.config.scaling_factor)
    # the cached distribution is the VAE's, for the image and for its mirror image
    i = 5
    image = pil_to_tensor(load_image(train_set.examples[i].path, 32))[None]
    mean, std = encode_images(frozen.vae, image)
    mean_flip, _ = encode_images(frozen.vae, image.flip(-1))
    torch.testing.assert_close(cache.mean[i].float(), mean[0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cache.std[i].float(), std[0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cache.mean_flip[i].float(), mean_flip[0], atol=2e-3, rtol=2e-3)
    assert not torch.allclose(cache.mean[i], cache.mean_flip[i])
    # each image's candidate captions are exactly its example's captions
    for j, ex in enumerate(train_set.examples):
        ids = cache.caption_ids[j, : int(cache.caption_counts[j])].tolist()
        assert [cache.captions[k] for k in ids] == list(ex.captions)
    emb = frozen.text_encoder.encode([train_set.examples[0].captions[0]])[0]
    torch.testing.assert_close(cache.caption_embedding(train_set.examples[0].captions[0]), emb, atol=2e-3, rtol=2e-3)


def test_second_build_reuses_the_cache_without_encoding(setup, monkeypatch):
    profile, frozen, train_set, folder = setup

    def must_not_encode(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr("helpers.frozen.cache.encode_images", must_not_encode)
    assert build_cache(train_set, frozen, profile) == folder


def test_key_follows_resolution_and_data(setup):
    profile, frozen, train_set, folder = setup
    key = cache_mod.cache_key
    base = dict(text_encoder=profile.text_encoder, vae=profile.vae, vae_subfolder=None, resolution=32,
                background=(255, 255, 255))
    assert key(train_set, **base) == key(train_set, **base)
    assert key(train_set, **{**base, "resolution": 64}) != key(train_set, **base)
    assert key(train_set, **{**base, "background": (0, 0, 0)}) != key(train_set, **base)
    fewer = train_set.without_keys([train_set.examples[0].key])
    assert key(fewer, **base) != key(train_set, **base)


def test_batch_is_reproducible_and_follows_its_options(setup):
    cache = load_cache(setup[3])
    idx = torch.arange(8)
    a = cache.batch(idx, torch.Generator().manual_seed(1))
    b = cache.batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (8, 4, 16, 16) and a[0].dtype == torch.float32
    # no flip, many draws: the sampled latents average to the scaled mean, spread by the scaled std
    n, k = 400, cache.scaling_factor
    for flip_p, mean, std in ((0.0, cache.mean, cache.std), (1.0, cache.mean_flip, cache.std_flip)):
        draws = cache.batch(idx.repeat(n), torch.Generator().manual_seed(0), flip_p=flip_p)[0].view(n, 8, 4, 16, 16)
        stderr = std[:8].float() * k / n**0.5
        assert ((draws.mean(0) - mean[:8].float() * k).abs() <= 5 * stderr + 1e-3).all()
        torch.testing.assert_close(draws.std(0), std[:8].float() * k, atol=0.02, rtol=0.25)
    # dropout 1: every caption is ""; dropout 0: never ""
    _, dropped = cache.batch(idx, torch.Generator().manual_seed(0), caption_dropout=1.0)
    assert torch.equal(dropped, cache.text_emb[[cache.empty_index] * 8].float())
    _, kept = cache.batch(idx, torch.Generator().manual_seed(0), caption_dropout=0.0)
    empty = cache.text_emb[cache.empty_index].float()
    assert not any(torch.equal(row, empty) for row in kept)


def test_interrupted_build_leaves_no_cache_that_looks_complete(setup, monkeypatch, tmp_path):
    profile, frozen, train_set, _ = setup
    other = Profile(**{**profile.__dict__, "outputs_dir": tmp_path})
    calls = []

    def failing_save(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "save_file", failing_save)
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # a hard kill: no clean-up runs
    with pytest.raises(KeyboardInterrupt):
        build_cache(train_set, frozen, other)
    leftovers = list((tmp_path / "cache").iterdir())
    assert all(not (p / cache_mod.COMPLETE).exists() for p in leftovers)
    with pytest.raises(FileNotFoundError, match="not a complete latent cache"):
        load_cache(leftovers[0])
    monkeypatch.undo()
    folder = build_cache(train_set, frozen, other)
    assert load_cache(folder).n_images == len(train_set.examples)


def test_crop_to_content_comes_from_the_profile(setup, tmp_path):
    """profile.crop_to_content: another cache (its key includes it) of the cropped images."""
    from dataclasses import replace

    profile, frozen, train_set, folder = setup
    cropped = replace(profile, crop_to_content=True, outputs_dir=tmp_path)
    subset = train_set.without_keys(train_set.keys()[2:])  # two keys: a few images are enough
    crop_folder = build_cache(subset, frozen, cropped)
    assert crop_folder.name != build_cache(subset, frozen, replace(cropped, crop_to_content=False)).name
    cache = load_cache(crop_folder)
    assert cache.meta["crop_to_content"] is True
    image = pil_to_tensor(load_image(subset.examples[0].path, 32, crop_to_content=True))[None]
    plain = pil_to_tensor(load_image(subset.examples[0].path, 32))[None]
    mean, _ = encode_images(frozen.vae, image)
    torch.testing.assert_close(cache.mean[0].float(), mean[0], atol=2e-3, rtol=2e-3)
    assert not torch.allclose(encode_images(frozen.vae, plain)[0][0], mean[0], atol=2e-3, rtol=2e-3)


def test_a_training_split_takes_its_rows_from_the_whole_sets_cache(setup, monkeypatch):
    """The cache of a subset (the training keys, without the held-out ones) is cut from the existing cache of the
    whole data set (nothing encoded) and holds what encoding the subset itself gives."""
    profile, frozen, train_set, folder = setup
    keys = train_set.keys()
    subset = train_set.without_keys(keys[::3])
    with monkeypatch.context() as m:
        m.setattr("helpers.frozen.cache.encode_images", lambda *a, **k: pytest.fail("the subset should not be encoded"))
        m.setattr(frozen.text_encoder, "encode", lambda *a, **k: pytest.fail("its captions should not be encoded"))
        cut = load_cache(build_cache(subset, frozen, profile))
    assert cut.path != folder and cut.n_images == len(subset.examples) < len(train_set.examples)
    assert cut.image_names == [ex.path.name for ex in subset.examples]
    assert cut.captions == subset.distinct_captions()
    encoded = load_cache(build_cache(subset, frozen, profile, rebuild=True, batch_size=7))  # encoded for real
    for name in ("mean", "std", "mean_flip", "std_flip", "text_emb"):
        torch.testing.assert_close(getattr(cut, name).float(), getattr(encoded, name).float(), atol=2e-3, rtol=2e-3)
    assert torch.equal(cut.caption_ids, encoded.caption_ids)
    # an image changed since the whole set was cached: its row is no longer valid, so the subset is encoded
    changed = subset.examples[0].path
    shutil.copy2(changed, changed.with_suffix(".bak"))
    try:
        changed.write_bytes(changed.read_bytes() + b"\0")
        with monkeypatch.context() as m:
            m.setattr("helpers.frozen.cache.encode_images", lambda *a, **k: pytest.fail("encoded"))
            with pytest.raises(pytest.fail.Exception, match="encoded"):
                build_cache(subset, frozen, profile)
    finally:
        shutil.move(changed.with_suffix(".bak"), changed)


_BUILD_SCRIPT = """
import sys, time
from pathlib import Path
import helpers.frozen.cache as cache_mod
from helpers.data import load_train_set
from helpers.frozen import FrozenModels, load_text_encoder, load_vae
from helpers.profiles import Profile

data, outputs, text_dir, vae_dir, flags = map(Path, sys.argv[1:6])
profile = Profile(name="demo", smoke=True, reason="test", data_dir=data, outputs_dir=outputs, resolution=32,
                  text_encoder=str(text_dir), vae=str(vae_dir), vae_subfolder=None, unet_preset="tiny", device="cpu")
frozen = FrozenModels(text_encoder=load_text_encoder(str(text_dir)), vae=load_vae(str(vae_dir)), profile=profile)
real = cache_mod._write_cache

def held(*args, **kwargs):  # the first builder holds the lock until the test says go
    (flags / "started").touch()
    deadline = time.time() + 60
    while not (flags / "go").exists() and time.time() < deadline:
        time.sleep(0.05)
    return real(*args, **kwargs)

cache_mod._write_cache = held
print("FOLDER", cache_mod.build_cache(load_train_set(data, verbose=False), frozen, profile, batch_size=16), flush=True)
"""


def test_two_processes_building_one_cache_build_it_once(setup, tmp_path, tiny_clip_text_dir, tiny_vae_dir):
    """Chapter 02 in JupyterLab while `make run` runs it: the second builder waits for the first and reuses its
    complete cache (without the lock both would write the same folder at once)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    profile, frozen, train_set, folder = setup
    flags = tmp_path / "flags"
    flags.mkdir()
    args = [sys.executable, "-c", _BUILD_SCRIPT, str(train_set.root), str(tmp_path / "outputs"),
            str(tiny_clip_text_dir), str(tiny_vae_dir), str(flags)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 180
    while not (flags / "started").exists():
        assert first.poll() is None and time.time() < deadline, first.stdout.read() if first.poll() else "timeout"
        time.sleep(0.1)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in second.stdout:  # the second builder says it waits, then the first may go on
        seen.append(line)
        if "Another process is building" in line:
            break
    (flags / "go").touch()
    out_first, _ = first.communicate(timeout=180)
    out_second = "".join(seen) + second.communicate(timeout=180)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first + out_second
    assert "Another process is building" in out_second and "while this one waited" in out_second, out_second
    assert "Cached" in out_first and "Cached" not in out_second
    built = [line.split(" ", 1)[1] for line in (out_first + out_second).splitlines() if line.startswith("FOLDER")]
    assert len(built) == 2 and built[0] == built[1]
    cache = load_cache(built[0])
    assert cache.n_images == len(train_set.examples)
    torch.testing.assert_close(cache.mean.float(), load_cache(folder).mean.float())
