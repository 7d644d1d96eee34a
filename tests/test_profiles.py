"""helpers.profiles: which profile runs and why, and where its models come from."""

from __future__ import annotations

import pytest

from pathlib import Path

from helpers import profiles
from helpers.data import DataError
from helpers.demo.dataset import SMOKE, make_demo_dataset
from helpers.profiles import COURSE_TEXT_ENCODER, COURSE_VAE, resolve_profile, vae_location


@pytest.fixture()
def offline(monkeypatch):
    """The hub is unreachable (as on the test machines): hub ids never load."""
    monkeypatch.setattr("helpers.frozen.hub.hub_problem", lambda model_id, subfolder=None: f"{model_id}: hub unreachable")
    for name in ("WORKBOOK_PROFILE", "WORKBOOK_SMOKE", "WORKBOOK_TEXT_ENCODER", "WORKBOOK_VAE"):
        monkeypatch.delenv(name, raising=False)


def test_vae_location(tmp_path, tiny_sd_dir, tiny_vae_dir):
    assert vae_location(COURSE_VAE) == (COURSE_VAE, "vae")
    assert vae_location("stabilityai/sd-vae-ft-mse") == ("stabilityai/sd-vae-ft-mse", None)
    assert vae_location("runwayml/stable-diffusion-v1-5/vae") == ("runwayml/stable-diffusion-v1-5", "vae")
    assert vae_location(str(tiny_sd_dir)) == (str(tiny_sd_dir), "vae")  # a whole SD folder: its vae/
    assert vae_location(str(tiny_vae_dir)) == (str(tiny_vae_dir), None)  # the VAE's own folder


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_when_asked(tmp_path, offline, monkeypatch, capsys):
    """data_dir=None: the generated demo set in data/demo-smoke; the VAE goes under the outputs folder."""
    monkeypatch.setattr(profiles, "data_root", lambda: tmp_path / "data")
    p = resolve_profile("demo", smoke=True, outputs_dir=tmp_path / "o", device="cpu")
    assert (p.name, p.smoke, p.resolution, p.unet_preset) == ("demo", True, 64, "tiny")
    assert p.data_dir == tmp_path / "data" / "demo-smoke" and (p.data_dir / "train_info.json").exists()
    assert p.vae_trained_here and p.vae_subfolder is None
    assert Path(p.vae).parent == tmp_path / "o" / "vae" and Path(p.vae).name.startswith("demo-smoke-64px-")
    assert p.run_dir("main") == tmp_path / "o" / "main-smoke"
    assert "Profile: demo (smoke) - asked for" in capsys.readouterr().out


def test_demo_stack_runs_on_any_data_folder_read_only(tmp_path, offline, capsys):
    """A course-format folder that is not the generated demo set is used as it is (nothing written into it); its
    VAE folder is keyed by its images, their preparation and the resolution."""
    data = make_demo_dataset(tmp_path / "my_sprites", n_species=2, n_frames=1)
    (data / ".demo_dataset.json").unlink()  # not ours any more: a user's folder
    before = _files(data)
    p = resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "o", device="cpu")
    assert p.data_dir == data and p.vae_trained_here and "asked for, on" in capsys.readouterr().out
    assert Path(p.vae).parent == tmp_path / "o" / "vae" and Path(p.vae).name.startswith("my_sprites-64px-")
    assert _files(data) == before
    again = resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "o", device="cpu",
                            verbose=False)
    assert again.vae == p.vae  # stable
    others = [resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "o", device="cpu",
                              verbose=False, **kw).vae
              for kw in ({"resolution": 32}, {"crop_to_content": True})]
    full = resolve_profile("demo", smoke=False, data_dir=data, outputs_dir=tmp_path / "o", device="cpu",
                           verbose=False)
    assert len({p.vae, *others, full.vae}) == 4  # resolution, crop and recipe (smoke) each change the folder
    first = sorted((data / "train").iterdir())[0]
    first.write_bytes(first.read_bytes() + b"\0")  # one image changed: another VAE
    assert resolve_profile("demo", smoke=True, data_dir=data, outputs_dir=tmp_path / "o", device="cpu",
                           verbose=False).vae != p.vae
    assert not (tmp_path / "o" / "vae").exists()  # resolving trains nothing


def test_auto_falls_back_to_demo_and_says_why(tmp_path, offline, monkeypatch, capsys):
    monkeypatch.setattr(profiles, "data_root", lambda: tmp_path / "data")
    p = resolve_profile("auto", smoke=True, outputs_dir=tmp_path / "o", device="cpu")
    assert p.name == "demo" and p.data_dir == tmp_path / "data" / "demo-smoke"
    assert f"no course data in {tmp_path / 'data' / 'hw6'}" in p.reason
    # with the data there, the missing models are the reason; the generated demo set runs
    course = make_demo_dataset(tmp_path / "data" / "hw6", **SMOKE)
    p = resolve_profile("auto", smoke=True, outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    assert p.name == "demo" and f"{COURSE_TEXT_ENCODER}: hub unreachable" in p.reason
    assert p.data_dir == tmp_path / "data" / "demo-smoke"
    # a data_dir given: the demo stack runs on it, and the banner says so
    p = resolve_profile("auto", smoke=True, data_dir=course, outputs_dir=tmp_path / "o", device="cpu")
    assert p.name == "demo" and p.data_dir == course and p.vae_trained_here
    assert f"using the demo stack on {course}" in " ".join(capsys.readouterr().out.split())


def test_scale_is_a_parameter(tmp_path, offline, tiny_clip_dir, tiny_sd_dir):
    """resolution / unet_preset override the profile's; None keeps it; impossible values are refused clearly."""
    data = make_demo_dataset(tmp_path / "hw6", n_species=2, n_frames=1)
    kw = dict(data_dir=data, outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    p = resolve_profile("demo", resolution=128, unet_preset="reference", crop_to_content=True,
                        image_column="img", caption_column="caps", **kw)
    assert (p.resolution, p.unet_preset, p.crop_to_content) == (128, "reference", True)
    assert (p.image_column, p.caption_column) == ("img", "caps")
    assert (resolve_profile("demo", **kw).resolution, resolve_profile("demo", **kw).unet_preset) == (64, "demo")
    course = resolve_profile("course", text_encoder=tiny_clip_dir, vae=tiny_sd_dir, resolution=128,
                             unet_preset="demo", **kw)
    assert (course.name, course.resolution, course.unet_preset) == ("course", 128, "demo")
    with pytest.raises(ValueError, match="multiple of 16 .e.g. 64 or 80"):
        resolve_profile("demo", resolution=72, **kw)  # demo VAE /4, demo UNet /4
    with pytest.raises(ValueError, match="divides the side by 8 .* multiple of 32"):  # SD-like VAE, demo UNet
        resolve_profile("course", text_encoder=tiny_clip_dir, vae=tiny_sd_dir, resolution=100, unet_preset="demo",
                        **kw)
    with pytest.raises(ValueError, match="not a UNet preset: choose one of 'reference', 'demo', 'tiny'"):
        resolve_profile("demo", unet_preset="huge", **kw)
    with pytest.raises(ValueError, match="positive number of pixels"):
        resolve_profile("demo", resolution=-64, **kw)


def test_missing_data_folder_is_named(tmp_path, offline):
    with pytest.raises(DataError, match=f"{tmp_path / 'typo'}: no such folder"):
        resolve_profile("demo", data_dir=tmp_path / "typo", outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    assert not (tmp_path / "typo").exists()


def test_profile_load_train_set(tmp_path, offline):
    data = make_demo_dataset(tmp_path / "d", n_species=2, n_frames=1)
    p = resolve_profile("demo", data_dir=data, outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    train_set = p.load_train_set(verbose=False)
    assert train_set.root == data and len(train_set) == 8


def test_profile_reads_a_datasets_source_with_its_columns(tmp_path, offline):
    """image_column / caption_column reach the reader; the copy goes under <outputs>/datasets, not the source."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    images = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(4)]
    source = tmp_path / "my_dataset"
    datasets.Dataset.from_dict({"picture": images, "caps": [[f"monster {i}", f"a monster {i}"] for i in range(4)]}
                               ).cast_column("picture", datasets.Image()).save_to_disk(str(source))
    before = _files(source)
    kw = dict(data_dir=source, outputs_dir=tmp_path / "o", device="cpu", verbose=False)
    with pytest.raises(DataError, match="image"):  # the default columns are not there: the error says so
        resolve_profile("demo", **kw)
    p = resolve_profile("demo", image_column="picture", caption_column="caps", **kw)
    train_set = p.load_train_set(verbose=False)
    assert len(train_set) == 4 and train_set.examples[0].captions == ("monster 0", "a monster 0")
    assert train_set.root.parent == tmp_path / "o" / "datasets"
    assert Path(p.vae).parent == tmp_path / "o" / "vae" and _files(source) == before


def test_course_refuses_with_what_is_missing(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(profiles, "data_root", lambda: tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"course profile cannot run: no course data in .*missing train"):
        resolve_profile("course", device="cpu", verbose=False)
    with pytest.raises(FileNotFoundError, match=r"course profile cannot run: .*nothing: no such folder"):
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
