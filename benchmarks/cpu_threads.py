"""What a small CPU gains from a second thread, and from larger generation batches: the demo's three workloads.

- the demo UNet's training step (batch 16, ``helpers.training.train_step``) and the demo VAE's (12 crops of 24 px, the
  recipe of ``helpers.demo.vae``), on 1 and on 2 threads;
- guided generation of 32 images with the demo UNet (one denoising step: 2 x 32 latents) in one call of 32 or in four
  calls of 8 (``helpers.generation.DEFAULT_BATCH_SIZE``), on 1 and on 2 threads.

Rounds alternate the sides (threads, batch sizes), so a change of load hits all of them alike; the table gives
the median and the range. Results go to this script's section of ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/cpu_threads.py            # ~1 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from results import machine, write_section


def workloads() -> dict:
    """name -> (function doing one unit of work, repeats per round)."""
    from diffusers import AutoencoderKL

    from helpers.demo.vae import DEFAULT_BATCH_SIZE, DEFAULT_CROP, DEMO_VAE_CONFIG
    from helpers.profiles import resolve_profile
    from helpers.training import Batch, TrainConfig, build_train_parts, train_step

    P = resolve_profile("demo", False, device="cpu", verbose=False)
    cfg = TrainConfig.for_profile(P, run_name="bench")
    parts = build_train_parts(cfg, (4, 16, 16), 384, "cpu")
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(16, 4, 16, 16, generator=g), torch.randn(16, 77, 384, generator=g),
                  torch.randn(16, 4, 16, 16, generator=g), torch.randint(0, 1000, (16,), generator=g))
    vae = AutoencoderKL(**DEMO_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), 1e-3)
    crops = torch.rand(DEFAULT_BATCH_SIZE, 3, DEFAULT_CROP, DEFAULT_CROP, generator=g)

    def vae_step():
        post = vae.encode(crops).latent_dist
        loss = F.mse_loss(vae.decode(post.sample(generator=g)).sample, crops) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    unet = copy.deepcopy(parts.unet).eval()  # generation's own copy: train_step keeps changing parts.unet

    @torch.no_grad()
    def generate(per_call: int):
        for _ in range(32 // per_call):
            unet(torch.randn(2 * per_call, 4, 16, 16), torch.full((2 * per_call,), 500),
                 encoder_hidden_states=torch.randn(2 * per_call, 77, 384))

    return {"UNet training step (batch 16)": (lambda: train_step(parts, batch, cfg), 4),
            f"VAE training step ({DEFAULT_BATCH_SIZE} crops of {DEFAULT_CROP} px)": (vae_step, 10),
            "32 guided images, 4 calls of 8 (one denoising step)": (lambda: generate(8), 2),
            "32 guided images, 1 call of 32 (one denoising step)": (lambda: generate(32), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--note", default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    work = workloads()
    times: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            torch.set_num_threads(threads)
            for name, (fn, repeats) in work.items():
                fn()  # warm-up
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                times.setdefault((name, threads), []).append((time.perf_counter() - t0) / repeats * 1000)
    torch.set_num_threads(2)
    rows = ["| workload | 1 thread (ms, median, min-max) | 2 threads (ms, median, min-max) | 2 threads vs 1 |",
            "|---|---|---|---|"]
    for name in work:
        one, two = (sorted(times[(name, t)]) for t in (1, 2))
        m1, m2 = statistics.median(one), statistics.median(two)
        rows.append(f"| {name} | {m1:.0f} ({one[0]:.0f}-{one[-1]:.0f}) | {m2:.0f} ({two[0]:.0f}-{two[-1]:.0f}) | "
                    f"{m1 / m2:.2f}x |")
    print("\n".join(rows))
    if not args.no_record:
        command = shlex.join(["python", "benchmarks/cpu_threads.py", *(argv if argv is not None else sys.argv[1:])])
        write_section("cpu_threads", "\n".join([
            "## A second thread and larger generation batches on a small CPU (demo workloads)", "",
            f"- command: `{command}`", f"- machine: {machine()}", f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}",
            f"- {args.rounds} rounds, the thread counts alternating; milliseconds per unit of work",
            *([f"- note: {args.note}"] if args.note else []), "", *rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
