"""Which demo recipe learns the most per CPU-minute? Variants of the demo training recipe at equal compute, scored on
held-out prompts by the demo judge (helpers.judge: colour / shape / species adherence).

Every variant is a set of ``TrainConfig`` overrides (a config field, not a code fork). The budget is the compute of
today's demo default (``--budget-steps`` optimizer steps of the default recipe, 800): a calibration phase measures
the seconds per step of every variant on this machine, and each variant gets ``budget x s_default / s_variant``
steps, so a variant whose step is twice as expensive (batch 32, a wider UNet) trains half as many steps. (Wall time
itself is not a fair budget on a shared 2-core machine: the load changes; the ratio of step costs does not.)

Scoring: the demo's ``test.json`` (one prompt per monster, each naming an action that monster never does in
``train/``: the species/action pair is unseen) with one image per prompt, seeded per prompt key, DDIM 25 steps at
guidance 4 (the demo's sample settings), judged against ``test_reference/``. The runs use the same demo data, demo
VAE, text encoder and latent cache. Results go to ``<out>/runs.jsonl`` (a finished run is never redone), the summary
table (median and spread over seeds) to ``benchmarks/RESULTS.md``.

    python benchmarks/recipe_study.py --seeds 0 1 --jobs 2                 # every variant, two seeds
    python benchmarks/recipe_study.py --variants default,lr-2e-3 --seeds 0 --jobs 1
    python benchmarks/recipe_study.py --budget-x 3 --variants default,adopted --seeds 0
    python benchmarks/recipe_study.py --generation adopted                 # guidance / sampler / steps at generation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: name -> TrainConfig overrides on top of the demo defaults (TrainConfig.for_profile of the demo profile).
VARIANTS: dict[str, dict] = {
    "default": {},
    "t-logit-normal": {"timestep_sampling": "logit_normal"},
    "weight-none": {"loss_weighting": "none"},
    "weight-soft-min-snr": {"loss_weighting": "soft_min_snr"},
    "epsilon": {"prediction_type": "epsilon"},
    "lr-2e-3": {"lr": 2e-3},
    "lr-5e-4": {"lr": 5e-4},
    "batch-8": {"batch_size": 8},
    "batch-32": {"batch_size": 32},
    "ema-0.99": {"ema_decay": 0.99},
    "ema-0.9995": {"ema_decay": 0.9995},
    "dropout-5": {"caption_dropout": 0.05},
    "dropout-15": {"caption_dropout": 0.15},
    "unet-wider": {"unet_overrides": {"block_out_channels": [48, 96, 192]}},
    "unet-deeper": {"unet_overrides": {"layers_per_block": 2}},
}
EVAL = {"guidance_scale": 4.0, "steps": 25, "scheduler": "ddim"}
GENERATION = [(g, s, n) for g in (1.0, 2.0, 3.0, 4.0, 6.0) for s, n in (("ddim", 25),)] + \
             [(3.0, "ddim", 50), (3.0, "dpm++", 15), (3.0, "dpm++", 25), (4.0, "dpm++", 15)]
METRICS = ("colour", "shape", "species")


def setup():
    """The demo profile (generated data set, packaged MiniLM, demo VAE trained once), frozen models, cache, judge:
    the same artefacts (under outputs/) that ``make run`` builds and reuses."""
    import warnings

    from helpers.cache import build_cache, load_cache
    from helpers.frozen import load_frozen_models
    from helpers.judge import ensure_judge
    from helpers.profiles import resolve_profile

    P = resolve_profile("demo", False, device="cpu", verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_set = P.load_train_set(verbose=False)
        frozen = load_frozen_models(P)
        cache = load_cache(build_cache(train_set, frozen, P))
        judge = ensure_judge(train_set, P.outputs_dir, progress=False)
    return P, frozen, cache, judge


def config_for(P, name: str, seed: int, out: Path, max_steps: int | None = None):
    from helpers.train_config import TrainConfig

    overrides = dict(VARIANTS[name])
    cfg = TrainConfig.for_profile(P, run_name=f"{name}-s{seed}", run_dir=str(out / "runs" / f"{name}-s{seed}"),
                                  seed=seed, eval_freq=0, resume="latest", **overrides)
    if max_steps is not None:
        cfg.max_steps, cfg.save_freq = int(max_steps), int(max_steps)
        cfg.warmup_steps = min(cfg.warmup_steps, max(1, cfg.max_steps // 20))
    return cfg


def calibrate(P, cache, names: list[str], rounds: int = 3, steps: int = 3) -> dict[str, float]:
    """Seconds per optimizer step of each variant (one thread): ``rounds`` rounds over all variants (so a change of
    load hits every variant alike), ``steps`` timed steps each after a warm-up step; the median per variant."""
    import torch

    from helpers.train import build_train_parts, draw_batch, train_step

    g = torch.Generator().manual_seed(0)
    cfgs = {n: config_for(P, n, 0, Path("/nonexistent")) for n in names}
    parts = {n: build_train_parts(c, cache.latent_shape, cache.hidden_size, "cpu") for n, c in cfgs.items()}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            cfg = cfgs[n]
            for k in range(steps + (1 if r == 0 else 0)):
                idx = torch.randint(cache.n_images, (cfg.global_batch(),), generator=g)
                batch = draw_batch(cache, g, idx, 1000, flip_p=cfg.flip_p, caption_dropout=cfg.caption_dropout)
                t0 = time.perf_counter()
                train_step(parts[n], batch, cfg)
                if not (r == 0 and k == 0):
                    times[n].append(time.perf_counter() - t0)
    out = {n: statistics.median(v) for n, v in times.items()}
    for n, v in out.items():
        print(f"  {n:<22} {v * 1000:7.1f} ms/step", flush=True)
    return out


def run_one(name: str, seed: int, max_steps: int, out: Path) -> dict:
    """Train one variant for ``max_steps``, generate the test prompts, judge them; returns the record."""
    import torch

    from helpers.judge import judge_folder
    from helpers.metrics import generate_for_scoring
    from helpers.sampling import TextToImage
    from helpers.train import train

    torch.set_num_threads(1)
    P, frozen, cache, judge = setup()
    cfg = config_for(P, name, seed, out, max_steps)
    t0 = time.perf_counter()
    result = train(cfg, cache, frozen)
    seconds = time.perf_counter() - t0
    tti = TextToImage.from_checkpoint(result.checkpoint, frozen)
    folder = generate_for_scoring(tti, P.test_json, out / "gen" / f"{name}-s{seed}-{max_steps}", size=P.resolution,
                                  progress=False, **EVAL)
    scores = {r.name: r.value for r in judge_folder(folder, P.test_json, P.data_dir / "test_reference", judge)}
    rec = {"variant": name, "seed": seed, "steps": max_steps, "train_s": round(seconds, 1),
           "final_loss": result.losses[-1] if result.losses else None, "overrides": VARIANTS[name], **scores}
    return rec


def _done(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    return {(r["variant"], r["seed"], r["steps"]) for r in map(json.loads, path.read_text().splitlines())}


def run_all(todo: list[tuple[str, int, int]], out: Path, jobs: int) -> None:
    """Run the (variant, seed, steps) jobs, ``jobs`` worker processes at a time (one thread each)."""
    log = out / "runs.jsonl"
    todo = [t for t in todo if t not in _done(log)]
    running: list[tuple[subprocess.Popen, tuple]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    while todo or running:
        while todo and len(running) < jobs:
            job = todo.pop(0)
            cmd = [sys.executable, __file__, "--worker", json.dumps(job), "--out", str(out),
                   *[f"--define={n}={json.dumps(v)}" for n, v in VARIANTS.items()]]
            running.append((subprocess.Popen(cmd, env=env), job))
            print(f"started {job}", flush=True)
        time.sleep(2)
        for proc, job in list(running):
            if proc.poll() is not None:
                running.remove((proc, job))
                print(f"finished {job} (exit {proc.returncode})", flush=True)


def summarise(out: Path) -> list[dict]:
    """Median and range over seeds per (variant, steps)."""
    rows: dict[tuple[str, int], list[dict]] = {}
    for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines()):
        rows.setdefault((r["variant"], r["steps"]), []).append(r)
    table = []
    for (name, steps), recs in rows.items():
        row = {"variant": name, "steps": steps, "seeds": len(recs),
               "train_s": statistics.median(r["train_s"] for r in recs)}
        for m in METRICS:
            vals = sorted(next(v for k, v in r.items() if k.startswith(f"demo-judge {m}")) for r in recs)
            row[m] = (statistics.median(vals), vals[0], vals[-1])
        fd = sorted(next(v for k, v in r.items() if "Fréchet" in k) for r in recs)
        row["fd"] = (statistics.median(fd), fd[0], fd[-1])
        table.append(row)
    return sorted(table, key=lambda r: -r["species"][0])


def markdown(table: list[dict]) -> str:
    def cell(t, pct=True):
        f = (lambda v: f"{100 * v:.0f} %") if pct else (lambda v: f"{v:.1f}")
        return f"{f(t[0])} ({f(t[1])}–{f(t[2])})"

    lines = ["| variant | steps | seeds | train s (median) | species | colour | shape | judge FD (lower better) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['variant']} | {r['steps']} | {r['seeds']} | {r['train_s']:.0f} | {cell(r['species'])} | "
                     f"{cell(r['colour'])} | {cell(r['shape'])} | {cell(r['fd'], pct=False)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes at a time (one thread each)")
    ap.add_argument("--budget-steps", type=int, default=800, help="steps of the default recipe = the budget")
    ap.add_argument("--budget-x", type=float, default=1.0, help="multiply the budget (e.g. 3)")
    ap.add_argument("--out", default=str(REPO / "outputs" / "recipe_study"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--define", action="append", default=[], metavar="NAME=JSON",
                    help="another variant, e.g. adopted='{\"lr\": 2e-3}' (also passed to the workers)")
    ap.add_argument("--note", default="")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.define:
        name, _, spec = item.partition("=")
        VARIANTS[name] = json.loads(spec)
    if args.worker:
        name, seed, steps = json.loads(args.worker)
        rec = run_one(name, seed, steps, out)
        with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        return 0
    names = args.variants.split(",")
    import torch

    torch.set_num_threads(1)
    P, _, cache, _ = setup()
    cal_path = out / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    missing = [n for n in dict.fromkeys(["default", *names]) if n not in cal]
    if missing:
        print("calibrating (seconds per step, one thread):")
        cal.update(calibrate(P, cache, missing))
        cal_path.write_text(json.dumps(cal, indent=1))
    budget = args.budget_steps * args.budget_x
    todo = [(n, s, max(1, round(budget * cal["default"] / cal[n]))) for n in names for s in args.seeds]
    run_all(todo, out, args.jobs)
    table = summarise(out)
    print(markdown(table))
    if not args.no_record:
        from results import machine, write_section

        cmd = "python benchmarks/recipe_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = "\n".join([
            "## Recipe study: demo variants at equal compute, judged on held-out prompts",
            "", f"- command: `{cmd}` (every run so far in `{out / 'runs.jsonl'}`)", f"- machine: {machine()}",
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
            f"- budget: {args.budget_steps} steps of the default recipe; each variant gets budget x (s/step of the "
            "default / its own s/step), measured on this machine (calibration.json)",
            f"- scoring: demo test.json ({len(json.loads(P.test_json.read_text()))} prompts, unseen species/action "
            "pairs), 1 image each, DDIM 25 steps, guidance 4; demo judge adherence (median over seeds, min–max)",
            *( [f"- note: {args.note}"] if args.note else []), "", markdown(table)])
        write_section("recipe_study", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
