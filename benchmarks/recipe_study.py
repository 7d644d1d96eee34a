"""Which demo recipe learns the most per CPU-minute? Variants of the demo training recipe at equal compute, scored on
held-out prompts by the demo judge (helpers.demo.judge: colour / shape / species adherence).

Every variant is a set of ``TrainConfig`` overrides (a config field, not a code fork). The budget is the compute of
the demo default (``--budget-steps`` optimizer steps of the default recipe, 800). A variant that changes what a step
costs (:data:`COST_FIELDS`: batch size, UNet size) gets ``budget x s_default / s_variant`` steps, with both costs
measured on this machine by a calibration phase, so a variant whose step is twice as expensive trains half as many
steps; every other variant trains the budget's steps. (Wall time itself is not a fair budget on a shared 2-core
machine: the load changes; the ratio of step costs does not.)

Scoring: the demo's ``test.json`` (one prompt per monster, each naming an action that monster never does in
``train/``: the species/action pair is unseen) with one image per prompt, seeded per prompt key, DDIM 25 steps at
guidance 4 (the demo's sample settings), judged against ``test_reference/``. The runs use the same demo data, demo
VAE, text encoder and latent cache. Results go to ``<out>/runs.jsonl`` (a finished run is never redone), the summary
table (median and spread over seeds) to ``benchmarks/RESULTS.md``.

    python benchmarks/recipe_study.py --seeds 0 1 --jobs 2                 # every variant, two seeds
    python benchmarks/recipe_study.py --variants default,lr-4e-3 --seeds 0 --jobs 1
    python benchmarks/recipe_study.py --budget-x 3 --variants default,old-default --seeds 0
    python benchmarks/recipe_study.py --budget-x 0.75 --variants default   # today's recipe with less compute
    python benchmarks/recipe_study.py --generation --variants default      # guidance / sampler / steps at generation

The study ran in two rounds: round 1 changed one thing at a time from the old demo defaults (``OLD``: lr 1e-3,
uniform timesteps; its variants are named ``old...``), its winner became today's default, and round 2 changes one
thing at a time from that.
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

#: The demo defaults before the study (round 1 changed one thing at a time from these; the winner became the default).
OLD = {"lr": 1e-3, "timestep_sampling": "uniform"}
#: name -> TrainConfig overrides on top of TODAY's demo defaults (TrainConfig.for_profile of the demo profile).
VARIANTS: dict[str, dict] = {
    # round 1: one change to the old defaults (lr 1e-3, uniform timesteps)
    "old-default": dict(OLD),
    "old+t-logit-normal": {"lr": 1e-3},
    "old+lr-2e-3": {"timestep_sampling": "uniform"},
    "old+weight-soft-min-snr": {**OLD, "loss_weighting": "soft_min_snr"},
    "old+weight-none": {**OLD, "loss_weighting": "none"},
    "old+epsilon": {**OLD, "prediction_type": "epsilon"},
    "old+batch-8": {**OLD, "batch_size": 8},
    # round 2: one change to today's defaults (round 1's winner: lr 2e-3 + logit-normal timesteps)
    "default": {},
    "lr-4e-3": {"lr": 4e-3},
    "batch-32": {"batch_size": 32},
    "ema-off": {"ema": False},
    "ema-faster": {"ema_power": 2 / 3},  # EMA decay at step 800: 0.989 (default power 3/4: 0.993)
    "ema-slower": {"ema_power": 0.9},    # 0.998
    "dropout-5": {"caption_dropout": 0.05},
    "dropout-15": {"caption_dropout": 0.15},
    "unet-wider": {"unet_overrides": {"block_out_channels": [48, 96, 192]}},
    "unet-deeper": {"unet_overrides": {"layers_per_block": 2}},
    "unet-narrower": {"unet_overrides": {"block_out_channels": [24, 48, 96], "norm_num_groups": 8}},
}
ROUND1 = [n for n in VARIANTS if n.startswith("old")]
#: Fields that change what a step costs; a variant that touches none of them gets the budget's steps exactly (its
#: calibrated cost would differ from the default's by timing noise only).
COST_FIELDS = {"batch_size", "grad_accum", "unet_overrides", "unet_preset", "resolution"}
EVAL = {"guidance_scale": 4.0, "steps": 25, "scheduler": "ddim"}
#: The generation study: (guidance, sampler, steps) on the trained checkpoints of one variant.
GENERATION = [(g, "ddim", 25) for g in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)] + \
             [(4.0, "ddim", 50), (4.0, "dpm++", 15), (4.0, "dpm++", 25), (4.0, "ddim", 10)]
METRICS = ("colour", "shape", "species")


def setup():
    """The demo profile (generated data set, packaged MiniLM, demo VAE trained once), frozen models, cache, judge:
    the same artefacts (under outputs/) that ``make run`` builds and reuses."""
    import warnings

    from helpers.frozen.cache import build_cache, load_cache
    from helpers.frozen import load_frozen_models
    from helpers.demo.judge import ensure_judge
    from helpers.profiles import resolve_profile

    P = resolve_profile("demo", False, device="cpu", verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_set = P.load_train_set(verbose=False)
        frozen = load_frozen_models(P)
        cache = load_cache(build_cache(train_set, frozen, P))
        judge = ensure_judge(train_set, P.outputs_dir, progress=False)
    return P, frozen, cache, judge


def run_id(name: str, seed: int, steps: int | None) -> str:
    """A run's folder name under ``<out>/runs/``."""
    return f"{name}-s{seed}" + (f"-{steps}" if steps is not None else "")


def config_for(P, name: str, seed: int, out: Path, max_steps: int | None = None):
    from helpers.training.config import TrainConfig

    overrides = dict(VARIANTS[name])
    run = run_id(name, seed, max_steps)
    cfg = TrainConfig.for_profile(P, run_name=run, run_dir=str(out / "runs" / run), seed=seed, eval_freq=0,
                                  resume="latest", **overrides)
    if max_steps is not None:
        cfg.max_steps, cfg.save_freq = int(max_steps), int(max_steps)
        cfg.warmup_steps = min(cfg.warmup_steps, max(1, cfg.max_steps // 20))
    return cfg


def calibrate(P, cache, names: list[str], rounds: int = 3, steps: int = 3) -> dict[str, float]:
    """Seconds per optimizer step of each variant (one thread): ``rounds`` rounds over all variants (so a change of
    load hits every variant alike), ``steps`` timed steps each after a warm-up step; the median per variant."""
    import torch

    from helpers.training import build_train_parts, draw_batch, train_step

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


def costs_more(name: str) -> bool:
    """Whether the variant changes what an optimizer step costs (:data:`COST_FIELDS`)."""
    return bool(COST_FIELDS & VARIANTS[name].keys())


def budget_steps(name: str, budget: float, cost: dict[str, float]) -> int:
    """The variant's steps at the compute of ``budget`` default steps: the budget itself when its step costs what the
    default's does, else divided by its calibrated relative step cost (``cost[name]``: its s/step / the default's)."""
    return max(1, round(budget / cost[name] if costs_more(name) else budget))


def run_one(name: str, seed: int, max_steps: int, out: Path) -> dict:
    """Train one variant for ``max_steps``, generate the test prompts, judge them; returns the record."""
    import torch

    from helpers.demo.judge import judge_folder
    from helpers.submission.metrics import generate_for_scoring
    from helpers.generation import TextToImage
    from helpers.training import train

    torch.set_num_threads(1)
    P, frozen, cache, judge = setup()
    cfg = config_for(P, name, seed, out, max_steps)
    t0 = time.perf_counter()
    result = train(cfg, cache, frozen)
    seconds = time.perf_counter() - t0
    tti = TextToImage.from_checkpoint(result.checkpoint, frozen)
    folder = generate_for_scoring(tti, P.test_json, out / "gen" / run_id(name, seed, max_steps), size=P.resolution,
                                  progress=False, **EVAL)
    scores = {r.name: r.value for r in judge_folder(folder, P.test_json, P.data_dir / "test_reference", judge)}
    rec = {"variant": name, "seed": seed, "steps": max_steps, "train_s": round(seconds, 1),
           "final_loss": result.losses[-1] if result.losses else None, "overrides": VARIANTS[name], **scores}
    return rec


def generation_one(name: str, seed: int, steps: int, out: Path) -> list[dict]:
    """Every :data:`GENERATION` setting on the checkpoint of one finished run, judged like the runs; the records."""
    import torch

    from helpers.checkpoints import require_checkpoint
    from helpers.demo.judge import judge_folder
    from helpers.submission.metrics import generate_for_scoring
    from helpers.generation import TextToImage

    torch.set_num_threads(1)
    P, frozen, _, judge = setup()
    run = run_id(name, seed, steps)
    tti = TextToImage.from_checkpoint(require_checkpoint(out / "runs" / run, f"ckpt/unet_{steps}"), frozen)
    records = []
    for g, scheduler, n in GENERATION:
        t0 = time.perf_counter()
        folder = generate_for_scoring(tti, P.test_json, out / "gen-settings" / f"{run}-g{g:g}-{scheduler}-{n}",
                                      size=P.resolution, progress=False, guidance_scale=g, steps=n,
                                      scheduler=scheduler)
        seconds = time.perf_counter() - t0
        scores = {r.name: r.value for r in judge_folder(folder, P.test_json, P.data_dir / "test_reference", judge)}
        records.append({"variant": name, "seed": seed, "steps": steps, "guidance": g, "scheduler": scheduler,
                        "sampler_steps": n, "generate_s": round(seconds, 1), **scores})
    return records


def _done(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    return {(r["variant"], r["seed"], r["steps"]) for r in map(json.loads, path.read_text().splitlines())}


def run_all(todo: list[tuple[str, int, int]], out: Path, jobs: int, kind: str = "runs") -> None:
    """Run the (variant, seed, steps) jobs, ``jobs`` worker processes at a time (one thread each): training runs
    (``kind="runs"``, logged to runs.jsonl) or the generation study on finished runs (``"generation"``)."""
    log = out / f"{kind}.jsonl"
    todo = [t for t in todo if t not in _done(log)]
    running: list[tuple[subprocess.Popen, tuple]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    while todo or running:
        while todo and len(running) < jobs:
            job = todo.pop(0)
            cmd = [sys.executable, __file__, "--worker", json.dumps([kind, *job]), "--out", str(out),
                   *[f"--define={n}={json.dumps(v)}" for n, v in VARIANTS.items()]]
            running.append((subprocess.Popen(cmd, env=env), job))
            print(f"started {kind} {job}", flush=True)
        time.sleep(2)
        for proc, job in list(running):
            if proc.poll() is not None:
                running.remove((proc, job))
                print(f"finished {kind} {job} (exit {proc.returncode})", flush=True)


def summarise(records: list[dict], keys: tuple[str, ...] = ("variant", "steps")) -> list[dict]:
    """Median and range over seeds per ``keys`` (a run's variant and steps, or a generation setting)."""
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        rows.setdefault(tuple(r[k] for k in keys), []).append(r)
    table = []
    for key, recs in rows.items():
        seconds = "train_s" if "train_s" in recs[0] else "generate_s"
        row = {**dict(zip(keys, key)), "seeds": len(recs), "seconds": statistics.median(r[seconds] for r in recs)}
        for m in METRICS:
            vals = sorted(next(v for k, v in r.items() if k.startswith(f"demo-judge {m}")) for r in recs)
            row[m] = (statistics.median(vals), vals[0], vals[-1])
        fd = sorted(next(v for k, v in r.items() if "Fréchet" in k) for r in recs)
        row["fd"] = (statistics.median(fd), fd[0], fd[-1])
        table.append(row)
    return sorted(table, key=lambda r: -r["species"][0])


def markdown(table: list[dict], keys: tuple[str, ...] = ("variant", "steps"), seconds: str = "train s") -> str:
    def cell(t, pct=True):
        f = (lambda v: f"{100 * v:.0f} %") if pct else (lambda v: f"{v:.1f}")
        return f"{f(t[0])} ({f(t[1])}–{f(t[2])})"

    lines = [f"| {' | '.join(keys)} | seeds | {seconds} (median) | species | colour | shape | judge FD (lower better) |",
             "|---" * (len(keys) + 6) + "|"]
    for r in table:
        lines.append(f"| {' | '.join(str(r[k]) for k in keys)} | {r['seeds']} | {r['seconds']:.0f} | "
                     f"{cell(r['species'])} | {cell(r['colour'])} | {cell(r['shape'])} | {cell(r['fd'], pct=False)} |")
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record(args, argv, out: Path, P, cal: dict[str, float]) -> None:
    """The study's section of RESULTS.md: round 1, round 2, the longer budget, the generation study."""
    from results import machine, write_section

    runs = read_jsonl(out / "runs.jsonl")
    tier = {id(r): round(r["steps"] / budget_steps(r["variant"], args.budget_steps, cal)) for r in runs}
    blocks = [("Round 1: one change to the old demo defaults (lr 1e-3, uniform timesteps)",
               [r for r in runs if r["variant"] in ROUND1 and tier[id(r)] == 1]),
              ("Round 2: one change to today's defaults (round 1's winner, lr 2e-3 + logit-normal timesteps)",
               [r for r in runs if r["variant"] not in ROUND1 and tier[id(r)] == 1]),
              ("Longer training: 3x the budget", [r for r in runs if tier[id(r)] > 1])]
    gen = read_jsonl(out / "generation.jsonl")
    cmd = "python benchmarks/recipe_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Recipe study: demo variants at equal compute, judged on held-out prompts",
        "", f"- command (the last one; every run so far is in `{out / 'runs.jsonl'}`): `{cmd}`",
        f"- machine: {machine()}", f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        (f"- budget: {args.budget_steps} steps of the default recipe; a variant whose step costs more (batch size, UNet "
         "size) gets budget x (s/step of the default / its own s/step), both timed in the same rounds on this machine "
         "(step_costs.json); "
         "every other variant gets the budget's steps"),
        (f"- scoring: demo test.json ({len(json.loads(P.test_json.read_text()))} prompts, unseen species/action "
         "pairs), 1 image each, DDIM 25 steps, guidance 4; demo judge adherence (median over seeds, min–max)"),
        *([f"- note: {args.note}"] if args.note else [])]
    for title, recs in blocks:
        if recs:
            lines += ["", f"**{title}**", "", markdown(summarise(recs))]
    if gen:
        lines += ["", ("**Generation settings** on the checkpoints of `default` (one row per setting, median over the "
                       "training seeds; seconds = generating the 64 images on one thread)"), "",
                  markdown(summarise(gen, ("guidance", "scheduler", "sampler_steps")),
                           ("guidance", "scheduler", "sampler_steps"), "generate s")]
    write_section("recipe_study", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes at a time (one thread each)")
    ap.add_argument("--budget-steps", type=int, default=800, help="steps of the default recipe = the budget")
    ap.add_argument("--budget-x", type=float, default=1.0, help="multiply the budget (e.g. 3)")
    ap.add_argument("--generation", action="store_true",
                    help="instead of training: the GENERATION settings on the finished runs of --variants")
    ap.add_argument("--out", default=str(REPO / "outputs" / "recipe_study"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--define", action="append", default=[], metavar="NAME=JSON",
                    help="another variant, e.g. mine='{\"lr\": 3e-3}' (also passed to the workers)")
    ap.add_argument("--note", default="")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.define:
        name, _, spec = item.partition("=")
        VARIANTS[name] = json.loads(spec)
    if args.worker:
        kind, name, seed, steps = json.loads(args.worker)
        recs = [run_one(name, seed, steps, out)] if kind == "runs" else generation_one(name, seed, steps, out)
        with open(out / f"{kind}.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in recs)
        return 0
    names = args.variants.split(",")
    import torch

    torch.set_num_threads(1)
    P, _, cache, _ = setup()
    cal_path = out / "step_costs.json"  # variant -> its s/step / the default's, both timed in the same rounds
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    missing = [n for n in dict.fromkeys(names) if n not in cal and costs_more(n)]
    if missing:
        print("calibrating (seconds per step, one thread, beside the default):")
        seconds = calibrate(P, cache, ["default", *missing])
        cal.update({n: seconds[n] / seconds["default"] for n in missing})
        cal_path.write_text(json.dumps(cal, indent=1))
    budget = args.budget_steps * args.budget_x
    todo = [(n, s, budget_steps(n, budget, cal)) for n in names for s in args.seeds]
    run_all(todo, out, args.jobs, "generation" if args.generation else "runs")
    print(markdown(summarise(read_jsonl(out / "runs.jsonl"))))
    if not args.no_record:
        record(args, argv, out, P, cal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
