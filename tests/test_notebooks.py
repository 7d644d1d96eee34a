"""Every chapter notebook runs headless in smoke mode, in order, sharing one data and one outputs folder
(notebook 04 trains the checkpoint that 05 and 06 use) — the same path as `make run`."""

from __future__ import annotations

import json

import pytest

from helpers.notebooks import chapter_notebooks, execute_notebooks

CHAPTERS = ["01_data_inspection", "02_frozen_clip_vae", "03_unet", "04_training", "05_generation",
            "06_submission"]


def test_the_six_chapters_exist_in_order():
    assert [p.stem for p in chapter_notebooks()] == CHAPTERS


@pytest.mark.notebook
def test_all_notebooks_run_in_smoke_mode(tmp_path):
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    params = {"profile": "demo", "smoke": True, "data_dir": str(data), "outputs_dir": str(outputs),
              "run_name": "main"}
    records = execute_notebooks(chapter_notebooks(), tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in CHAPTERS]
    # the chapters leave what they promise
    assert (data / "train_info.json").exists()
    assert any((outputs / "cache").iterdir())
    run = outputs / "main-smoke"
    assert any(run.glob("ckpt/unet_*/diffusion_pytorch_model.safetensors"))
    assert (run / "metrics.jsonl").read_text().strip()
    tests = json.loads((data / "test.json").read_text())
    submission = outputs / "submission"
    assert sorted(p.name for p in submission.glob("*.png")) == sorted(v["image_name"] for v in tests.values())
