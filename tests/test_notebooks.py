"""Every chapter notebook runs headless in smoke mode, in order, sharing one data and one outputs folder
(notebook 04 trains the checkpoint that 05 and 06 use) — the same path as `make run`. Once in the demo profile,
once in the course profile with tiny local stand-ins for CLIP and Stable Diffusion's VAE (real architectures,
random weights, loaded through the same ``from_pretrained`` code as the hub models)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers.demo_data import SMOKE, make_demo_dataset
from helpers.notebooks import chapter_notebooks, execute_notebooks

CHAPTERS = ["01_data_inspection", "02_frozen_clip_vae", "03_unet", "04_training", "05_generation",
            "06_submission"]


def test_the_six_chapters_exist_in_order():
    assert [p.stem for p in chapter_notebooks()] == CHAPTERS


def _check_outputs(data, outputs, size: int) -> None:
    """The chapters leave what they promise: data, cache, a checkpoint, metrics, one PNG per test prompt."""
    assert (data / "train_info.json").exists()
    assert any((outputs / "cache").iterdir())
    run = outputs / "main-smoke"
    assert any(run.glob("ckpt/unet_*/diffusion_pytorch_model.safetensors"))
    assert (run / "metrics.jsonl").read_text().strip()
    tests = json.loads((data / "test.json").read_text())
    submission = outputs / "submission"
    pngs = sorted(submission.glob("*.png"))
    assert [p.name for p in pngs] == sorted(v["image_name"] for v in tests.values())
    with Image.open(pngs[0]) as im:
        assert im.size == (size, size) and im.mode == "RGB"
    assert (outputs / "submission.zip").exists()


@pytest.mark.notebook
def test_all_notebooks_run_in_smoke_mode(tmp_path):
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    params = {"profile": "demo", "smoke": True, "data_dir": str(data), "outputs_dir": str(outputs),
              "run_name": "main"}
    records = execute_notebooks(chapter_notebooks(), tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in CHAPTERS]
    _check_outputs(data, outputs, size=64)


@pytest.mark.notebook
def test_all_notebooks_run_in_the_course_profile_with_local_models(tmp_path, tiny_clip_dir, tiny_sd_dir):
    """The course path: CLIP tokenizer + CLIPTextModel from a full CLIPModel folder, the VAE from an SD folder's
    vae/ subfolder, 256 px images -> 32x32x4 latents, 256x256 submission PNGs, CLIP-I/CLIP-T with a real (tiny)
    CLIP model."""
    data, outputs = make_demo_dataset(tmp_path / "hw6", **SMOKE), tmp_path / "outputs"
    params = {"profile": "course", "smoke": True, "data_dir": str(data), "outputs_dir": str(outputs),
              "run_name": "main", "text_encoder": str(tiny_clip_dir), "vae": str(tiny_sd_dir),
              "clip_model": str(tiny_clip_dir)}
    records = execute_notebooks(chapter_notebooks(), tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in CHAPTERS]
    _check_outputs(data, outputs, size=256)
    meta = json.loads(next((outputs / "main-smoke").glob("ckpt/unet_*/workbook.json")).read_text())
    assert meta["profile"] == "course" and meta["resolution"] == 256
    assert meta["text_encoder"] == str(tiny_clip_dir) and meta["vae_subfolder"] == "vae"
    executed = (tmp_path / "executed" / "06_submission.ipynb").read_text()
    assert "CLIP-I" in executed and "similarity=raw cosine" in executed  # scored, not skipped
