"""Images per second: batched classifier-free guidance vs the course sample code's one-image loop.

- batched: ``helpers.sampling.sample_latents`` - a batch of prompts, the conditional and unconditional halves in ONE
  UNet call per step (``torch.cat([uncond, cond])``, batch ``2 x batch_size``);
- one at a time: what the course's sample code does - one prompt after the other, TWO UNet calls per step
  (unconditional, then conditional), batch 1.

Same UNet (a freshly initialised preset of ``helpers.unet``: throughput does not depend on the weights), same
DDIM scheduler and steps, random text embeddings (the text encoder runs once per prompt in both and is left out).
On CUDA both run under bf16 autocast. One timed run each, after a short warm-up. Prints the numbers and appends
them, with the command and the machine, to ``benchmarks/RESULTS.md``.

    python benchmarks/generate_throughput.py                        # 64 prompts, 50 steps, preset by device
    python benchmarks/generate_throughput.py --preset demo --prompts 8 --steps 5 --no-record   # a quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.sampling import _autocast, initial_noise, sample_latents  # noqa: E402
from helpers.schedule import default_scheduler_config, sampling_scheduler  # noqa: E402
from helpers.unet import build_unet  # noqa: E402

# preset -> (cross_attention_dim, latent side): the course (CLIP 512, 256 px / 8) and the demo (MiniLM 384, 64 px / 4)
PRESET_SHAPES = {"reference": (512, 32), "demo": (384, 16), "tiny": (384, 16)}


@torch.inference_mode()
def one_at_a_time(unet, scheduler, cond, uncond, seeds, *, guidance_scale, steps, latent_shape):
    """The course sample code's loop: per image, per step, an unconditional and a conditional UNet call."""
    device = next(unet.parameters()).device
    out = []
    for i, seed in enumerate(seeds):
        noise, _ = initial_noise([seed], latent_shape)
        scheduler.set_timesteps(steps, device=device)
        latents = noise.to(device) * scheduler.init_noise_sigma
        c, u = cond[i:i + 1].to(device), uncond[:1].to(device)
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(latents, t)
            with _autocast(device):
                e_u = unet(x, t, encoder_hidden_states=u, return_dict=False)[0].float()
                e_c = unet(x, t, encoder_hidden_states=c, return_dict=False)[0].float()
            latents = scheduler.step(e_u + guidance_scale * (e_c - e_u), t, latents, return_dict=False)[0]
        out.append(latents)
    return torch.cat(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESET_SHAPES), default=None,
                    help="UNet preset (default: reference on CUDA, demo on CPU)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16, help="images per batched UNet call (x2 with guidance)")
    ap.add_argument("--guidance-scale", type=float, default=7.5)
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("reference" if device.type == "cuda" else "demo")
    cross, side = PRESET_SHAPES[preset]
    unet = build_unet(preset, cross_attention_dim=cross, sample_size=side, seed=0).to(device).eval()
    latent_shape = (unet.config.in_channels, side, side)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(args.prompts, 77, cross, generator=g)
    uncond = torch.randn(1, 77, cross, generator=g)
    seeds = list(range(args.prompts))
    config = default_scheduler_config()
    kw = dict(guidance_scale=args.guidance_scale)

    # warm-up (kernels, allocator), not timed
    sample_latents(unet, sampling_scheduler("ddim", config), cond[:2], uncond, seeds[:2], steps=2, progress=False,
                   batch_size=min(2, args.batch_size), **kw)
    one_at_a_time(unet, sampling_scheduler("ddim", config), cond[:1], uncond, seeds[:1], steps=2,
                  latent_shape=latent_shape, **kw)

    _sync(device)
    start = time.perf_counter()
    batched = sample_latents(unet, sampling_scheduler("ddim", config), cond, uncond, seeds, steps=args.steps,
                             batch_size=args.batch_size, progress=False, **kw)
    _sync(device)
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    single = one_at_a_time(unet, sampling_scheduler("ddim", config), cond, uncond, seeds, steps=args.steps,
                           latent_shape=latent_shape, **kw)
    _sync(device)
    t_single = time.perf_counter() - start

    agree = (batched.float() - single.float()).abs().max().item()
    ips_b, ips_s = args.prompts / t_batched, args.prompts / t_single
    n_params = sum(p.numel() for p in unet.parameters()) / 1e6
    command = " ".join(["python benchmarks/generate_throughput.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"### generate_throughput - {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- command: `{command}`",
        f"- machine: {machine()}, device {device}{' (bf16 autocast)' if device.type == 'cuda' else ' (fp32)'}",
        f"- UNet preset `{preset}` ({n_params:.1f} M params, latents {tuple(latent_shape)}, cross-attention {cross}), "
        f"DDIM {args.steps} steps, guidance {args.guidance_scale}, {args.prompts} prompts",
        f"- batched CFG (one UNet call of 2x{args.batch_size} per step): {t_batched:.1f} s, **{ips_b:.3f} images/s**",
        f"- one image at a time, two UNet calls per step (course sample code): {t_single:.1f} s, "
        f"**{ips_s:.3f} images/s**",
        f"- speed-up: **{ips_b / ips_s:.2f}x** (max |latent difference| between the two: {agree:.2e})",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        if not args.results.exists():
            args.results.write_text("# Benchmark results\n\nAppended by the scripts in benchmarks/ (one run each).\n\n")
        with args.results.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
