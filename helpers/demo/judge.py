"""The demo judge: a small image classifier, trained here on the demo sprites, that says which colour and which body
shape a generated image shows, so a demo run can be scored offline. It is a DEMO judge, not FID and not CLIP.

::

    judge = ensure_judge(train_set, profile.outputs_dir)      # trained once (10-20 s on one core), then reused
    results = judge_folder("outputs/gen", "data/demo/test.json", "data/demo/test_reference", judge)
    print_metrics(results)   # colour / shape / species adherence, and a Fréchet distance in the judge's features

Labels come from the captions: every demo caption names one colour (``helpers.demo.dataset.COLOURS``) and one body
shape (``SHAPES``); :func:`prompt_labels` reads them from any text (training captions and test prompts alike). A
demo species is a unique (colour, shape) pair, so "species right" means both right.

- **Adherence** (:func:`judge_folder`): the share of generated images whose predicted colour / shape / both match
  what their prompt names (three numbers; higher is better; prompts that name no colour or shape are left out).
- **demo-judge Fréchet distance** (not FID): the Fréchet distance between Gaussians fitted to the judge's
  penultimate features of the generated images and of the reference images (lower is better; compare only at
  equal image counts).

The network (:class:`JudgeNet`): 64 px RGB (read with :func:`helpers.data.images.load_image`, alpha on white) → 2x
average pool (the sprites are drawn on a 32 px grid) → a shape path (three conv blocks) and a colour path (a
per-pixel MLP pooled over the image: it cannot see shape) → a colour head and a shape head, each with one more
class, "none", which never matches a prompt. The shape head learns "none" on noise, flat fills and heavily blurred
sprites; the colour head on noise and blank white only (a blurred sprite still shows its colour, and teaching the
colour head otherwise cost it accuracy on real sprites). Trained with cross-entropy on random flips, small shifts,
mild blur and noise (generated images are not pixel-perfect); 80 % of the sprites get another body colour (a new
label: the colour is not learnt from the eyes, beaks or crowns of the few monsters that have it) and the shape path
sees the images with their RGB channels permuted (a shape is not learnt by its monsters' colours). Seeded, one
thread: deterministic. Some monsters are never trained on; the report gives the accuracy on them (every colour and
shape known, the pair never seen).

Where: ``<outputs>/judge/<data-name>-<hash>/`` (:func:`judge_dir`: ``model.safetensors`` + ``judge.json``, the
report); the hash covers the training images (names and sizes), the recipe (:data:`JUDGE_VERSION`) and the
resolution. A user's data folder is only read.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from helpers.progress import tqdm

from helpers.data import (WHITE, DataError, TrainSet, choose_heldout, data_hash, load_images, load_train_set,
                          read_test_prompts, split_key)
from helpers.data.images import gaussian_blur, random_flip_shift
from helpers.paths import atomic_folder
from helpers.submission import MetricResult, frechet_distance_features, generated_pairs, load_reference_map
from helpers.submission.scores import load_tensors

from .colour_check import named_colour
from .species import COLOURS, SHAPES

__all__ = ["prompt_labels", "JudgeNet", "DemoJudge", "ensure_judge", "train_judge", "load_judge", "judge_dir",
           "judge_recipe", "judge_folder", "adherence", "JUDGE_VERSION", "JUDGE_FD_NAME", "ADHERENCE_NAMES"]

# bump when the recipe or the network changes: ensure_judge then trains a new judge (2: the held-out monsters come
# from the workbook's one hold-out rule, helpers.data.choose_heldout)
JUDGE_VERSION = 2
JUDGE_RESOLUTION = 64
WEIGHTS_NAME = "model.safetensors"
REPORT_NAME = "judge.json"
JUDGE_MODEL = "demo judge (small CNN trained on the demo sprites)"
JUDGE_FD_NAME = "demo-judge Fréchet distance — not FID"
ADHERENCE_NAMES = {"colour": "demo-judge colour adherence", "shape": "demo-judge shape adherence",
                   "species": "demo-judge species adherence (colour and shape)"}

_SHAPE_WORDS = re.compile(r"\b(" + "|".join(map(re.escape, SHAPES)) + r")\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- labels
def prompt_labels(text: str) -> tuple[str | None, str | None]:
    """``(colour, shape)`` a caption or prompt names: the first colour word of ``helpers.demo.dataset.COLOURS``
    (:func:`helpers.demo.colour_check.named_colour`) and the first shape word of ``SHAPES`` (whole words, any case); None
    for one it does not name.

    "First" matters: demo captions name the body shape before the features, and a feature may contain a shape word
    ("A red slime with bat wings." is a slime).
    """
    shape = _SHAPE_WORDS.search(text)
    return named_colour(text), shape.group(1).lower() if shape else None


def _example_labels(captions: Sequence[str]) -> tuple[str | None, str | None]:
    """The labels all of an image's captions agree on (a head whose captions disagree or say nothing gets None)."""
    found = [prompt_labels(c) for c in captions]
    out = []
    for i in range(2):
        named = {f[i] for f in found if f[i] is not None}
        out.append(named.pop() if len(named) == 1 else None)
    return out[0], out[1]


# --------------------------------------------------------------------------------------------------- network
class JudgeNet(nn.Module):
    """Input float32 ``[B,3,R,R]`` in [-1, 1] → ``(colour logits [B, n_colours + 1], shape logits [B, n_shapes + 1],
    features)``; the last class of each head is "none" (no sprite / no colour here).

    After a 2x average pool (the sprites are drawn on a 32 px grid) two paths:

    - the **shape path**: three conv-BN-ReLU-maxpool blocks and a linear layer (``n_features`` numbers);
    - the **colour path**: a per-pixel MLP (1x1 convolutions) pooled over the image (mean and max) and a linear
      layer (``n_colour_features`` numbers): a learned colour histogram. It cannot see shape, so the colour head
      cannot tell a species by its shape instead of its colour.

    ``features`` = both, concatenated: the penultimate activations the demo-judge Fréchet distance compares.
    """

    def __init__(self, n_colours: int, n_shapes: int, width: int = 16, n_features: int = 48,
                 n_colour_features: int = 16, pixel_width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                    nn.MaxPool2d(2)]

        self.pool = nn.AvgPool2d(2)
        self.shape_path = nn.Sequential(*block(3, width), *block(width, 2 * width), *block(2 * width, 2 * width),
                                        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                        nn.Linear(2 * width * 16, n_features), nn.ReLU())
        self.shape_head = nn.Linear(n_features, n_shapes + 1)
        k = pixel_width
        self.pixel_mlp = nn.Sequential(nn.Conv2d(3, k, 1), nn.ReLU(), nn.Conv2d(k, k, 1), nn.ReLU())
        self.colour_fc = nn.Sequential(nn.BatchNorm1d(2 * k), nn.Linear(2 * k, n_colour_features), nn.ReLU())
        self.colour_head = nn.Linear(n_colour_features, n_colours + 1)

    def forward(self, x: torch.Tensor, x_shape: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_shape``: what the shape path sees instead of ``x`` (training: ``x`` with its colours jittered)."""
        x = self.pool(x)
        shape = self.shape_path(x if x_shape is None else self.pool(x_shape))
        h = self.pixel_mlp(x).flatten(2)
        colour = self.colour_fc(torch.cat([h.mean(2), h.amax(2)], dim=1))
        return self.colour_head(colour), self.shape_head(shape), torch.cat([shape, colour], dim=1)


@dataclass
class DemoJudge:
    """A trained judge: the network, its label names, the resolution it reads images at, its folder and report."""

    net: JudgeNet
    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    resolution: int
    folder: Path | None = None
    report: dict | None = None
    metric = ADHERENCE_NAMES["species"]  # what a settings pick ranks by (helpers.submission.pick_settings)

    def score(self, generated_dir: str | Path, prompts, reference) -> list[MetricResult]:
        """:func:`judge_folder` with this judge (the interface :func:`helpers.submission.pick_settings` calls)."""
        return judge_folder(generated_dir, prompts, reference, self)

    def load(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Images as float32 ``[B,3,R,R]`` in [-1, 1], read like training images (alpha on white)."""
        return load_tensors([Path(p) for p in paths], self.resolution, WHITE)

    @torch.inference_mode()
    def run(self, images: torch.Tensor | Sequence[str | Path], batch_size: int = 128
            ) -> tuple[list[str | None], list[str | None], np.ndarray]:
        """Predicted colours, predicted shapes (None: "no sprite here") and features ``[N,F]`` (float64) of image
        files or a tensor."""
        x = images if isinstance(images, torch.Tensor) else self.load(images)
        self.net.eval()
        colours, shapes, feats = [], [], []
        for start in range(0, len(x), batch_size):
            c, s, f = self.net(x[start:start + batch_size].float())
            colours += [self.colours[i] if i < len(self.colours) else None for i in c.argmax(1).tolist()]
            shapes += [self.shapes[i] if i < len(self.shapes) else None for i in s.argmax(1).tolist()]
            feats.append(f.double().numpy())
        return colours, shapes, (np.concatenate(feats) if feats else np.zeros((0, 0)))

    def accuracy(self, images: torch.Tensor | Sequence[str | Path], texts: Sequence[str]) -> dict[str, float | None]:
        """Colour / shape / species accuracy of the judge on images whose captions are ``texts``."""
        colours, shapes, _ = self.run(images)
        return adherence(list(zip(colours, shapes)), [prompt_labels(t) for t in texts])[0]


# --------------------------------------------------------------------------------------------------- scores
def adherence(predicted: Sequence[tuple[str | None, str | None]], wanted: Sequence[tuple[str | None, str | None]]
              ) -> tuple[dict[str, float | None], dict[str, list[int | None]]]:
    """Share of images whose predicted colour / shape / both equal what their prompt names.

    ``predicted[i]`` = (colour, shape) the judge sees in image ``i`` (None: none); ``wanted[i]`` =
    :func:`prompt_labels` of its prompt. An image counts for "colour" only when its prompt names a colour (likewise
    shape; "species" needs both). Returns ``({"colour", "shape", "species"}: share or None when nothing counted, the
    same keys: per-image 1/0, None where not counted)``.
    """
    if len(predicted) != len(wanted):
        raise ValueError(f"{len(predicted)} predictions for {len(wanted)} prompts")
    hits: dict[str, list[int | None]] = {"colour": [], "shape": [], "species": []}
    for (pc, ps), (wc, ws) in zip(predicted, wanted):
        c = None if wc is None else int(pc == wc)
        s = None if ws is None else int(ps == ws)
        hits["colour"].append(c)
        hits["shape"].append(s)
        hits["species"].append(None if c is None or s is None else c * s)
    shares = {}
    for k, v in hits.items():
        counted = [h for h in v if h is not None]
        shares[k] = sum(counted) / len(counted) if counted else None
    return shares, hits


def judge_folder(generated_dir: str | Path, prompts, reference, judge: DemoJudge, *, batch_size: int = 128
                 ) -> list[MetricResult]:
    """Score a folder of generated images ``<image_name>`` (one or more per prompt) with the demo judge.

    Inputs as :func:`helpers.submission.metrics.score_folder`: ``prompts`` a test.json-style file or a list of ``TestPrompt``;
    ``reference`` what :func:`helpers.submission.metrics.load_reference_map` accepts (None: no Fréchet distance). Extra images
    ``<stem>__<k>.png`` count too. Returns colour, shape and species adherence (per_image: 1/0) and the
    demo-judge Fréchet distance to the references (every reference image once). A missing image is an error.
    """
    plist, pairs = generated_pairs(generated_dir, prompts)
    colours, shapes, feats = judge.run([f for f, _ in pairs], batch_size)
    shares, hits = adherence(list(zip(colours, shapes)), [prompt_labels(p.text_prompt) for _, p in pairs])
    settings = {"resolution": judge.resolution, "judge": judge.folder.name if judge.folder else "in memory"}
    results = []
    for key, name in ADHERENCE_NAMES.items():
        per_image = {f.name: float(h) for (f, _), h in zip(pairs, hits[key]) if h is not None}
        if shares[key] is None:
            results.append(MetricResult.skip(name, f"no prompt names a {key} the judge knows", model=JUDGE_MODEL,
                                             n_images=len(pairs), settings=settings))
        else:
            results.append(MetricResult(name=name, value=shares[key], model=JUDGE_MODEL, n_images=len(per_image),
                                        settings=settings, per_image=per_image,
                                        note="demo judge; not CLIP, not comparable with course scores"))
    results.append(_judge_fd(judge, feats, plist, reference, settings, batch_size))
    return results


def _judge_fd(judge: DemoJudge, feats: np.ndarray, plist, reference, settings: dict, batch_size: int
              ) -> MetricResult:
    if reference is None:
        return MetricResult.skip(JUDGE_FD_NAME, "no reference images given", model=JUDGE_MODEL,
                                 n_images=len(feats), settings=settings, higher_is_better=False)
    refs = load_reference_map(reference, plist)
    ref_paths = sorted({r for p in plist for r in refs.get(p.image_name, [])})
    if len(ref_paths) < 2 or len(feats) < 2:
        return MetricResult.skip(JUDGE_FD_NAME, f"needs at least 2 generated and 2 reference images (got "
                                 f"{len(feats)} and {len(ref_paths)})", model=JUDGE_MODEL, n_images=len(feats),
                                 settings=settings, higher_is_better=False)
    ref_feats = judge.run(ref_paths, batch_size)[2]
    return MetricResult(name=JUDGE_FD_NAME, value=frechet_distance_features(feats, ref_feats), model=JUDGE_MODEL,
                        n_images=len(feats), settings={**settings, "n_reference": len(ref_paths),
                                                       "features": int(feats.shape[1])},
                        note="not FID; compare only at equal image counts", higher_is_better=False)


# --------------------------------------------------------------------------------------------------- training
DEFAULT_STEPS = 400
SMOKE_STEPS = 100
BATCH_SIZE = 16
LR = 4e-3
HOLDOUT_FRACTION = 0.1
MAX_SHIFT = 4  # pixels at 64 px


def judge_recipe(smoke: bool = False) -> dict:
    """What :func:`ensure_judge` trains with (``smoke``: a few steps, for tests)."""
    return {"version": JUDGE_VERSION, "steps": SMOKE_STEPS if smoke else DEFAULT_STEPS, "batch_size": BATCH_SIZE,
            "lr": LR, "holdout_fraction": HOLDOUT_FRACTION, "max_shift": MAX_SHIFT, "mild_blur": 1.5,
            "heavy_blur": [4.0, 8.0], "non_sprites": 0.25, "recolour": 0.8, "seed": 0,
            "width": 16, "n_features": 48, "n_colour_features": 16, "colours": list(COLOURS), "shapes": list(SHAPES)}


def judge_dir(train_set, outputs_dir: str | Path, *, smoke: bool = False,
              resolution: int = JUDGE_RESOLUTION) -> Path:
    """``<outputs>/judge/<data-name>-<hash>/``: where :func:`ensure_judge` keeps the judge of ``train_set``."""
    settings = {"data": data_hash(train_set), "recipe": judge_recipe(smoke), "resolution": resolution}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(outputs_dir) / "judge" / f"{Path(train_set.root).name}-{key}"


def _holdout_monsters(labels: dict[str, tuple[str | None, str | None]], fraction: float, seed: int) -> set[str]:
    """The monsters never trained on: :func:`helpers.data.choose_heldout` over the monsters, keeping only those whose
    colour and shape other kept monsters still show (so the held-out accuracy measures an unseen pair of known
    labels, not an unknown label)."""
    if fraction <= 0 or len(labels) < 2:
        return set()
    held: set[str] = set()
    for m in choose_heldout(labels, fraction, seed):
        kept = [labels[o] for o in labels if o != m and o not in held]
        if all(v is not None and any(k[i] == v for k in kept) for i, v in enumerate(labels[m])):
            held.add(m)
    return held


def _augment(x: torch.Tensor, gen: torch.Generator, r: dict) -> torch.Tensor:
    """Random horizontal flips, shifts of up to ``max_shift`` px (white comes in), a mild blur (std up to
    ``mild_blur`` px) on some images, and a little noise: generated sprites are not pixel-perfect."""
    n = len(x)
    x = random_flip_shift(x, gen, r["max_shift"])
    sigmas = (r["mild_blur"] * torch.rand(n, generator=gen)).tolist()
    blur = (torch.rand(n, generator=gen) < 0.3).tolist()
    x = torch.cat([gaussian_blur(x[i:i + 1], s) if b else x[i:i + 1] for i, (s, b) in enumerate(zip(sigmas, blur))])
    sigma = 0.08 * torch.rand(n, 1, 1, 1, generator=gen)
    return (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def _colour_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What the shape path trains on: each image's RGB channels permuted at random, 20 % of them in grey, so that
    it cannot tell a shape by the colours of the few monsters that have it (white stays white)."""
    perms = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    idx = perms[torch.randint(len(perms), (len(x),), generator=gen)]
    out = torch.gather(x, 1, idx[:, :, None, None].expand_as(x))
    grey = torch.rand(len(x), generator=gen) < 0.2
    return torch.where(grey[:, None, None, None], out.mean(1, keepdim=True).expand_as(out), out)


def _recolour(x: torch.Tensor, c: torch.Tensor, gen: torch.Generator, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Give a share ``p`` of the sprites another body colour (a new label), so that the colour head does not learn
    a colour by the eyes, beaks, crowns or weapons of the few monsters that have it.

    Pixel art shades a body colour ``base`` towards black (``a * base``) and lights it towards white
    (``base + b * (255 - base)``): every pixel on one of those two lines of its sprite's colour (a in [0.58, 1],
    b in [0, 0.6], within 10/255; the darker outline is kept) is redrawn with the same ``a`` or ``b`` on the new
    colour; other pixels are kept.
    """
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0
    pick = ((torch.rand(len(x), generator=gen) < p) & (c >= 0) & (c < len(palette))).nonzero().flatten()
    new = torch.randint(len(palette), (len(x),), generator=gen)[pick]
    if not len(pick):
        return x, c
    base, to = palette[c[pick]][:, :, None], palette[new][:, :, None]  # [n, 3, 1] in [0, 1]
    px = (x[pick].flatten(2) + 1) / 2  # [n, 3, pixels]
    a = ((base * px).sum(1, keepdim=True) / (base * base).sum(1, keepdim=True)).clamp(0.58, 1.0)
    tol = (10 / 255) ** 2  # (squared distances: Tensor.norm over a small dim is slow on CPU)
    dark = ((px - a * base) ** 2).sum(1, keepdim=True) < tol
    up = 1 - base
    b = ((up * (px - base)).sum(1, keepdim=True) / (up * up).sum(1, keepdim=True).clamp_min(1e-6)).clamp(0.0, 0.6)
    light = ((px - base - b * up) ** 2).sum(1, keepdim=True) < tol
    redrawn = torch.where(dark, a * to, torch.where(light, to + b * (1 - to), px))
    out, labels = x.clone(), c.clone()
    out[pick] = (redrawn * 2 - 1).reshape(x[pick].shape)
    labels[pick] = new
    return out, labels


def _non_sprites(images: torch.Tensor, k: int, gen: torch.Generator, r: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` images that show no sprite (the shape head's "none" class): uniform noise, a flat fill (white or a random
    colour), or a training sprite under a heavy blur (std ``heavy_blur`` px); and which of them show no colour
    either (noise, white: the colour head's "none"; a blurred sprite or a coloured fill still shows a colour, which
    the colour head is not trained on)."""
    out, no_colour = [], []
    for kind in torch.randint(3, (k,), generator=gen).tolist():
        if kind == 0:
            out.append(torch.rand(1, *images.shape[1:], generator=gen) * 2 - 1)
            no_colour.append(True)
        elif kind == 1:
            white = torch.rand(1, generator=gen).item() < 0.5
            fill = torch.ones(3) if white else torch.rand(3, generator=gen) * 2 - 1
            out.append(fill[None, :, None, None].expand(1, *images.shape[1:]).clone())
            no_colour.append(white)
        else:
            lo, hi = r["heavy_blur"]
            sigma = lo + (hi - lo) * torch.rand(1, generator=gen).item()
            src = images[torch.randint(len(images), (1,), generator=gen)].float() / 127.5 - 1.0
            out.append(gaussian_blur(src, sigma))
            no_colour.append(False)
    return torch.cat(out), torch.tensor(no_colour)


def _label_tensors(examples, colours: Sequence[str], shapes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class indices of every example's colour and shape (-100 where its captions name none: ignored)."""
    labels = [_example_labels(e.captions) for e in examples]
    ci = torch.tensor([colours.index(c) if c in colours else -100 for c, _ in labels])
    si = torch.tensor([shapes.index(s) if s in shapes else -100 for _, s in labels])
    return ci, si


def _fit(net: JudgeNet, images: torch.Tensor, ci: torch.Tensor, si: torch.Tensor, r: dict, progress: bool) -> None:
    """The optimisation: ``r["steps"]`` AdamW steps (warm-up, cosine) of colour + shape cross-entropy."""
    gen = torch.Generator().manual_seed(r["seed"])
    opt = torch.optim.AdamW(net.parameters(), lr=r["lr"], weight_decay=1e-4)
    steps, warmup = r["steps"], max(1, r["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                              * (1 + np.cos(np.pi * min(1.0, s / steps))))
    net.train()
    for _ in tqdm(range(steps), desc="training the demo judge", disable=not progress):
        idx = torch.randint(len(images), (r["batch_size"],), generator=gen)
        x, c = _recolour(images[idx].float() / 127.5 - 1.0, ci[idx], gen, r["recolour"])
        x = _augment(x, gen, r)
        s = si[idx].clone()
        k = round(r["non_sprites"] * len(idx))  # the last k of the batch show no sprite: class "none"
        if k:
            fake, no_colour = _non_sprites(images, k, gen, r)
            x[-k:] = fake
            c[-k:] = torch.where(no_colour, len(r["colours"]), -100)
            s[-k:] = len(r["shapes"])
        c_logits, s_logits, _ = net(x, _colour_jitter(x, gen))
        loss = F.cross_entropy(c_logits, c, ignore_index=-100) + F.cross_entropy(s_logits, s, ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()


def train_judge(train_set, out_dir: str | Path, *, smoke: bool = False, resolution: int = JUDGE_RESOLUTION,
                seed: int | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the demo judge on ``train_set`` (a TrainSet or a data folder; read only) into ``out_dir`` (atomic).

    ``seed`` (default: the recipe's, 0) seeds the initialisation, the batches and which monsters are held out.

    Labels: :func:`prompt_labels` of each image's captions. The monsters of :func:`_holdout_monsters` are never
    trained on; ``judge.json`` reports the accuracy on them, on the training images, and on the data set's
    ``test_reference/`` images under ``test.json`` when it has them (the demo set does). One torch thread, seeded.
    """
    t0 = time.perf_counter()
    train_set = train_set if isinstance(train_set, TrainSet) else load_train_set(train_set, verbose=False)
    r = judge_recipe(smoke)
    r["seed"] = r["seed"] if seed is None else seed
    colours, shapes = tuple(r["colours"]), tuple(r["shapes"])
    ci, si = _label_tensors(train_set.examples, colours, shapes)
    if bool(((ci < 0) & (si < 0)).all()):
        raise DataError(f"{train_set.root}: no caption names a demo colour ({', '.join(colours)}) or shape "
                        f"({', '.join(shapes)}); the demo judge can only be trained on data that does.")
    images, keys = load_images(train_set, resolution, WHITE, progress=progress)
    by_monster = {}
    for k, e in zip(keys, train_set.examples):
        by_monster.setdefault(split_key(k)[0], _example_labels(e.captions))
    held = _holdout_monsters(by_monster, r["holdout_fraction"], r["seed"])
    is_held = torch.tensor([split_key(k)[0] in held for k in keys])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(r["seed"])
        net = JudgeNet(len(colours), len(shapes), r["width"], r["n_features"], r["n_colour_features"])
        t_fit = time.perf_counter()
        _fit(net, images[~is_held], ci[~is_held], si[~is_held], r, progress)
        seconds_train = time.perf_counter() - t_fit
        judge = DemoJudge(net, colours, shapes, resolution)
        texts = [e.captions[0] for e in train_set.examples]
        x = images.float() / 127.5 - 1.0
        acc_train = judge.accuracy(x[~is_held], [t for t, h in zip(texts, is_held.tolist()) if not h])
        acc_held = judge.accuracy(x[is_held], [t for t, h in zip(texts, is_held.tolist()) if h]) if held else None
        acc_test = _test_reference_accuracy(judge, Path(train_set.root))
    finally:
        torch.set_num_threads(threads)
    report = {"version": JUDGE_VERSION, "smoke": smoke, "data": str(train_set.root), "data_hash": data_hash(train_set),
              "resolution": resolution, "n_images": len(keys), "n_train_images": int((~is_held).sum()),
              "n_heldout_images": int(is_held.sum()), "heldout_monsters": sorted(held),
              "accuracy_train": acc_train, "accuracy_heldout_monsters": acc_held, "accuracy_test_reference": acc_test,
              "seconds_train": round(seconds_train, 1), "seconds_total": round(time.perf_counter() - t0, 1),
              "num_threads": 1, "parameters": sum(p.numel() for p in net.parameters()), "recipe": r,
              "torch": torch.__version__, "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}
    with atomic_folder(out_dir, replace=overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS_NAME))
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir)


def _test_reference_accuracy(judge: DemoJudge, root: Path) -> dict | None:
    """Accuracy on ``root/test_reference/<image_name>`` under ``root/test.json`` (a demo set's), else None."""
    if not (root / "test.json").is_file() or not (root / "test_reference").is_dir():
        return None
    plist = [p for p in read_test_prompts(root / "test.json") if (root / "test_reference" / p.image_name).is_file()]
    if not plist:
        return None
    acc = judge.accuracy([root / "test_reference" / p.image_name for p in plist], [p.text_prompt for p in plist])
    return {**acc, "n_images": len(plist)}


def load_judge(folder: str | Path) -> DemoJudge:
    """The judge saved in ``folder`` by :func:`train_judge`."""
    folder = Path(folder)
    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{folder}: no readable {REPORT_NAME} ({err}); train the judge with ensure_judge") from None
    r = report["recipe"]
    net = JudgeNet(len(r["colours"]), len(r["shapes"]), r["width"], r["n_features"], r["n_colour_features"])
    net.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    return DemoJudge(net.eval(), tuple(r["colours"]), tuple(r["shapes"]), int(report["resolution"]), folder, report)


def _complete(folder: Path) -> bool:
    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return report.get("version") == JUDGE_VERSION and (folder / WEIGHTS_NAME).is_file()


def ensure_judge(train_set, outputs_dir: str | Path, *, smoke: bool = False, resolution: int = JUDGE_RESOLUTION,
                 progress: bool = True) -> DemoJudge:
    """The demo judge of ``train_set`` (a TrainSet or a data folder): trained into :func:`judge_dir` on first use
    (10-20 s on one CPU core; ``smoke``: a few steps), loaded from there afterwards."""
    train_set = train_set if isinstance(train_set, TrainSet) else load_train_set(train_set, verbose=False)
    folder = judge_dir(train_set, outputs_dir, smoke=smoke, resolution=resolution)
    if not _complete(folder):
        if progress:
            print(f"Training the demo judge on {train_set.root} into {folder} ...")
        train_judge(train_set, folder, smoke=smoke, resolution=resolution, overwrite=True, progress=progress)
    judge = load_judge(folder)
    if progress:
        acc = judge.report.get("accuracy_heldout_monsters") or {}
        print(f"Demo judge {folder.name}: held-out monsters colour {acc.get('colour')}, shape {acc.get('shape')}, "
              f"species {acc.get('species')}")
    return judge
