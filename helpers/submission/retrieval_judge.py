"""The workbook's retrieval judge — not CLIP, not FID: a small image encoder trained here, contrastively, against the
frozen text encoder's features of the training captions. It scores any captioned image set offline by one question:
does a generated image pick out its own prompt among the others?

::

    judge = ensure_retrieval_judge(train_set, frozen.text_encoder, profile.outputs_dir)  # trained once, then reused
    ok, why = judge_can_rank(judge)             # never rank settings with a judge that cannot tell
    print_metrics(judge.score("outputs/gen", split.prompts_path, None))  # top-1 / top-5 (1/0 per image), cosine

Training (:func:`train_retrieval_judge`): symmetric InfoNCE between :class:`RetrievalJudgeNet` 's image embeddings
and its projection of the frozen caption features (:func:`text_features`, computed once), flips and small shifts,
non-images as extra negatives; a seeded ~10 % of the groups (``split_key(key)[0]``) is never trained on, and
:func:`validate_retrieval_judge` measures the judge on them (top-1 / top-5 vs chance, shuffled captions,
non-images, a verdict that :func:`judge_can_rank` reads). Kept in ``<outputs>/judge/<data-name>-retrieval-<hash>/``
(:func:`retrieval_judge_dir`: ``model.safetensors`` + ``judge.json``); the hash covers the training images, the
recipe (:data:`RETRIEVAL_VERSION`), the text encoder and the resolution.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from helpers.data import WHITE, DataError, TrainSet, choose_heldout, data_hash, load_images, load_train_set, split_key
from helpers.data.images import gaussian_blur, random_flip_shift
from helpers.frozen import TextEncoder, load_text_encoder
from helpers.paths import atomic_folder
from helpers.progress import tqdm

from .evidence import paired_bootstrap
from .metrics import generated_pairs
from .scores import MetricResult, load_tensors

__all__ = ["RetrievalJudgeNet", "RetrievalJudge", "text_features", "validate_retrieval_judge", "train_retrieval_judge",
           "load_retrieval_judge", "ensure_retrieval_judge", "retrieval_judge_dir", "retrieval_recipe",
           "judge_can_rank", "prompt_following", "verdict_line", "RETRIEVAL_VERSION", "RETRIEVAL_MODEL",
           "RETRIEVAL_TOP1", "RETRIEVAL_TOP5", "RETRIEVAL_COSINE"]

RETRIEVAL_VERSION = 1  # bump when the recipe or the network changes: ensure_retrieval_judge then trains a new one
RETRIEVAL_RESOLUTION = 64
WEIGHTS_NAME = "model.safetensors"
REPORT_NAME = "judge.json"
RETRIEVAL_MODEL = "the workbook's retrieval judge — not CLIP, not FID"
RETRIEVAL_TOP1 = "judge retrieval top-1"
RETRIEVAL_TOP5 = "judge retrieval top-5"
RETRIEVAL_COSINE = "judge text–image cosine (CLIP-T-like, not CLIP)"
USABLE_RATIO = 3.0  # a judge ranks only when its held-out top-1 is at least this many times chance


# --------------------------------------------------------------------------------------------------- network
def text_features(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64, progress: bool = False
                  ) -> torch.Tensor:
    """``[N, D]`` float32 on the CPU: the mean of ``encoder``'s hidden states over each text's real tokens (the
    tokenizer's attention mask: special tokens in, padding out) — the same as over the ``[N,77,D]`` the UNet sees,
    since real tokens never attend to padding, but padded only to the longest text of each batch (several times
    cheaper). No gradients; runs on the encoder's device, ``batch_size`` texts at a time."""
    texts, out = list(texts), [torch.zeros(0, encoder.hidden_size)]
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="caption features", disable=not progress or len(starts) < 10):
        tok = encoder.tokenizer(texts[start:start + batch_size], padding="longest", max_length=encoder.max_length,
                                truncation=True, return_tensors="pt")  # the real tokens' states do not see padding
        with torch.inference_mode():
            hidden = encoder.hidden_states(tok)
        mask = tok["attention_mask"].to(hidden.device, hidden.dtype)
        out.append(((hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)).float().cpu())
    return torch.cat(out)


class RetrievalJudgeNet(nn.Module):
    """Images ``[B,3,R,R]`` in [-1, 1] and text features ``[B, text_dim]`` → unit embeddings of size ``embed_dim``.

    Image path: a stride-2 stem and a 2x average pool (64 → 16 px), three conv-GroupNorm-SiLU blocks with a 2x
    average pool between them (16 → 8 → 4 px), mean and max pooling over the image, a linear layer. Text path:
    LayerNorm and a linear layer. The logit scale is learnt as ``log(scale)`` (starts at ``log(1/0.07)``, used
    clamped to at most 100).
    """

    def __init__(self, text_dim: int, embed_dim: int = 128, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(8, c_out), c_out),
                    nn.SiLU()]

        w = width
        self.image_encoder = nn.Sequential(nn.Conv2d(3, w, 4, stride=2, padding=1), nn.SiLU(), nn.AvgPool2d(2),
                                           *block(w, 2 * w), nn.AvgPool2d(2),
                                           *block(2 * w, 4 * w), nn.AvgPool2d(2), *block(4 * w, 4 * w))
        self.image_proj = nn.Linear(8 * w, embed_dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        h = self.image_encoder(x).flatten(2)
        return F.normalize(self.image_proj(torch.cat([h.mean(2), h.amax(2)], 1)), dim=-1)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_norm(features)), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()


@dataclass
class RetrievalJudge:
    """The network, the frozen text encoder (``encoder``; its id ``text_encoder``), the image resolution, the folder
    and the report (``judge.json``)."""

    net: RetrievalJudgeNet
    encoder: TextEncoder
    text_encoder: str
    resolution: int = RETRIEVAL_RESOLUTION
    folder: Path | None = None
    report: dict | None = None
    metric = RETRIEVAL_TOP1  # what a settings pick ranks by (helpers.submission.pick_settings)

    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor | Sequence[str | Path], batch_size: int = 128) -> torch.Tensor:
        """Unit embeddings ``[N, E]`` of image files (read like training images, alpha on white) or of a float
        tensor ``[N,3,R,R]`` in [-1, 1]."""
        x = images if isinstance(images, torch.Tensor) else load_tensors([Path(p) for p in images],
                                                                          self.resolution, WHITE)
        self.net.eval()
        out = [self.net.embed_image(x[i:i + batch_size].float()) for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.net.image_proj.out_features)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit embeddings ``[N, E]`` of texts (their frozen :func:`text_features`, projected)."""
        return self.net.eval().embed_text(text_features(self.encoder, texts))

    def score(self, generated_dir: str | Path, prompts, reference=None) -> list[MetricResult]:
        """Retrieval top-1 and top-5 (per image 1/0: is the image's own prompt ranked first / in the first five
        among the distinct prompts of the folder; ties count against it) and the mean matched cosine (per image).
        ``reference`` is not used (the interface :func:`helpers.submission.pick_settings` calls)."""
        plist, pairs = generated_pairs(generated_dir, prompts)
        texts = list(dict.fromkeys(p.text_prompt for p in plist))
        index = {t: i for i, t in enumerate(texts)}
        own = torch.tensor([index[p.text_prompt] for _, p in pairs])
        sims = self.embed_images([f for f, _ in pairs]) @ self.embed_texts(texts).T
        n, names = len(texts), [f.name for f, _ in pairs]
        common = {"model": RETRIEVAL_MODEL, "n_images": len(pairs), "settings": {
            "resolution": self.resolution, "judge": self.folder.name if self.folder else "in memory",
            "text_encoder": self.text_encoder, "n_distinct_prompts": n}}

        def result(name: str, values: torch.Tensor, note: str) -> MetricResult:
            return MetricResult(name, float(values.mean()), **common, note=note,
                                per_image=dict(zip(names, values.tolist())))

        return [MetricResult.skip(name, f"needs more than {k} distinct prompts (got {n})", **common) if n <= k
                else result(name, _hits(sims, own, k).float(), f"chance {k}/{n} = {k / n:.3f}")
                for name, k in ((RETRIEVAL_TOP1, 1), (RETRIEVAL_TOP5, 5))] + [
            result(RETRIEVAL_COSINE, sims.gather(1, own[:, None])[:, 0],
                   f"raw cosine in the judge's space, not CLIP-T; top-1 chance 1/{n}")]


# --------------------------------------------------------------------------------------------------- validation
def _hits(sims: torch.Tensor, own: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[N]``: row ``i`` of ``sims`` ``[N, n_texts]`` ranks text ``own[i]`` within its first ``k`` (the other
    texts scoring at least as high count before it: a tie is not a hit)."""
    ahead = (sims >= sims.gather(1, own[:, None])).sum(1) - 1
    return ahead < k


def _spread(captions: Sequence[str], n: int, seed: int) -> list[int]:
    """Up to ``n`` indices, seeded, as many distinct captions as possible (each caption's first image first)."""
    seen: Counter = Counter()
    order = [(seen.update([captions[i]]) or seen[captions[i]], i)  # (how many of its caption so far, index)
             for i in torch.randperm(len(captions), generator=torch.Generator().manual_seed(seed)).tolist()]
    return sorted(i for _, i in sorted(order, key=lambda ci: ci[0])[:n])


def _non_images(x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """What shows none of the captions, one per image of ``x``: Gaussian noise, blank white, ``x`` heavily blurred."""
    noise = (0.5 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    return {"noise": noise, "white": torch.ones_like(x), "blur": gaussian_blur(x.float(), 6.0)}


def _ranked(judge, x: torch.Tensor, text_emb: torch.Tensor, own: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Top-1, top-5 and mean matched cosine of images ``x`` against ``text_emb`` (own text: ``own``), and the
    cosines ``[N, n_texts]``."""
    sims = judge.embed_images(x) @ text_emb.T
    return {"top1": float(_hits(sims, own, 1).float().mean()), "top5": float(_hits(sims, own, 5).float().mean()),
            "cosine": float(sims.gather(1, own[:, None]).mean())}, sims


def validate_retrieval_judge(judge, images: torch.Tensor | Sequence[str | Path], captions: Sequence[str], *,
                             seed: int = 0, n_max: int = 100, level: float = 0.95) -> dict:
    """How well ``judge`` (anything with ``embed_images`` / ``embed_texts``) tells images apart by their captions.

    Up to ``n_max`` (image, caption) pairs (seeded, as many distinct captions as possible); each image's own caption
    is ranked among the DISTINCT captions (two images with one caption are both hits; a tie is not). Returns top-1 /
    top-5 and chance (1/n, 5/n for n distinct captions), the bootstrap lower bound of top-1 (``level``, over the
    pairs), the same with the captions shuffled among the images, mean matched vs mismatched cosine, non-images
    (noise, white, the images heavily blurred) against the images' captions, and the verdict: ``usable`` when top-1
    is at least 3x chance and its lower bound above chance; ``why``: one sentence.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images for {len(captions)} captions")
    pick = _spread(list(captions), n_max, seed)
    x = images[pick] if isinstance(images, torch.Tensor) else load_tensors(
        [Path(images[i]) for i in pick], getattr(judge, "resolution", RETRIEVAL_RESOLUTION), WHITE)
    texts = list(dict.fromkeys(captions[i] for i in pick))
    own = torch.tensor([texts.index(captions[i]) for i in pick])
    text_emb = judge.embed_texts(texts)
    out, sims = _ranked(judge, x, text_emb, own)
    gen, n = torch.Generator().manual_seed(seed), len(texts)
    shuffled = own[torch.randperm(len(own), generator=gen)]
    other = torch.ones_like(sims, dtype=torch.bool).scatter(1, own[:, None], False)
    hits = _hits(sims, own, 1).float().tolist()
    diff = paired_bootstrap(dict(enumerate(hits)), dict.fromkeys(range(len(hits)), 1 / n), level=level, seed=seed)
    out.update(n_pairs=len(pick), n_distinct_captions=n, chance_top1=1 / n, chance_top5=min(1.0, 5 / n),
               top1_low=None if diff is None else 1 / n + diff.low, level=level, seed=seed,
               shuffled_top1=float(_hits(sims, shuffled, 1).float().mean()),
               shuffled_top5=float(_hits(sims, shuffled, 5).float().mean()),
               cosine_matched=out.pop("cosine"), cosine_mismatched=float(sims[other].mean()) if n > 1 else None,
               non_images={k: _ranked(judge, fake, text_emb, own)[0] for k, fake in _non_images(x, gen).items()})
    out["usable"], out["why"] = _verdict(out)
    return out


def _verdict(v: dict) -> tuple[bool, str]:
    top1, chance, low, n = v["top1"], v["chance_top1"], v["top1_low"], v["n_pairs"]
    if v["n_distinct_captions"] < 2 or low is None:
        return False, f"only {v['n_distinct_captions']} distinct caption(s) in {n} pairs: nothing to rank"
    if top1 < USABLE_RATIO * chance:
        return False, (f"its held-out top-1 {top1:.2f} is under {USABLE_RATIO:g}x chance ({chance:.3f}): it cannot "
                       "tell images apart by their captions, so it must not rank settings")
    if low <= chance:
        return False, (f"its held-out top-1 {top1:.2f} is {top1 / chance:.1f}x chance, but its {v['level']:.0%} lower "
                       f"bound {low:.2f} over {n} pairs is not above chance ({chance:.3f})")
    return True, (f"its held-out top-1 {top1:.2f} is {top1 / chance:.1f}x chance ({chance:.3f}), lower bound "
                  f"{low:.2f}: it tells unseen images apart by their captions")


def verdict_line(judge: RetrievalJudge) -> str:
    """One line: held-out top-1 vs chance, shuffled, noise, and the verdict."""
    v = (judge.report or {}).get("validation") or {}
    where = judge.folder.name if judge.folder else "(in memory)"
    if not v:
        return f"retrieval judge {where}: no validation in its report"
    return (f"retrieval judge {where}: held-out top-1 {v['top1']:.2f} (chance {v['chance_top1']:.2f}, "
            f"{v['top1'] / v['chance_top1']:.0f}×), "
            f"shuffled {v['shuffled_top1']:.2f}, noise {v['non_images']['noise']['top1']:.2f} — "
            + ("usable" if v["usable"] else f"NOT usable: {v['why']}"))


def prompt_following(result: MetricResult, config_path: str | Path, max_steps: int) -> str:
    """Where a trained model stands (chapter 04): the retrieval judge's top-1 on held-out prompts (``result``, from
    :meth:`RetrievalJudge.score`) next to chance, and — when it is under :data:`USABLE_RATIO` x chance — what to try,
    with the command that trains the run in ``config_path`` (now at ``max_steps``) twice as long."""
    n = int(result.settings.get("n_distinct_prompts", 0))
    if result.skipped or n < 2:
        return f"Prompt following not measured: {result.note or 'fewer than 2 held-out prompts'}."
    chance = 1 / n
    line = (f"Held-out prompts: the judge ranks a generated image's own prompt first among the {n} in "
            f"{result.value:.0%} of {result.n_images} images (chance {chance:.0%}, so {result.value / chance:.1f}x "
            "chance)")
    if result.value >= USABLE_RATIO * chance:
        return line + ": the model follows prompts it never trained on."
    return (line + ": near chance, so the model does not follow its prompts yet. Try, in this order: train longer — "
            f"`python -m helpers.training --config {config_path} --resume latest --max-steps {2 * max_steps}` "
            "(or max_steps in the parameters cell); a smaller resolution (resolution=32: 4x cheaper steps); "
            "crop_to_content=True when the images have wide empty margins.")


def judge_can_rank(judge) -> tuple[bool, str]:
    """``(can rank, why)``: never rank settings with a judge that cannot tell. A retrieval judge: its report's
    validation verdict. A demo-like judge (report with ``accuracy_heldout_monsters``): species accuracy on the
    held-out monsters at least 3x chance (1 / the number of (colour, shape) pairs of its recipe). Anything without
    a report: ``(True, "")``."""
    report = getattr(judge, "report", None)
    if not isinstance(report, dict):
        return True, ""
    v = report.get("validation")
    if isinstance(v, dict) and "usable" in v:
        return bool(v["usable"]), str(v.get("why", ""))
    if "accuracy_heldout_monsters" not in report:
        return True, ""
    recipe = report.get("recipe") or {}
    pairs = len(recipe.get("colours", ())) * len(recipe.get("shapes", ()))
    species = (report["accuracy_heldout_monsters"] or {}).get("species")
    if species is None or not pairs:
        return False, "the judge's report holds no species accuracy on held-out monsters: it was never tested"
    chance, ok = 1 / pairs, species >= USABLE_RATIO * 1 / pairs
    return ok, (f"species accuracy on held-out monsters {species:.2f} is {species * pairs:.1f}x chance ({chance:.3f})"
                + ("" if ok else f", under {USABLE_RATIO:g}x: it cannot tell, so it must not rank settings"))


# --------------------------------------------------------------------------------------------------- training
def retrieval_recipe(smoke: bool = False) -> dict:
    """What :func:`ensure_retrieval_judge` trains with (``smoke``: a handful of steps, for tests)."""
    return {"version": RETRIEVAL_VERSION, "steps": 8 if smoke else 300, "batch_size": 64, "lr": 2e-3,
            "weight_decay": 0.01, "holdout_fraction": 0.1, "max_shift": 4, "negatives": 8, "embed_dim": 128,
            "width": 32, "n_validate": 100, "seed": 0}


def _as_train_set(train_set) -> TrainSet:
    return train_set if isinstance(train_set, TrainSet) else load_train_set(train_set, verbose=False)


def retrieval_judge_dir(train_set, text_encoder_id: str, outputs_dir: str | Path, *, smoke: bool = False) -> Path:
    """``<outputs>/judge/<data-name>-retrieval-<hash>/``: where :func:`ensure_retrieval_judge` keeps the judge."""
    train_set = _as_train_set(train_set)
    settings = {"data": data_hash(train_set), "recipe": retrieval_recipe(smoke), "text_encoder": str(text_encoder_id),
                "resolution": RETRIEVAL_RESOLUTION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(outputs_dir) / "judge" / f"{Path(train_set.root).name}-retrieval-{key}"


def _negatives(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` images that show no caption: noise, flat fills (white or a colour), batch images heavily blurred."""
    kind = torch.randint(3, (k,), generator=gen)
    noise = (0.5 * torch.randn((k, *x.shape[1:]), generator=gen)).clamp(-1, 1)
    fill = torch.where(torch.rand(k, 1, generator=gen) < 0.5, torch.ones(k, 3), torch.rand(k, 3, generator=gen) * 2 - 1)
    blur = gaussian_blur(x[torch.randint(len(x), (k,), generator=gen)], 6.0)
    pick = kind[:, None, None, None]
    return torch.where(pick == 0, noise, torch.where(pick == 1, fill[:, :, None, None].expand_as(noise), blur))


def _contrastive_loss(img: torch.Tensor, txt: torch.Tensor, positive: torch.Tensor, scale: torch.Tensor
                      ) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: ``img`` ``[B + k, E]`` (the last ``k``: negatives only), ``txt``
    ``[B, E]``, ``positive[i, j]``: caption ``j`` describes image ``i`` (``[B, B]``, diagonal true)."""
    b = len(txt)
    logits = scale * txt @ img.T  # [B captions, B + k images]
    pos = positive.float()
    image_to_text = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits[:, :b].T, 1)).sum(1).mean()
    pos_t = F.pad(pos.T, (0, len(img) - b))
    text_to_image = -(pos_t / pos_t.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2


def _fit(net: RetrievalJudgeNet, images: torch.Tensor, caps: torch.Tensor, feats: torch.Tensor, r: dict,
         progress: bool) -> None:
    """AdamW steps (warm-up, cosine) on uint8 ``images``, their caption ids ``caps`` (-1: none) and ``feats``."""
    gen = torch.Generator().manual_seed(r["seed"])
    opt = torch.optim.AdamW(net.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    steps, warmup = r["steps"], max(1, r["steps"] // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                              * (1 + math.cos(math.pi * min(1.0, s / steps))))
    n_caps, b = (caps >= 0).sum(1), min(r["batch_size"], len(images))
    net.train().to(memory_format=torch.channels_last)  # (~30 % faster convolutions on a CPU)
    for _ in tqdm(range(steps), desc="training the retrieval judge", disable=not progress):
        idx = torch.randperm(len(images), generator=gen)[:b]
        cap = caps[idx, (torch.rand(b, generator=gen) * n_caps[idx]).long()]
        x = random_flip_shift(images[idx].float() / 127.5 - 1.0, gen, r["max_shift"])
        x = torch.cat([x, _negatives(x, r["negatives"], gen)]).contiguous(memory_format=torch.channels_last)
        img = net.embed_image(x)
        positive = (caps[idx][:, :, None] == cap[None, None, :]).any(1)
        loss = _contrastive_loss(img, net.embed_text(feats[cap]), positive, net.scale())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().to(memory_format=torch.contiguous_format)  # (as a loaded judge: the same numbers)


def _caption_table(examples) -> tuple[list[str], torch.Tensor]:
    """The distinct captions and, per example, the ids of its captions ``[N, max captions]`` (-1 pads)."""
    texts = list(dict.fromkeys(c for e in examples for c in e.captions))
    index, width = {t: i for i, t in enumerate(texts)}, max(len(e.captions) for e in examples)
    return texts, torch.tensor([[index[c] for c in e.captions] + [-1] * (width - len(e.captions)) for e in examples])


def _validate_part(judge: RetrievalJudge, images: torch.Tensor, examples, part: torch.Tensor, r: dict) -> dict:
    """:func:`validate_retrieval_judge` on the images where ``part`` is true, with their first captions."""
    idx = part.nonzero().flatten().tolist()
    first = [examples[i].captions[0] for i in idx]
    pick = [idx[j] for j in _spread(first, r["n_validate"], r["seed"])]
    return validate_retrieval_judge(judge, images[pick].float() / 127.5 - 1.0, [examples[i].captions[0] for i in pick],
                    seed=r["seed"], n_max=r["n_validate"])


def train_retrieval_judge(train_set, text_encoder: TextEncoder, out_dir: str | Path, *, smoke: bool = False,
                          seed: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the retrieval judge on ``train_set`` (a TrainSet or a data folder; read only) into ``out_dir`` (atomic).

    ``seed`` (default: the recipe's, 0) seeds the initialisation, the batches and the held-out groups. The caption
    features are computed once (:func:`text_features`; data/demo's 480 captions with all-MiniLM-L6-v2 on the CPU:
    14 s), then the fit runs on one torch thread (deterministic): 300 steps of batch 64 took 20 s (20 s of CPU time)
    on one core of a 2-core Xeon on data/demo (640 images; the fit does not grow with the number of images).
    ``judge.json`` holds :func:`validate_retrieval_judge` on the held-out groups and top-1 / top-5 on training images.
    """
    t0, r = time.perf_counter(), retrieval_recipe(smoke)
    train_set, r["seed"] = _as_train_set(train_set), r["seed"] if seed is None else seed
    examples = [e for e in train_set.examples if e.captions]
    if not examples:
        raise DataError(f"{train_set.root}: no image has a caption; the retrieval judge learns from captions.")
    images, keys = load_images(replace(train_set, examples=examples), RETRIEVAL_RESOLUTION, WHITE, progress=progress)
    held = set(choose_heldout([split_key(k)[0] for k in keys], r["holdout_fraction"], r["seed"]))
    is_held = torch.tensor([split_key(k)[0] in held for k in keys])
    texts, caps = _caption_table(examples)
    feats = text_features(text_encoder, texts, progress=progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(r["seed"])
        net = RetrievalJudgeNet(feats.shape[1], r["embed_dim"], r["width"])
        t_fit, cpu_fit = time.perf_counter(), time.process_time()
        _fit(net, images[~is_held], caps[~is_held], feats, r, progress)
        seconds_train, cpu_train = time.perf_counter() - t_fit, time.process_time() - cpu_fit
        judge = RetrievalJudge(net, text_encoder, text_encoder.model_id)
        validation, on_train = (_validate_part(judge, images, examples, is_held == held_part, r)
                                for held_part in (True, False))
    finally:
        torch.set_num_threads(threads)
    report = {"version": RETRIEVAL_VERSION, "model": RETRIEVAL_MODEL, "smoke": smoke, "data": str(train_set.root),
              "data_hash": data_hash(train_set), "text_encoder": text_encoder.model_id, "text_dim": int(feats.shape[1]),
              "resolution": RETRIEVAL_RESOLUTION, "n_images": len(keys), "n_captions": len(texts),
              "n_train_images": int((~is_held).sum()), "n_heldout_images": int(is_held.sum()),
              "heldout_groups": sorted(held), "validation": validation,
              "train_retrieval": {k: on_train[k] for k in ("n_pairs", "top1", "top5", "chance_top1")},
              "seconds_train": round(seconds_train, 1), "cpu_seconds_train": round(cpu_train, 1),
              "seconds_total": round(time.perf_counter() - t0, 1), "num_threads": 1, "recipe": r,
              "parameters": sum(p.numel() for p in net.parameters()), "torch": torch.__version__,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    with atomic_folder(out_dir, replace=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS_NAME))
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(out_dir)


# --------------------------------------------------------------------------------------------------- loading
def _read_report(folder: Path) -> dict | None:
    try:
        return json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_retrieval_judge(folder: str | Path, text_encoder: TextEncoder) -> RetrievalJudge:
    """The judge saved in ``folder`` by :func:`train_retrieval_judge`; its weights must match the network (names
    and shapes), else a DataError naming the folder and the fix."""
    folder = Path(folder)
    fix = f"delete the folder {folder} and run ensure_retrieval_judge again to retrain it"
    report = _read_report(folder)
    try:
        net = RetrievalJudgeNet(int(report["text_dim"]), report["recipe"]["embed_dim"], report["recipe"]["width"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{folder}: no readable {REPORT_NAME} of a retrieval judge; {fix}") from None
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except (OSError, SafetensorError) as err:
        raise DataError(f"{folder}: {WEIGHTS_NAME} is missing or damaged ({err}); {fix}") from None
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        bad = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        raise DataError(f"{folder}: {WEIGHTS_NAME} does not match the network (e.g. {bad[:3]}); {fix}")
    if int(report["text_dim"]) != text_encoder.hidden_size:
        raise DataError(f"{folder}: trained on {report['text_encoder']} features ({report['text_dim']}), not "
                        f"{text_encoder.model_id} ({text_encoder.hidden_size}); use ensure_retrieval_judge")
    net.load_state_dict(state)
    return RetrievalJudge(net.eval(), text_encoder, report["text_encoder"], int(report["resolution"]), folder, report)


def ensure_retrieval_judge(train_set, text_encoder: TextEncoder | str, outputs_dir: str | Path, *,
                           smoke: bool = False, progress: bool = True) -> RetrievalJudge:
    """The retrieval judge of ``train_set`` (a TrainSet or a data folder) and ``text_encoder`` (loaded, or an id /
    folder): trained into :func:`retrieval_judge_dir` on first use (about 20 s on one CPU core, after encoding the
    captions once), loaded from there afterwards. Prints its validation in one line (:func:`verdict_line`)."""
    train_set = _as_train_set(train_set)
    encoder = text_encoder if isinstance(text_encoder, TextEncoder) else load_text_encoder(text_encoder)
    folder = retrieval_judge_dir(train_set, encoder.model_id, outputs_dir, smoke=smoke)
    report = _read_report(folder)
    if not isinstance(report, dict) or report.get("version") != RETRIEVAL_VERSION:
        if progress:
            print(f"Training the retrieval judge on {train_set.root} into {folder} ...")
        train_retrieval_judge(train_set, encoder, folder, smoke=smoke, overwrite=True, progress=progress)
    judge = load_retrieval_judge(folder, encoder)
    if progress:
        print(verdict_line(judge))
    return judge
