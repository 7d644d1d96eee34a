"""Every chapter notebook runs headless in smoke mode, in order, sharing one data and one outputs folder
(notebook 04 trains the checkpoint that 05 and 06 use) — the same path as `make run`:

- in the demo profile on the generated demo set (``data_dir=None``);
- in the course profile with tiny local stand-ins for CLIP and Stable Diffusion's VAE (real architectures, random
  weights, loaded through the same ``from_pretrained`` code as the hub models);
- on data sets of a user's own, built here in temporary folders: a course-format set that is not the demo set
  (monster IDs with underscores, palette and grey+alpha images), an imagefolder set without test.json, a
  ``Dataset.save_to_disk`` folder and a parquet file. These run through :func:`run_chapters_on`, which also checks
  that the VAE was trained under the outputs folder and that the data folder is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.demo.dataset import SMOKE, make_demo_dataset
from helpers.exercises import ch01, ch02, ch03, ch04, ch05, ch06
from helpers.notebooks import chapter_notebooks, execute_notebooks

CHAPTERS = ["01_data_inspection", "02_frozen_clip_vae", "03_unet", "04_training", "05_generation",
            "06_submission"]


EXERCISE_MODULES = [ch01, ch02, ch03, ch04, ch05, ch06]


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


# --------------------------------------------------------------------------------------------------- own data
def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of the file ``path``), and every folder, by relative path."""
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


#: What a data set of one's own goes through: every chapter but 03 (the UNet's architecture reads no data; the demo
#: and course-profile runs execute it).
DATA_CHAPTERS = [c for c in CHAPTERS if c != "03_unet"]


def run_chapters_on(data_dir: str | Path, tmp_path: Path, *, profile: str = "demo", chapters=DATA_CHAPTERS,
                    **params) -> Path:
    """Run the ``chapters`` (default: :data:`DATA_CHAPTERS`) in smoke mode on ``data_dir`` (other parameters:
    ``params``, e.g. ``image_column``), into ``tmp_path / "outputs"``, and check what every run on a user's data set
    must do: the demo VAE is trained under the outputs folder (on this data) and ``data_dir`` is left byte-identical.
    Returns the outputs folder."""
    before = tree_digest(data_dir)
    outputs = tmp_path / "outputs"
    params = {"profile_name": profile, "smoke": True, "data_dir": str(data_dir), "outputs_dir": str(outputs),
              "run_name": "main", **params}
    notebooks = [nb for nb in chapter_notebooks() if nb.stem in chapters]
    records = execute_notebooks(notebooks, tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in chapters]
    assert tree_digest(data_dir) == before, f"the chapters modified the data folder {data_dir}"
    reports = [json.loads(p.read_text()) for p in (outputs / "vae").glob("*/training_report.json")]
    assert len(reports) == 1, f"expected one demo VAE under {outputs / 'vae'}, found {len(reports)}"
    assert reports[0]["n_images"] > 0 and reports[0]["smoke"] is True
    assert any((outputs / "main-smoke").glob("ckpt/unet_*/diffusion_pytorch_model.safetensors"))
    return outputs


COLOURS = ("red", "blue", "green", "yellow")  # colour words the demo's colour check knows


def _sprite(rng: np.random.Generator, colour: tuple[int, int, int], size: int = 32) -> Image.Image:
    """A blob of one colour with a dark outline and eyes, on a transparent background (RGBA)."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    ry, rx = rng.integers(size // 6, size // 3, 2)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    arr = np.zeros((size, size, 4), np.uint8)
    arr[inside <= 1.3] = (20, 20, 30, 255)
    arr[inside <= 1.0] = (*colour, 255)
    arr[cy - ry // 3, [cx - rx // 3, cx + rx // 3]] = (250, 250, 240, 255)
    return Image.fromarray(arr, "RGBA")


def make_course_format_set(root: Path) -> Path:
    """A course-format set that is not the demo set: 4 monsters whose IDs contain underscores x 2 actions x 2
    frames (``fire_imp_01_attack_0.png``, key ``fire_imp_01_attack``), some saved as palette (P) or grey+alpha (LA)
    images, and a test.json."""
    rng = np.random.default_rng(0)
    palette = {"red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 60), "yellow": (220, 200, 40)}
    monsters = {"fire_imp_01": "red", "ice_bat_02": "blue", "moss_golem_03": "green", "sun_slime_04": "yellow"}
    actions = {"attack": "The monster is attacking.", "idle": "The monster stands still."}
    (root / "train").mkdir(parents=True)
    info, n = {}, 0
    for monster, colour in monsters.items():
        for action, description in actions.items():
            key = f"{monster}_{action}"
            kind = monster.split("_")[1]
            info[key] = {"given_description": [f"A {colour} {kind} with a dark outline.", f"a small {colour} {kind}"],
                         "action_description": description}
            for frame in range(2):
                img, n = _sprite(rng, palette[colour]), n + 1
                if n % 5 == 0:
                    img = img.convert("LA")
                elif n % 3 == 0:
                    img = img.quantize(16, method=Image.Quantize.FASTOCTREE)  # palette, transparent index
                img.save(root / "train" / f"{key}_{frame}.png")
    (root / "train_info.json").write_text(json.dumps(info, indent=1))
    tests = {f"test_{i}": {"text_prompt": f"A {c} imp with a dark outline. The monster is attacking.",
                           "image_name": f"test_{i}.png"} for i, c in enumerate(COLOURS)}
    (root / "test.json").write_text(json.dumps(tests, indent=1))
    return root


def make_imagefolder_set(root: Path) -> Path:
    """A Hugging Face imagefolder: 10 images in a sub-folder, ``metadata.jsonl`` with a caption or a list of
    captions per image, some non-square; no test.json."""
    rng = np.random.default_rng(1)
    (root / "pics").mkdir(parents=True)
    kinds = ["spiky critter", "round critter", "tall critter", "flat critter", "tiny critter"]
    lines = []
    for i in range(10):
        colour = tuple(int(v) for v in rng.integers(30, 220, 3))
        img = _sprite(rng, colour).convert("RGB")
        if i % 4 == 0:
            img = img.crop((0, 4, 32, 28))  # 32x24: padded to square by the loader
        name = f"pics/{i:04d}.png"
        img.save(root / name)
        text = [f"a {kinds[i % 5]}", f"a {kinds[i % 5]} number {i}"] if i % 2 else f"a {kinds[i % 5]}"
        lines.append(json.dumps({"file_name": name, "text": text}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


# --------------------------------------------------------------------------------------------------- the runs
@pytest.mark.notebook
def test_all_notebooks_run_in_smoke_mode(tmp_path, monkeypatch):
    """data_dir=None: the generated demo set (made in WORKBOOK_DATA on first use)."""
    monkeypatch.setenv("WORKBOOK_DATA", str(tmp_path / "data"))  # the kernels inherit it
    outputs = tmp_path / "outputs"
    params = {"profile_name": "demo", "smoke": True, "data_dir": None, "outputs_dir": str(outputs), "run_name": "main",
              "solutions": True}  # the exercises run their solutions here; the other tests run the stubs
    records = execute_notebooks(chapter_notebooks(), tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in CHAPTERS]
    _check_outputs(tmp_path / "data" / "demo-smoke", outputs, size=64)
    assert list((outputs / "vae").glob("demo-smoke-64px-*/training_report.json"))
    for chapter, module in zip(CHAPTERS, EXERCISE_MODULES):  # solutions=True: every exercise checked correct
        executed = (tmp_path / "executed" / f"{chapter}.ipynb").read_text()
        for ex in module.EXERCISES:
            assert f"✓ {ex.name}: correct" in executed, (chapter, ex.name)
        assert executed.count("→ the chapter continues with the solution") == len(module.EXERCISES)
    assert "AttentionMaps('" in (tmp_path / "executed" / "05_generation.ipynb").read_text()  # the maps, plotted
    assert list((outputs / "main-smoke" / "logs").glob("*/events.out.tfevents.*"))  # TensorBoard


@pytest.mark.notebook
def test_the_chapters_run_on_a_course_format_set_of_ones_own(tmp_path):
    """auto with a data folder and no course models: the demo stack on that folder, which stays untouched."""
    data = make_course_format_set(tmp_path / "my_sprites")
    outputs = run_chapters_on(data, tmp_path, profile="auto")
    _check_outputs(data, outputs, size=64)
    report = json.loads(next((outputs / "vae").glob("my_sprites-64px-*/training_report.json")).read_text())
    assert report["data"] == str(data) and report["n_images"] == 16
    executed = (tmp_path / "executed" / "01_data_inspection.ipynb").read_text()
    assert "using the demo stack on" in executed and "4 monsters, 2 actions" in executed  # IDs with "_"
    assert "palette image (P)" in executed and "grey + alpha image (LA)" in executed
    # not the generated demo set: the retrieval judge checks chapter 04's model and judges chapter 06's candidates
    ch04 = (tmp_path / "executed" / "04_training.ipynb").read_text()
    assert "retrieval judge my_sprites-retrieval-" in ch04
    assert "Held-out prompts: the judge ranks" in ch04 or "Prompt following not measured" in ch04
    ch06 = (tmp_path / "executed" / "06_submission.ipynb").read_text()
    assert "judge: my_sprites-retrieval-" in ch06 and "it may rank settings" in ch06


@pytest.mark.notebook
def test_the_chapters_run_on_an_imagefolder_without_test_json(tmp_path):
    """No test.json: chapter 06 exports nothing and scores the held-out split, and says so; crop_to_content on."""
    data = make_imagefolder_set(tmp_path / "my_pictures")
    outputs = run_chapters_on(data, tmp_path, crop_to_content=True)
    assert not (outputs / "submission").exists() and not (outputs / "submission.zip").exists()
    held = json.loads((outputs / "main-smoke" / "heldout" / "split.json").read_text())
    assert held["crop_to_content"] is True
    executed = (tmp_path / "executed" / "06_submission.ipynb").read_text()
    assert "no `prompts` file: there is no submission to export" in executed
    assert "prepared like training images (crop_to_content=True)" in executed


@pytest.mark.notebook
def test_all_notebooks_run_in_the_course_profile_with_local_models(tmp_path, tiny_clip_dir, tiny_sd_dir):
    """The course path: CLIP tokenizer + CLIPTextModel from a full CLIPModel folder, the VAE from an SD folder's
    vae/ subfolder, 256 px images -> 32x32x4 latents, 256x256 submission PNGs, CLIP-I/CLIP-T with a real (tiny)
    CLIP model."""
    data, outputs = make_demo_dataset(tmp_path / "hw6", **SMOKE), tmp_path / "outputs"
    params = {"profile_name": "course", "smoke": True, "data_dir": str(data), "outputs_dir": str(outputs),
              "run_name": "main", "text_encoder": str(tiny_clip_dir), "vae": str(tiny_sd_dir),
              "clip_model": str(tiny_clip_dir)}
    records = execute_notebooks(chapter_notebooks(), tmp_path / "executed", params, timeout=600)
    assert [r["notebook"] for r in records] == [c + ".ipynb" for c in CHAPTERS]
    _check_outputs(data, outputs, size=256)
    meta = json.loads(next((outputs / "main-smoke").glob("ckpt/unet_*/workbook.json")).read_text())
    assert meta["profile_name"] == "course" and meta["resolution"] == 256
    assert meta["text_encoder"] == str(tiny_clip_dir) and meta["vae_subfolder"] == "vae"
    executed = (tmp_path / "executed" / "06_submission.ipynb").read_text()
    assert "CLIP-I" in executed and "similarity=raw cosine" in executed  # scored, not skipped
    for chapter, module in zip(CHAPTERS, EXERCISE_MODULES):  # the stubs as given: the chapters go on regardless
        executed = (tmp_path / "executed" / f"{chapter}.ipynb").read_text()
        for ex in module.EXERCISES:
            assert f"· {ex.name}: not attempted" in executed, (chapter, ex.name)


def make_datasets_source(root: Path, kind: str) -> Path:
    """A Hugging Face ``datasets`` source of 12 sprites (some palette images), written with the library itself:
    ``kind="save_to_disk"``: a ``save_to_disk`` folder with columns ``picture`` / ``caption`` (a list of captions
    per row); ``kind="parquet"``: one ``.parquet`` file with the default ``image`` / ``text`` columns."""
    import datasets

    rng = np.random.default_rng(2)
    palette = {"red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 60), "yellow": (220, 200, 40)}
    images, captions = [], []
    for i in range(12):
        colour = COLOURS[i % len(COLOURS)]
        img = _sprite(rng, palette[colour])
        images.append(img.convert("P") if i % 3 == 0 else img)
        captions.append([f"a {colour} blob with a dark outline", f"a small {colour} blob"])
    if kind == "save_to_disk":
        ds = datasets.Dataset.from_dict({"picture": images, "caption": captions, "id": list(range(12))})
        ds.cast_column("picture", datasets.Image()).save_to_disk(str(root))
        return root
    ds = datasets.Dataset.from_dict({"image": images, "text": [c[0] for c in captions]})
    root.parent.mkdir(parents=True, exist_ok=True)
    ds.cast_column("image", datasets.Image()).to_parquet(str(root))
    return root


def _check_datasets_copy(outputs: Path, name: str, caption_column: str) -> None:
    """The source was copied once, as an imagefolder, under ``<outputs>/datasets/`` (never into the data)."""
    copies = [json.loads(p.read_text()) for p in (outputs / "datasets").glob(f"{name}-*/source.json")]
    assert len(copies) == 1, f"expected one copy of {name} under {outputs / 'datasets'}, found {len(copies)}"
    assert copies[0]["caption_column"] == caption_column and copies[0]["n_rows"] == 12 and not copies[0]["problems"]


@pytest.mark.notebook
def test_the_chapters_run_on_a_save_to_disk_dataset(tmp_path):
    """A ``Dataset.save_to_disk`` folder with its own column names and lists of captions; no test.json."""
    pytest.importorskip("datasets")
    data = make_datasets_source(tmp_path / "my_dataset", "save_to_disk")
    outputs = run_chapters_on(data, tmp_path, image_column="picture", caption_column="caption")
    _check_datasets_copy(outputs, "my_dataset", "caption")
    executed = (tmp_path / "executed" / "01_data_inspection.ipynb").read_text()
    assert f"save_to_disk folder {data}" in executed and "palette image (P)" in executed


@pytest.mark.notebook
def test_the_data_chapters_and_training_run_on_a_parquet_file(tmp_path):
    """One ``.parquet`` file with the default ``image`` / ``text`` columns; no test.json. Chapters 01, 02 and 04
    (the source read and copied, the demo VAE, the cache, the held-out split, training): from the copy on, every
    chapter reads the same imagefolder as the save_to_disk run above, which runs the others."""
    pytest.importorskip("datasets")
    data = make_datasets_source(tmp_path / "sprites" / "my_sprites.parquet", "parquet")
    folder = tree_digest(data.parent)
    outputs = run_chapters_on(data, tmp_path, chapters=["01_data_inspection", "02_frozen_clip_vae", "04_training"])
    assert tree_digest(data.parent) == folder, f"the chapters wrote next to {data}"
    _check_datasets_copy(outputs, "my_sprites", "text")
    executed = (tmp_path / "executed" / "01_data_inspection.ipynb").read_text()
    assert f"parquet file {data}" in executed
