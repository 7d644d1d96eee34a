"""How long to train on a captioned image set the workbook did not generate (issue #19): the demo recipe at its
800 steps against longer budgets and another learning rate, on sets built by ``benchmarks/outside_sets.py``, scored
by the retrieval judge (``helpers.submission.retrieval_judge``) on held-out prompts.

    python benchmarks/outside_sets.py --out /work/outside_sets
    python benchmarks/budget_study.py --data /work/outside_sets/glyphs /work/outside_sets/icons \\
        --variants default-800,default-2400,lr1e-3-2400 --seeds 0 --jobs 2 --out /work/budget_study
    python benchmarks/budget_study.py --out /work/budget_study --report   # the table, into benchmarks/RESULTS.md

Each run is what chapter 04 does on that data with ``profile_name="demo"``: the demo VAE and the latent cache of the
data set (made once, before the workers start, under ``<out>/outputs``), the workbook's held-out split (5 % of the
keys, never trained on), ``TrainConfig.for_profile`` plus the variant's overrides; then ``--images`` images for each
of the first ``--prompts`` held-out prompts (the run's sample guidance and steps) and the retrieval judge's top-1 /
top-5 over them (chance: 1 / the number of prompts). Workers run one torch thread each (``--jobs`` at a time), so
the seconds are one-thread seconds; one JSON line per run goes to ``<out>/runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: name -> TrainConfig overrides on top of the demo profile's defaults (max_steps: the budget).
VARIANTS: dict[str, dict] = {
    "default-800": {"max_steps": 800},
    "default-1600": {"max_steps": 1600},
    "default-2400": {"max_steps": 2400},
    "lr1e-3-2400": {"max_steps": 2400, "lr": 1e-3},
    "uniform-t-2400": {"max_steps": 2400, "timestep_sampling": "uniform"},
}


def setup(data: Path, out: Path, *, verbose: bool = False):
    """The demo profile on ``data``, its held-out split, frozen models, latent cache and retrieval judge."""
    from helpers.data import holdout_split
    from helpers.frozen import build_cache, load_cache, load_frozen_models
    from helpers.profiles import resolve_profile
    from helpers.submission import ensure_retrieval_judge

    P = resolve_profile("demo", False, data, out / "outputs", device="cpu", verbose=verbose)
    train_set = P.load_train_set(verbose=False, progress=False)
    held = holdout_split(train_set, out_dir=out / "heldout" / data.name, resolution=P.resolution,
                         background=P.background, crop_to_content=P.crop_to_content)
    frozen = load_frozen_models(P)
    cache = load_cache(build_cache(held.train_set, frozen, P))
    judge = ensure_retrieval_judge(train_set, frozen.text_encoder, P.outputs_dir, progress=verbose)
    return P, held, frozen, cache, judge


def run_id(data: Path, name: str, seed: int) -> str:
    return f"{data.name}-{name}-s{seed}"


def run_one(data: Path, name: str, seed: int, out: Path, n_prompts: int, images: int) -> dict:
    """Train one variant on ``data`` and score it on held-out prompts; returns the record."""
    import torch

    from helpers.data import read_test_prompts
    from helpers.generation import TextToImage
    from helpers.submission import generate_for_scoring
    from helpers.training import TrainConfig, train

    torch.set_num_threads(1)
    P, held, frozen, cache, judge = setup(data, out)
    run = run_id(data, name, seed)
    cfg = TrainConfig.for_profile(P, run_name=run, run_dir=str(out / "runs" / run), seed=seed, eval_freq=0,
                                  resume="latest", **VARIANTS[name])
    cfg.save_freq = cfg.max_steps
    t0 = time.perf_counter()
    result = train(cfg, cache, frozen)
    train_s = time.perf_counter() - t0
    prompts = read_test_prompts(held.prompts_path)[:n_prompts]
    tti = TextToImage.from_checkpoint(result.checkpoint, frozen)
    t1 = time.perf_counter()
    gen = generate_for_scoring(tti, prompts, out / "gen" / run, size=P.resolution, images_per_prompt=images,
                               guidance_scale=cfg.sample_guidance, steps=cfg.sample_steps, progress=False)
    gen_s = time.perf_counter() - t1
    scores = {r.name: r.value for r in judge.score(gen, prompts)}
    return {"data": data.name, "variant": name, "seed": seed, "steps": cfg.max_steps, "lr": cfg.lr,
            "n_train_images": cache.n_images, "epochs": round(cfg.max_steps * cfg.global_batch() / cache.n_images, 1),
            "train_s": round(train_s, 1), "s_per_step": round(train_s / cfg.max_steps, 3),
            "generate_s": round(gen_s, 1), "n_prompts": len(prompts), "images_per_prompt": images,
            "top1": scores.get("judge retrieval top-1"), "top5": scores.get("judge retrieval top-5"),
            "cosine": scores.get("judge text–image cosine (CLIP-T-like, not CLIP)"),
            "judge": judge.folder.name, "judge_validation": (judge.report or {}).get("validation", {}).get("top1"),
            "final_loss": round(float(sum(result.losses[-50:]) / max(1, len(result.losses[-50:]))), 4)}


def run_all(todo: list[tuple[Path, str, int]], out: Path, jobs: int, n_prompts: int, images: int) -> None:
    """Each (data, variant, seed) in a worker process, ``jobs`` at a time; records appended to runs.jsonl."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[subprocess.Popen, tuple]] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < jobs:
            item = queue.pop(0)
            spec = json.dumps([str(item[0]), item[1], item[2], n_prompts, images])
            log = open(out / "logs" / f"{run_id(*item)}.log", "w", encoding="utf-8")
            proc = subprocess.Popen([sys.executable, __file__, "--out", str(out), "--worker", spec],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((proc, item))
            print(f"started {run_id(*item)}", flush=True)
        time.sleep(5)
        for proc, item in list(running):
            if proc.poll() is not None:
                running.remove((proc, item))
                print(f"finished {run_id(*item)} (exit {proc.returncode})", flush=True)


def read_runs(out: Path) -> list[dict]:
    path = out / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def validation_table(out: Path, judges: list[str]) -> str:
    """The retrieval judges' own validation on images they never trained on (one row per data set)."""
    lines = ["| judge | pairs | top-1 (chance) | top-1 95 % lower bound | top-5 (chance) | shuffled top-1 | "
             "cosine matched / mismatched | noise / white / heavy blur top-1 | usable |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in judges:
        path = out / "outputs" / "judge" / name / "judge.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        v, ni = r["validation"], r["validation"]["non_images"]
        lines.append(f"| {name} ({r['n_train_images']} training images, {r['seconds_train']} s) | {v['n_pairs']} | "
                     f"{v['top1']:.2f} ({v['chance_top1']:.2f}) | {v['top1_low']:.2f} | {v['top5']:.2f} "
                     f"({v['chance_top5']:.2f}) | {v['shuffled_top1']:.2f} | {v['cosine_matched']:.2f} / "
                     f"{v['cosine_mismatched']:.2f} | {ni['noise']['top1']:.2f} / {ni['white']['top1']:.2f} / "
                     f"{ni['blur']['top1']:.2f} | {v['usable']} |")
    return "\n".join(lines) + "\n"


def markdown(records: list[dict]) -> str:
    """One table per data set: variant, steps, epochs, seeds, one-thread training minutes, top-1 / top-5 (median,
    min–max over seeds) with chance."""
    lines = []
    for data in sorted({r["data"] for r in records}):
        rows = [r for r in records if r["data"] == data]
        chance = 1 / rows[0]["n_prompts"]
        lines += [f"**{data}** ({rows[0]['n_train_images']} training images; {rows[0]['n_prompts']} held-out prompts "
                  f"x {rows[0]['images_per_prompt']} images; chance top-1 {chance:.1%}, top-5 {5 * chance:.1%}; "
                  f"judge {rows[0]['judge']}, its own held-out top-1 {rows[0]['judge_validation']:.2f})", "",
                  "| variant | steps | epochs | seeds | train min (1 thread) | top-1 | top-5 | top-1 / chance |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in dict.fromkeys(r["variant"] for r in rows):
            rs = [r for r in rows if r["variant"] == name]
            t1 = [r["top1"] for r in rs]
            t5 = [r["top5"] for r in rs]
            spread = (lambda v: f"{statistics.median(v):.1%}"
                      + (f" ({min(v):.1%}–{max(v):.1%})" if len(v) > 1 else ""))
            lines.append(f"| {name} | {rs[0]['steps']} | {rs[0]['epochs']} | {len(rs)} | "
                         f"{statistics.median(r['train_s'] for r in rs) / 60:.1f} | {spread(t1)} | {spread(t5)} | "
                         f"{statistics.median(t1) / chance:.1f}x |")
        lines.append("")
    return "\n".join(lines)


def report(out: Path, command: str) -> None:
    """Replace the budget-study section of benchmarks/RESULTS.md with the tables of ``<out>/runs.jsonl``."""
    import torch

    begin, end = "<!-- budget_study:begin -->", "<!-- budget_study:end -->"
    body = "\n".join([begin, "## Training budget on outside captioned sets (retrieval judge, held-out prompts)", "",
                      f"- command: `{command}`",
                      f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                      f"torch {torch.__version__}, one thread per run, two runs at a time",
                      f"- date: {time.strftime('%Y-%m-%d %H:%M')}", "",
                      "**The judges' own validation** (held-out images of groups they never trained on):", "",
                      validation_table(out, sorted({r["judge"] for r in read_runs(out)})), markdown(read_runs(out)),
                      end])
    path = REPO / "benchmarks" / "RESULTS.md"
    text = path.read_text(encoding="utf-8")
    if begin in text:
        text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", type=Path, default=[])
    ap.add_argument("--variants", default="default-800,default-2400,lr1e-3-2400")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts scored (the first N)")
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "budget_study")
    ap.add_argument("--report", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        data, name, seed, n_prompts, images = json.loads(args.worker)
        rec = run_one(Path(data), name, seed, args.out, n_prompts, images)
        with open(args.out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        return 0
    if args.report:
        report(args.out, " ".join(["python", "benchmarks/budget_study.py", *(argv or sys.argv[1:])]))
        print(markdown(read_runs(args.out)))
        return 0
    (args.out / "logs").mkdir(exist_ok=True)
    done = {(r["data"], r["variant"], r["seed"]) for r in read_runs(args.out)}
    for data in args.data:  # the VAE, cache and judge of each set once, before the workers share them
        print(f"preparing {data} ...", flush=True)
        setup(data.resolve(), args.out, verbose=True)
    todo = [(d.resolve(), v, s) for d in args.data for v in args.variants.split(",") for s in args.seeds
            if (d.name, v, s) not in done]
    todo.sort(key=lambda item: -VARIANTS[item[1]].get("max_steps", 800))  # the longest first
    run_all(todo, args.out, args.jobs, args.prompts, args.images)
    print(markdown(read_runs(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
