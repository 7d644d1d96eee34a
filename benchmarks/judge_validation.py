"""Validate the demo judge (``helpers.demo.judge``) the way a metric must be validated: on submissions whose right score
is known.

On the full demo data set (``helpers.demo.dataset.ensure_demo_dataset``) the judge is built (or loaded from its cache),
then two sets of real sprites are scored with ``helpers.demo.judge.judge_folder``:

- the demo's **test prompts** (``test.json``) with their ``test_reference/`` sprites (unseen actions included);
- the **held-out monsters**: the training sprites of the monsters the judge never trained on, each under its own
  caption.

Each set is scored as: (1) the real images under their own prompts (should be near 1); (2) the same images under
shuffled prompts (near chance, the sum of the squared label frequencies: ~1/12 colour, ~1/8 shape); (3) uniform
noise, (4) blank white images, (5) a heavy Gaussian blur (radius 6 px at 64 px) - all low; (6) the sprite cut into
8 px tiles and shuffled (colours kept, shape destroyed: a kind of non-sprite the judge was not trained to reject);
(7) a blur of radius 3 px (between what the judge learns to read and what it learns to reject); and (8) a mild blur
(radius 1 px), which should stay high (the judge must not need pixel-perfect sprites). The demo-judge Fréchet
distance of every case is measured against all training sprites (lower = closer to real sprites; it ignores the
prompts, so (1) and (2) share it). The judge's held-out accuracy is also measured over several held-out draws
(``--seeds``: judges trained with other seeds, each holding out other monsters). The markdown table, the command
and the machine go into this script's section of ``benchmarks/RESULTS.md``.

    python benchmarks/judge_validation.py                 # data/demo, outputs/ (the judge is cached there)
    python benchmarks/judge_validation.py --seeds 1 --no-record   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.data import TestPrompt, load_train_set, read_test_prompts  # noqa: E402
from helpers.demo.dataset import ensure_demo_dataset  # noqa: E402
from helpers.data import split_key  # noqa: E402
from helpers.data.images import load_image  # noqa: E402
from helpers.demo.judge import (ADHERENCE_NAMES, JUDGE_FD_NAME, ensure_judge, judge_folder, load_judge,  # noqa: E402
                           prompt_labels, train_judge)
from helpers.paths import data_root, outputs_root  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from results import RESULTS, machine, write_section  # noqa: E402

KEYS = ("colour", "shape", "species")


def _monster(key: str) -> str:
    return split_key(key)[0]


def _chance(prompts: list[TestPrompt]) -> dict[str, float]:
    """Expected adherence of a perfect judge under randomly permuted prompts: sum of squared label frequencies."""
    labels = [prompt_labels(p.text_prompt) for p in prompts]
    out = {}
    for key, pick in (("colour", lambda lab: lab[0]), ("shape", lambda lab: lab[1]), ("species", tuple)):
        freq = Counter(pick(lab) for lab in labels)
        out[key] = sum((n / len(labels)) ** 2 for n in freq.values())
    return out


def _write_case(folder: Path, sources: dict[str, Path], case: str, rng: np.random.Generator) -> Path:
    """``folder/<image_name>`` for every (image_name -> real sprite) of ``sources``, transformed by ``case``."""
    folder.mkdir(parents=True)
    for name, src in sources.items():
        if case in ("real", "shuffled"):
            shutil.copy(src, folder / name)
            continue
        if case == "noise":
            img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
        elif case == "blank":
            img = Image.new("RGB", (64, 64), (255, 255, 255))
        elif case == "tiles":
            a = np.asarray(load_image(src, 64))
            tiles = a.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 8, 8, 3)[rng.permutation(64)]
            img = Image.fromarray(tiles.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3), "RGB")
        else:
            radius = {"heavy blur": 6, "blur 3": 3, "mild blur": 1}[case]
            img = load_image(src, 64).filter(ImageFilter.GaussianBlur(radius))
        img.save(folder / name)
    return folder


CASES = (("real", "real images, own prompts"), ("shuffled", "real images, shuffled prompts"),
         ("noise", "uniform noise"), ("blank", "blank white"), ("heavy blur", "Gaussian blur r=6 px"),
         ("tiles", "sprite cut into 8x8-px tiles, shuffled (not a training negative)"),
         ("blur 3", "Gaussian blur r=3 px (in between)"), ("mild blur", "Gaussian blur r=1 px (should stay high)"))


def score_set(judge, prompts: list[TestPrompt], sources: dict[str, Path], train_paths: list[Path], work: Path,
              seed: int = 0) -> list[dict]:
    """One row per case: adherence (colour, shape, species) and the demo-judge FD to all training sprites."""
    rng = np.random.default_rng(seed)
    reference = {p.image_name: train_paths for p in prompts}
    rows = []
    for case, label in CASES:
        folder = _write_case(work / case.replace(" ", "_"), sources, case, rng)
        plist = prompts
        if case == "shuffled":
            texts = [p.text_prompt for p in prompts]
            random.Random(seed).shuffle(texts)
            plist = [TestPrompt(p.key, t, p.image_name) for p, t in zip(prompts, texts)]
        res = {r.name: r for r in judge_folder(folder, plist, reference, judge)}
        rows.append({"case": label, **{k: res[ADHERENCE_NAMES[k]].value for k in KEYS},
                     "fd": res[JUDGE_FD_NAME].value, "n": res[ADHERENCE_NAMES["colour"]].n_images})
    return rows


def heldout_draws(train_set, seeds: int, work: Path) -> list[dict]:
    """Held-out accuracy of judges trained with seeds 1..seeds-1 (other monsters held out), plus their time."""
    out = []
    for seed in range(1, seeds):
        folder = train_judge(train_set, work / f"judge-seed{seed}", seed=seed, progress=False)
        rep = load_judge(folder).report
        out.append({"seed": seed, "monsters": rep["heldout_monsters"], "n": rep["n_heldout_images"],
                    **rep["accuracy_heldout_monsters"], "seconds_train": rep["seconds_train"]})
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(args, judge, sets: dict[str, tuple[list[dict], dict]], draws: list[dict], seconds: float) -> str:
    rep = judge.report
    acc_h, acc_t = rep["accuracy_heldout_monsters"], rep["accuracy_test_reference"]
    lines = ["## Demo judge validation (`helpers.demo.judge`)", "",
             f"- command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
             f"- machine: {machine()}", f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}",
             f"- data: {rep['data']} ({rep['n_images']} sprites; judge trained on {rep['n_train_images']}, held out "
             f"{rep['n_heldout_images']} of monsters {', '.join(rep['heldout_monsters'])})",
             f"- judge: {judge.folder.name} ({rep['parameters']:,} parameters), trained in {rep['seconds_train']} s "
             f"({rep['seconds_total']} s with loading) on {rep['num_threads']} thread, "
             f"{rep['recipe']['steps']} steps of batch {rep['recipe']['batch_size']}",
             f"- judge accuracy: held-out monsters colour {_fmt(acc_h['colour'])} / shape {_fmt(acc_h['shape'])} / "
             f"species {_fmt(acc_h['species'])}; demo test_reference ({acc_t['n_images']} sprites, unseen actions) "
             f"{_fmt(acc_t['colour'])} / {_fmt(acc_t['shape'])} / {_fmt(acc_t['species'])}; training images "
             f"{_fmt(rep['accuracy_train']['species'])} (species)",
             f"- this script ran {seconds:.0f} s" + (f"; note: {args.note}" if args.note else ""),
             "- how to read it: adherence = share of images whose predicted colour / shape / both match the prompt; "
             "the judge's \"none\" class (no sprite) never matches. The shape head is trained to say \"none\" on "
             "noise, flat fills and heavily blurred sprites, the colour head on noise and white only (a blurred "
             "sprite keeps its colour), so a heavy blur keeps some colour adherence and loses the species. The FD "
             "column compares each case with all 640 training sprites: it ranks cases within a block, not across "
             "the two blocks (the held-out block shows 4 monsters, far from the full set's spread).", ""]
    for title, (rows, chance) in sets.items():
        lines += [f"**{title}** (n = {rows[0]['n']} images; chance under shuffling: colour {chance['colour']:.3f}, "
                  f"shape {chance['shape']:.3f}, species {chance['species']:.3f})", "",
                  "| case | colour adherence | shape adherence | species adherence | demo-judge FD to training "
                  "sprites (not FID) |", "|---|---|---|---|---|"]
        lines += [f"| {r['case']} | {_fmt(r['colour'])} | {_fmt(r['shape'])} | {_fmt(r['species'])} | "
                  f"{r['fd']:.2f} |" for r in rows]
        lines.append("")
    if draws:
        lines += ["**Held-out accuracy over other held-out draws** (a judge trained with another seed holds out "
                  "other monsters)", "", "| seed | held-out monsters | images | colour | shape | species | "
                  "train s |", "|---|---|---|---|---|---|---|",
                  f"| 0 (the cached judge) | {', '.join(rep['heldout_monsters'])} | {rep['n_heldout_images']} | "
                  f"{_fmt(acc_h['colour'])} | {_fmt(acc_h['shape'])} | {_fmt(acc_h['species'])} | "
                  f"{rep['seconds_train']} |"]
        lines += [f"| {d['seed']} | {', '.join(d['monsters'])} | {d['n']} | {_fmt(d['colour'])} | "
                  f"{_fmt(d['shape'])} | {_fmt(d['species'])} | {d['seconds_train']} |" for d in draws]
        all_draws = [{"n": rep["n_heldout_images"], **acc_h}] + draws
        pooled = {k: sum(d[k] * d["n"] for d in all_draws) / sum(d["n"] for d in all_draws) for k in KEYS}
        lines += [f"| pooled | {sum(len(d['monsters']) for d in draws) + len(rep['heldout_monsters'])} monsters | "
                  f"{sum(d['n'] for d in all_draws)} | {_fmt(pooled['colour'])} | {_fmt(pooled['shape'])} | "
                  f"{_fmt(pooled['species'])} | |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=data_root() / "demo", help="the demo data folder (made if absent)")
    ap.add_argument("--outputs", type=Path, default=outputs_root(), help="outputs folder (the judge is cached there)")
    ap.add_argument("--seeds", type=int, default=4, help="held-out draws for the held-out accuracy (1 = only seed 0)")
    ap.add_argument("--note", default="", help="a note for RESULTS.md (e.g. what else was running)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write benchmarks/RESULTS.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    root = ensure_demo_dataset(args.data)
    train_set = load_train_set(root, verbose=False)
    judge = ensure_judge(train_set, args.outputs)
    train_paths = sorted(e.path for e in train_set.examples)
    test = [p for p in read_test_prompts(root / "test.json")]
    held = set(judge.report["heldout_monsters"])
    held_examples = [e for e in train_set.examples if _monster(e.key) in held]
    held_prompts = [TestPrompt(e.path.stem, e.captions[0], e.path.name) for e in held_examples]
    with tempfile.TemporaryDirectory(prefix="judge-validation-") as tmp:
        work = Path(tmp)
        sets = {
            f"Demo test prompts ({root / 'test.json'}, references test_reference/)":
                (score_set(judge, test, {p.image_name: root / "test_reference" / p.image_name for p in test},
                           train_paths, work / "test"), _chance(test)),
            "Held-out monsters (training sprites of the monsters the judge never saw, own captions)":
                (score_set(judge, held_prompts, {p.image_name: e.path for p, e in zip(held_prompts, held_examples)},
                           train_paths, work / "held"), _chance(held_prompts)),
        }
        draws = heldout_draws(train_set, args.seeds, work / "draws")
    text = render(args, judge, sets, draws, time.perf_counter() - t0)
    print(text)
    if not args.no_record:
        write_section("judge_validation:demo", text, args.results)
        print(f"\nwritten to {args.results}")


if __name__ == "__main__":
    main()
