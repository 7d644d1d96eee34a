"""Images per second: batched classifier-free guidance vs the course sample code's one-image loop.

- batched: ``helpers.generation.sample_latents`` - a batch of prompts, the conditional and unconditional halves in ONE
  UNet call per step (``torch.cat([uncond, cond])``, batch ``2 x batch_size``);
- one at a time: what the course's sample code does - one prompt after the other, TWO UNet calls per step
  (unconditional, then conditional), batch 1.

Same UNet (a freshly initialised preset of ``helpers.unet``: throughput does not depend on the weights), same
DDIM scheduler and steps, random text embeddings (the text encoder runs once per prompt in both and is left out).
On CUDA both run under bf16 autocast. After a short warm-up the two sides alternate ``--rounds`` times (each
round generates all the prompts); the median images/s of each side, its spread and the ratio of the medians go,
with the command and the machine, into this script's section of ``benchmarks/RESULTS.md``.

    python benchmarks/generate_throughput.py                        # 64 prompts, 50 steps, preset by device
    python benchmarks/generate_throughput.py --preset demo --prompts 8 --steps 5 --rounds 1 --no-record  # quick check
    python benchmarks/generate_throughput.py --prompts 1063 --single-prompts 16 --rounds 1   # the course's test set
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.generation.sampling import _autocast, default_batch_size, initial_noise, sample_latents  # noqa: E402
from helpers.schedule import default_scheduler_config, sampling_scheduler  # noqa: E402
from helpers.unet import build_unet  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from results import RESULTS, machine, spread, write_section  # noqa: E402

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


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESET_SHAPES), default=None,
                    help="UNet preset (default: reference on CUDA, demo on CPU)")
    ap.add_argument("--prompts", type=int, default=64, help="prompts per round (the course's test.json: 1063)")
    ap.add_argument("--single-prompts", type=int, default=None,
                    help="prompts of the one-at-a-time side per round (default: all; images/s is a rate, so a "
                         "subset measures it in a fraction of the time)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per batched UNet call, x2 with guidance (default: helpers.generation."
                         "default_batch_size of the device, 128 on a GPU)")
    ap.add_argument("--guidance-scale", type=float, default=7.5)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides (each all the prompts)")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    ap.add_argument("--note", default=None, help="a line of context for RESULTS.md (e.g. machine load)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    ap.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("reference" if device.type == "cuda" else "demo")
    batch_size = args.batch_size or default_batch_size(device)
    n_single = min(args.single_prompts or args.prompts, args.prompts)
    cross, side = PRESET_SHAPES[preset]
    unet = build_unet(preset, cross_attention_dim=cross, sample_size=side, seed=0).eval()
    # as helpers.generation.TextToImage: channels_last on a GPU
    unet.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    latent_shape = (unet.config.in_channels, side, side)
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(args.prompts, 77, cross, generator=g)
    uncond = torch.randn(1, 77, cross, generator=g)
    seeds = list(range(args.prompts))
    config = default_scheduler_config()
    kw = dict(guidance_scale=args.guidance_scale, steps=args.steps)

    def batched() -> torch.Tensor:
        return sample_latents(unet, sampling_scheduler("ddim", config), cond, uncond, seeds,
                              batch_size=batch_size, progress=False, **kw)

    def single() -> torch.Tensor:
        return one_at_a_time(unet, sampling_scheduler("ddim", config), cond[:n_single], uncond, seeds[:n_single],
                             latent_shape=latent_shape, **kw)

    # warm-up (kernels, allocator, cuDNN autotuning of both batch shapes), not timed
    last = args.prompts % batch_size or batch_size
    for n in sorted({min(batch_size, args.prompts), last}):
        sample_latents(unet, sampling_scheduler("ddim", config), cond[:n], uncond, seeds[:n], steps=2,
                       progress=False, batch_size=n, guidance_scale=args.guidance_scale)
    one_at_a_time(unet, sampling_scheduler("ddim", config), cond[:1], uncond, seeds[:1], steps=2,
                  latent_shape=latent_shape, guidance_scale=args.guidance_scale)

    rates: dict[str, list[float]] = {"batched": [], "single": []}
    seconds: dict[str, list[float]] = {"batched": [], "single": []}
    outputs: dict[str, torch.Tensor] = {}
    for r in range(args.rounds):  # alternate the sides, so a change of machine load hits both
        for name, fn in (("batched", batched), ("single", single)) if r % 2 == 0 else (("single", single),
                                                                                        ("batched", batched)):
            _sync(device)
            start = time.perf_counter()
            outputs[name] = fn()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
            rates[name].append((args.prompts if name == "batched" else n_single) / seconds[name][-1])
            print(f"round {r + 1}/{args.rounds} {name}: {rates[name][-1]:.3f} images/s", flush=True)

    agree = (outputs["batched"][:n_single].float() - outputs["single"].float()).abs().max().item()
    b, s1 = spread(rates["batched"]), spread(rates["single"])
    n_params = sum(p.numel() for p in unet.parameters()) / 1e6
    command = shlex.join(["python", "benchmarks/generate_throughput.py", *(argv if argv is not None else sys.argv[1:])])
    row = "| {} | {:.3f} | {:.3f}-{:.3f} | {:.3f}-{:.3f} | {} |"
    all_batched = args.prompts / b["median"]
    precision = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
    lines = [
        f"## Generation throughput: batched CFG vs one image at a time ({device.type})",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}, device {device} ({precision})",
        f"- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- UNet preset `{preset}` ({n_params:.1f} M params, latents {tuple(latent_shape)}, cross-attention {cross}), "
        f"DDIM {args.steps} steps, guidance {args.guidance_scale}; per round: {args.prompts} prompts batched, "
        f"{n_single} one at a time",
        f"- batched: `helpers.generation.sample_latents`, one UNet call of 2x{batch_size} per step; one at a time: "
        "the course sample code's loop, two UNet calls of batch 1 per step",
        f"- {args.rounds} alternating rounds; max |latent difference| between the two sides: {agree:.2e}",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        "| side | images/s (median) | 25-75 % | min-max | rounds |",
        "|---|---|---|---|---|",
        row.format("batched", b["median"], b["q1"], b["q3"], b["min"], b["max"], b["n"]),
        row.format("one at a time", s1["median"], s1["q1"], s1["q3"], s1["min"], s1["max"], s1["n"]),
        "",
        f"**batched / one at a time = {b['median'] / s1['median']:.2f}x** (ratio of the median images/s); "
        f"{args.prompts} prompts batched: {all_batched:.1f} s",
    ]
    text = "\n".join(lines)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": str(device), "machine": machine(), "preset": preset, "prompts": args.prompts,
            "single_prompts": n_single, "steps": args.steps, "batch_size": batch_size, "batched": b, "single": s1,
            "ratio": b["median"] / s1["median"], "seconds_all_prompts_batched": all_batched,
            "max_latent_difference": agree}, indent=1) + "\n")
    if not args.no_record:
        write_section(f"generate_throughput:{device.type}", text, args.results)
        print(f"written to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
