"""The retrieval judge (helpers.submission.retrieval_judge): deterministic, atomic, cached training on a smoke demo set
with the tiny CLIP text encoder; validation on planted judges (perfect, random, constant) with duplicate captions;
scores of a folder of generated images; and the rule "never rank with a judge that cannot tell"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

import helpers.submission.retrieval_judge as rj
from helpers.data import TestPrompt, load_train_set
from helpers.data.errors import DataError
from helpers.demo.dataset import make_demo_dataset
from helpers.frozen import load_text_encoder
from helpers.submission import pick_metric
from helpers.submission.retrieval_judge import (RETRIEVAL_COSINE, RETRIEVAL_TOP1, RETRIEVAL_TOP5, RetrievalJudge,
                                                RetrievalJudgeNet, ensure_retrieval_judge, judge_can_rank,
                                                load_retrieval_judge, retrieval_judge_dir, train_retrieval_judge,
                                                validate_retrieval_judge)
from helpers.submission.scores import MetricResult, load_tensors

MARK = 77  # the green value of a planted image's pixels (its red value is its caption's index)


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("rj-data") / "demo", n_species=8, n_frames=2)


@pytest.fixture(scope="module")
def encoder(tiny_clip_text_dir):
    return load_text_encoder(tiny_clip_text_dir)


@pytest.fixture(scope="module")
def smoke_judge(smoke_set, encoder, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ensure_retrieval_judge(smoke_set, encoder, tmp_path_factory.mktemp("rj-out"), smoke=True, progress=False)
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------- planted judges
class PlantedJudge(RetrievalJudge):
    """A judge with a real (untrained) text side whose image embedding is planted: ``perfect``: a planted image's
    embedding IS its caption's text embedding (anything else: random); ``random``: every image random;
    ``constant``: every image and every text the same vector."""

    def __init__(self, encoder, captions, mode="perfect"):
        torch.manual_seed(0)
        super().__init__(RetrievalJudgeNet(encoder.hidden_size), encoder, encoder.model_id)
        self.captions, self.mode = list(captions), mode

    def embed_texts(self, texts):
        return torch.ones(len(texts), 128) / 128 ** 0.5 if self.mode == "constant" else super().embed_texts(texts)

    def embed_images(self, images, batch_size=128):
        x = images if isinstance(images, torch.Tensor) else load_tensors([Path(p) for p in images], 64, (255,) * 3)
        code = ((x[:, :2, 0, 0] + 1) * 127.5).round().long()
        out = F.normalize(torch.randn(len(x), 128, generator=torch.Generator().manual_seed(len(x))), dim=1)
        for i, (idx, mark) in enumerate(code.tolist()):
            if self.mode == "constant":
                out[i] = 1 / 128 ** 0.5
            elif self.mode == "perfect" and mark == MARK and idx < len(self.captions):
                out[i] = super().embed_texts([self.captions[idx]])[0]
        return out


def planted_images(indices) -> torch.Tensor:
    """Flat images in [-1, 1] whose red value is the index and whose green value is MARK."""
    x = torch.zeros(len(indices), 3, 8, 8)
    x[:, 0] = torch.tensor(indices, dtype=torch.float32)[:, None, None] / 127.5 - 1
    x[:, 1] = MARK / 127.5 - 1
    return x


def duplicated_captions(n_distinct: int = 50) -> list[str]:
    """``2 * n_distinct`` captions, each text twice (as frames of one key share their caption)."""
    colours = ["red", "green", "blue", "yellow", "black", "white", "pink", "grey", "brown", "orange"]
    shapes = ["slime", "golem", "ghost", "dragon", "knight"]
    texts = [f"A {c} {s} monster, picture {i}." for i, (c, s) in enumerate(
        (c, s) for c in colours for s in shapes)][:n_distinct]
    return texts + texts


def test_a_perfect_judge_finds_every_caption_even_when_captions_repeat(encoder, one_thread):
    captions = duplicated_captions()
    judge = PlantedJudge(encoder, list(dict.fromkeys(captions)))
    x = planted_images([judge.captions.index(c) for c in captions])
    v = validate_retrieval_judge(judge, x, captions, seed=0)
    assert v["n_pairs"] == 100 and v["n_distinct_captions"] == 50
    assert v["top1"] == 1.0 and v["top5"] == 1.0  # two images with one caption are both hits
    assert v["chance_top1"] == pytest.approx(1 / 50) and v["chance_top5"] == pytest.approx(5 / 50)
    assert v["usable"] and v["top1_low"] > v["chance_top1"] and "chance" in v["why"]
    assert v["shuffled_top1"] <= 3 * v["chance_top1"]  # captions shuffled among the images: at chance
    assert v["cosine_matched"] == pytest.approx(1.0, abs=1e-5) and v["cosine_mismatched"] < v["cosine_matched"]
    noise = v["non_images"]["noise"]
    assert noise["top1"] <= 3 * v["chance_top1"] and noise["cosine"] < v["cosine_matched"] - 0.5
    assert set(v["non_images"]) == {"noise", "white", "blur"}


def test_a_random_judge_sits_at_chance_and_is_not_usable(encoder, one_thread):
    captions = duplicated_captions()
    judge = PlantedJudge(encoder, list(dict.fromkeys(captions)), mode="random")
    v = validate_retrieval_judge(judge, planted_images([judge.captions.index(c) for c in captions]), captions,
                                 seed=0)
    assert v["top1"] < 3 * v["chance_top1"] and not v["usable"]
    assert "cannot tell" in v["why"]
    assert abs(v["cosine_matched"] - v["cosine_mismatched"]) < 0.1


def test_ties_are_not_hits_and_few_pairs_are_not_evidence(encoder, one_thread):
    captions = duplicated_captions(10)
    constant = PlantedJudge(encoder, list(dict.fromkeys(captions)), mode="constant")
    v = validate_retrieval_judge(constant, planted_images([constant.captions.index(c) for c in captions]),
                                 captions, seed=0)
    assert v["top1"] == 0.0 and v["top5"] == 0.0 and not v["usable"]  # every caption ties: no hit
    perfect = PlantedJudge(encoder, ["a red slime", "a blue ghost"])
    two = validate_retrieval_judge(perfect, planted_images([0, 1]), ["a red slime", "a blue ghost"], seed=0)
    assert two["top1"] == 1.0 and not two["usable"]  # 2 pairs: under 3x chance (1.5 > 1)
    one = validate_retrieval_judge(perfect, planted_images([0, 0]), ["a red slime", "a red slime"], seed=0)
    assert not one["usable"] and "nothing to rank" in one["why"]


def test_validate_picks_as_many_distinct_captions_as_it_can(encoder, one_thread):
    captions = [f"caption {i // 5}" for i in range(200)]  # 40 captions, 5 images each
    judge = PlantedJudge(encoder, list(dict.fromkeys(captions)))
    v = validate_retrieval_judge(judge, planted_images([i // 5 for i in range(200)]), captions, seed=3, n_max=40)
    assert v["n_pairs"] == 40 and v["n_distinct_captions"] == 40


# --------------------------------------------------------------------------------------------------- scores
def _write_planted(folder: Path, prompts: list[TestPrompt], codes: list[int]) -> Path:
    folder.mkdir()
    for p, code in zip(prompts, codes):
        Image.new("RGB", (64, 64), (code, MARK, 0)).save(folder / p.image_name)
    return folder


def test_score_ranks_each_image_against_the_folders_prompts(encoder, tmp_path, one_thread):
    prompts = [TestPrompt(f"k{i}", f"A {c} monster number {i}.", f"{i:04d}.png")
               for i, c in enumerate(["red", "green", "blue", "pink", "black", "white", "grey", "teal"])]
    judge = PlantedJudge(encoder, [p.text_prompt for p in prompts])
    right = _write_planted(tmp_path / "right", prompts, list(range(8)))
    Image.new("RGB", (64, 64), (3, MARK, 0)).save(right / "0000__1.png")  # an extra image of prompt 0 showing 3
    results = judge.score(right, prompts, None)
    by = {r.name: r for r in results}
    assert [r.name for r in results] == [RETRIEVAL_TOP1, RETRIEVAL_TOP5, RETRIEVAL_COSINE]
    assert pick_metric(results, judge.metric) == RETRIEVAL_TOP1  # what a settings pick ranks by
    assert by[RETRIEVAL_TOP1].per_image == {**{p.image_name: 1.0 for p in prompts}, "0000__1.png": 0.0}
    assert by[RETRIEVAL_TOP1].value == pytest.approx(8 / 9) and by[RETRIEVAL_TOP1].n_images == 9
    assert "chance 1/8" in by[RETRIEVAL_TOP1].note and "chance 5/8" in by[RETRIEVAL_TOP5].note
    assert "not CLIP" in by[RETRIEVAL_COSINE].name and "not CLIP, not FID" in by[RETRIEVAL_COSINE].model
    assert by[RETRIEVAL_COSINE].per_image["0000.png"] == pytest.approx(1.0, abs=1e-5)
    wrong = judge.score(_write_planted(tmp_path / "wrong", prompts, [(i + 1) % 8 for i in range(8)]), prompts, None)
    assert wrong[0].value == 0.0 and wrong[2].value < by[RETRIEVAL_COSINE].value
    few = judge.score(right, prompts[:1], None)
    assert few[0].skipped and few[1].skipped and not few[2].skipped


def test_a_trained_judge_scores_a_folder_of_files(smoke_set, smoke_judge, one_thread):
    refs = smoke_set / "test_reference"
    results = smoke_judge.score(refs, smoke_set / "test.json", refs)
    n = len(json.loads((smoke_set / "test.json").read_text()))
    assert {r.name for r in results} == {RETRIEVAL_TOP1, RETRIEVAL_TOP5, RETRIEVAL_COSINE}
    assert all(len(r.per_image) == n and not r.skipped for r in results)
    assert set(results[0].per_image.values()) <= {0.0, 1.0} and -1 <= results[2].value <= 1


# --------------------------------------------------------------------------------------------------- training
def test_training_is_deterministic_and_reports_its_validation(smoke_set, smoke_judge, encoder, tmp_path, one_thread):
    folder = train_retrieval_judge(smoke_set, encoder, tmp_path / "again", smoke=True, progress=False)
    twin = load_retrieval_judge(folder, encoder)
    for (name, a), b in zip(smoke_judge.net.state_dict().items(), twin.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in folder.iterdir()) == ["judge.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary folder left
    report = twin.report
    assert report["n_train_images"] + report["n_heldout_images"] == report["n_images"] and report["heldout_groups"]
    held = set(report["heldout_groups"])
    assert all(g.startswith("m") and not g.endswith(("_idle", "_walk")) for g in held)
    v = report["validation"]
    assert {"top1", "top5", "chance_top1", "shuffled_top1", "cosine_matched", "cosine_mismatched", "non_images",
            "usable", "why"} <= set(v)
    assert report["num_threads"] == 1 and report["text_encoder"] == encoder.model_id
    other = train_retrieval_judge(smoke_set, encoder, tmp_path / "seed1", smoke=True, seed=1, progress=False)
    assert not torch.equal(load_file(str(other / "model.safetensors"))["text_proj.weight"],
                           smoke_judge.net.state_dict()["text_proj.weight"])


def test_a_failed_training_leaves_no_folder(smoke_set, encoder, tmp_path, monkeypatch, one_thread):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rj, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        train_retrieval_judge(smoke_set, encoder, tmp_path / "judge", smoke=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_reuses_the_cached_judge(smoke_set, smoke_judge, encoder, monkeypatch, capsys, one_thread):
    outputs = smoke_judge.folder.parent.parent
    assert smoke_judge.folder == retrieval_judge_dir(load_train_set(smoke_set, verbose=False), encoder.model_id,
                                                     outputs, smoke=True)
    assert smoke_judge.folder.name.startswith("demo-retrieval-") and smoke_judge.folder.parent.name == "judge"
    mtime = (smoke_judge.folder / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a cached judge")

    monkeypatch.setattr(rj, "train_retrieval_judge", no_training)
    again = ensure_retrieval_judge(smoke_set, encoder, outputs, smoke=True)
    assert again.folder == smoke_judge.folder and (again.folder / "model.safetensors").stat().st_mtime_ns == mtime
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"retrieval judge {again.folder.name}: held-out top-1 ") and "shuffled" in line
    assert line.endswith("usable") or "NOT usable" in line


def test_a_damaged_or_foreign_weights_file_is_a_clear_error(smoke_judge, encoder, tmp_path):
    folder = shutil.copytree(smoke_judge.folder, tmp_path / smoke_judge.folder.name)
    weights = folder / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(str(weights)).items()}  # (not mapped: the file is cut below)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DataError, match=rf"{folder.name}.*damaged.*delete the folder"):
        load_retrieval_judge(folder, encoder)
    save_file({k: v for k, v in state.items() if k != "text_proj.bias"}, str(weights))
    with pytest.raises(DataError, match="does not match the network.*text_proj.bias"):
        load_retrieval_judge(folder, encoder)
    weights.unlink()
    with pytest.raises(DataError, match="missing or damaged"):
        load_retrieval_judge(folder, encoder)


# --------------------------------------------------------------------------------------------------- can it rank?
class _WithReport:
    def __init__(self, report):
        self.report = report


def test_judge_can_rank_reads_the_verdict_of_either_judge():
    assert judge_can_rank(object()) == (True, "") and judge_can_rank(_WithReport(None)) == (True, "")
    assert judge_can_rank(_WithReport({"validation": {"usable": True, "why": "12x chance"}})) == (True, "12x chance")
    ok, why = judge_can_rank(_WithReport({"validation": {"usable": False, "why": "under 3x chance"}}))
    assert not ok and why == "under 3x chance"
    recipe = {"colours": [f"c{i}" for i in range(10)], "shapes": [f"s{i}" for i in range(4)]}  # chance 1/40
    good = {"accuracy_heldout_monsters": {"colour": 1.0, "shape": 0.9, "species": 0.9}, "recipe": recipe}
    bad = {"accuracy_heldout_monsters": {"colour": 0.3, "shape": 0.2, "species": 0.05}, "recipe": recipe}
    assert judge_can_rank(_WithReport(good))[0]
    ok, why = judge_can_rank(_WithReport(bad))
    assert not ok and "cannot tell" in why and "0.025" in why
    assert not judge_can_rank(_WithReport({"accuracy_heldout_monsters": None, "recipe": recipe}))[0]
    np.testing.assert_equal(judge_can_rank(_WithReport({"recipe": recipe})), (True, ""))


def test_prompt_following_says_where_the_model_stands_and_what_to_try():
    """Chapter 04's line: top-1 next to chance; near chance it names the command that trains twice as long."""
    from helpers.submission import prompt_following

    def top1(value, n=16):
        return MetricResult(RETRIEVAL_TOP1, value, "judge", n_images=32, settings={"n_distinct_prompts": n})

    good = prompt_following(top1(0.5), "outputs/main/train_config.json", 800)
    assert "50%" in good and "chance 6%" in good and "8.0x" in good and "follows prompts" in good
    poor = prompt_following(top1(0.125), "outputs/main/train_config.json", 800)
    assert "near chance" in poor and "--max-steps 1600" in poor and "outputs/main/train_config.json" in poor
    assert "resolution=32" in poor and "crop_to_content=True" in poor
    assert "not measured" in prompt_following(MetricResult.skip(RETRIEVAL_TOP1, "no prompts"), "c.json", 800)
