"""The demo judge (helpers.demo.judge): labels from captions, adherence, the cache, and scores that rank a perfect
submission above a shuffled one. A smoke demo set (8 species x 4 actions x 2 frames) and a smoke judge (a few
steps, one thread)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import TestPrompt, load_train_set, read_test_prompts
from helpers.demo.dataset import make_demo_dataset
from helpers.demo.species import COLOURS, SHAPES, demo_species
from helpers.data.errors import DataError
from helpers.demo.judge import (ADHERENCE_NAMES, JUDGE_FD_NAME, adherence, ensure_judge, judge_dir, judge_folder,
                           load_judge, prompt_labels, train_judge)


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("judge-data") / "demo", n_species=8, n_frames=2)


@pytest.fixture(scope="module")
def smoke_judge(smoke_set, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ensure_judge(smoke_set, tmp_path_factory.mktemp("judge-out"), smoke=True, progress=False)
    torch.set_num_threads(before)


def _scores(results) -> dict[str, float | None]:
    return {r.name: r.value for r in results}


# --------------------------------------------------------------------------------------------------- labels
def test_prompt_labels_reads_colour_and_shape_of_every_demo_caption():
    for sp in demo_species(40):
        for text in sp.descriptions:
            assert prompt_labels(text + " The monster is jumping.") == (sp.colour, sp.shape), text
    assert prompt_labels("A red slime with bat wings.") == ("red", "slime")  # the first shape named is the body
    assert prompt_labels("PIXEL-ART TEAL SPIDER") == ("teal", "spider")
    assert prompt_labels("a reddish slimeball") == (None, None)  # whole words only
    assert prompt_labels("a photo of a cat") == (None, None)
    assert prompt_labels("a green monster") == ("green", None)
    assert set(COLOURS) >= {"red", "teal"} and "spider" in SHAPES


def test_adherence_counts_colour_shape_and_species_separately():
    predicted = [("red", "slime"), ("red", "bat"), ("blue", "slime"), (None, None), ("red", "slime")]
    wanted = [("red", "slime"), ("red", "slime"), ("red", "slime"), ("red", "slime"), (None, "slime")]
    shares, hits = adherence(predicted, wanted)
    assert hits["colour"] == [1, 1, 0, 0, None]  # the last prompt names no colour: not counted
    assert hits["shape"] == [1, 0, 1, 0, 1]
    assert hits["species"] == [1, 0, 0, 0, None]
    assert shares == {"colour": 2 / 4, "shape": 3 / 5, "species": 1 / 4}
    assert adherence([("red", "bat")], [(None, None)])[0] == {"colour": None, "shape": None, "species": None}


# --------------------------------------------------------------------------------------------------- scores
def _shuffled_by_colour(prompts: list[TestPrompt]) -> list[TestPrompt]:
    """The same image names under prompts of another colour (every image gets a prompt of a different colour)."""
    texts = [p.text_prompt for p in prompts]
    for shift in range(1, len(texts)):
        moved = texts[shift:] + texts[:shift]
        if all(prompt_labels(a)[0] != prompt_labels(b)[0] for a, b in zip(texts, moved)):
            return [TestPrompt(p.key, t, p.image_name) for p, t in zip(prompts, moved)]
    raise AssertionError("no rotation of the prompts changes every colour")


def test_perfect_submission_scores_far_above_a_shuffled_one(smoke_set, smoke_judge):
    prompts = read_test_prompts(smoke_set / "test.json")
    refs = smoke_set / "test_reference"
    perfect = _scores(judge_folder(refs, prompts, refs, smoke_judge))
    shuffled = _scores(judge_folder(refs, _shuffled_by_colour(prompts), refs, smoke_judge))
    for key in ("colour", "shape", "species"):  # (in the smoke set a colour is one species, so one shape)
        assert perfect[ADHERENCE_NAMES[key]] >= 0.75, perfect
        assert shuffled[ADHERENCE_NAMES[key]] <= 0.25, shuffled
    # the Fréchet distance ignores the prompts: the same images are the same distance from the references
    assert perfect[JUDGE_FD_NAME] == pytest.approx(shuffled[JUDGE_FD_NAME])


def test_frechet_distance_is_zero_for_the_references_and_large_for_noise(smoke_set, smoke_judge, tmp_path):
    prompts = read_test_prompts(smoke_set / "test.json")
    refs = smoke_set / "test_reference"
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"
    noise.mkdir()
    for p in prompts:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise / p.image_name)
    same = {r.name: r for r in judge_folder(refs, prompts, refs, smoke_judge)}[JUDGE_FD_NAME]
    far = {r.name: r for r in judge_folder(noise, prompts, refs, smoke_judge)}[JUDGE_FD_NAME]
    assert same.value == pytest.approx(0.0, abs=1e-6)
    assert far.value > 1.0 and far.value > 1000 * max(same.value, 1e-9)
    assert not far.higher_is_better and "not FID" in far.name
    no_ref = {r.name: r for r in judge_folder(refs, prompts, None, smoke_judge)}[JUDGE_FD_NAME]
    assert no_ref.skipped


def test_judge_folder_names_a_missing_image(smoke_set, smoke_judge, tmp_path):
    prompts = read_test_prompts(smoke_set / "test.json")
    shutil.copytree(smoke_set / "test_reference", tmp_path / "gen")
    (tmp_path / "gen" / prompts[3].image_name).unlink()
    with pytest.raises(DataError, match=prompts[3].image_name):
        judge_folder(tmp_path / "gen", prompts, None, smoke_judge)


# --------------------------------------------------------------------------------------------------- cache
def test_cache_is_reused_and_rebuilt_when_the_data_change(smoke_set, smoke_judge, tmp_path, one_thread):
    outputs = smoke_judge.folder.parent.parent
    weights = smoke_judge.folder / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = ensure_judge(smoke_set, outputs, smoke=True, progress=False)
    assert again.folder == smoke_judge.folder and weights.stat().st_mtime_ns == mtime
    assert smoke_judge.folder.parent == outputs / "judge" and not (smoke_set / "judge").exists()

    changed = shutil.copytree(smoke_set, tmp_path / "demo")
    next(iter(sorted((changed / "train").glob("*.png")))).unlink()
    folder = judge_dir(load_train_set(changed, verbose=False), outputs, smoke=True)
    assert folder != smoke_judge.folder and not folder.exists()
    rebuilt = ensure_judge(changed, outputs, smoke=True, progress=False)
    assert rebuilt.folder == folder and (folder / "model.safetensors").is_file()
    assert rebuilt.report["n_images"] == smoke_judge.report["n_images"] - 1
    assert weights.stat().st_mtime_ns == mtime  # the first judge is left as it was


def test_training_is_deterministic_and_reports_accuracies(smoke_set, smoke_judge, tmp_path, one_thread):
    folder = train_judge(smoke_set, tmp_path / "again", smoke=True, progress=False)
    twin = load_judge(folder)
    for (name, a), b in zip(smoke_judge.net.state_dict().items(), twin.net.state_dict().values()):
        assert torch.equal(a, b), name
    report = twin.report
    assert report["accuracy_test_reference"]["n_images"] == len(read_test_prompts(smoke_set / "test.json"))
    assert 0.0 <= report["accuracy_train"]["species"] <= 1.0 and report["seconds_train"] >= 0
    assert report["n_train_images"] + report["n_heldout_images"] == report["n_images"]


def test_data_without_colour_or_shape_words_is_a_clear_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (200, 30 * i, 30)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "a photo of a cat"}\n{"file_name": "1.png", "text": "a dog"}\n')
    with pytest.raises(DataError, match="names a demo colour"):
        train_judge(tmp_path / "imgs", tmp_path / "out", smoke=True, progress=False)
