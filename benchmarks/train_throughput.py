"""Training throughput: the workbook's loop on cached latents vs. encoding with the VAE + text encoder every step.

Both sides run the SAME loop (``helpers.training.train``: same UNet preset, batch, optimizer, EMA, device and
precision); only the data source differs:

- ``cached``: ``LatentCache.batch`` - a latent sampled from the cached mean/std (and flipped view) plus the cached
  text embedding, as the workbook trains;
- ``encode``: what the course's sample code does every step - flip the images, run the VAE encoder and sample its
  latent distribution, tokenize the captions (caption dropout -> "") and run the text encoder. The images are
  already decoded tensors in memory (a DataLoader that decodes PNGs would make this side slower still).

The sides alternate (``--rounds`` times each, each round a fresh ``train`` call of ``--steps`` optimizer steps
whose first ``--warmup`` steps are not timed), and every timed step counts: the report gives the median samples/s
of each side with the spread (25th-75th percentiles, min-max) and the ratio of the medians. Checkpoint writing
and sampling are switched off (they are the same on both sides and would dominate short runs).

Encoders (``--encoders``):
- ``sd-random`` (default): the course's architectures, randomly initialised - Stable Diffusion v1's AutoencoderKL
  (128-256-512-512, 8x downsampling) and CLIP ViT-B/32's text transformer (12 layers, width 512, 77 tokens). The
  course weights cannot be downloaded offline, and the time of a forward pass does not depend on the weight
  values. Captions are tokenized by hashing words to ids (tokenizing is microseconds either way).
- ``demo``: the demo profile's encoders (all-MiniLM-L6-v2 with its weights and the demo VAE of ``--data-dir``).

``--precision`` compares the loop with fp32 and bf16 autocast instead (cached data only; on the demo preset by
default): this is how ``CPU_AUTO_MIXED_PRECISION`` ("auto" on CPU) was chosen.

Examples::

    .venv/bin/python benchmarks/train_throughput.py                        # reference UNet, 64 px, CPU
    .venv/bin/python benchmarks/train_throughput.py --steps 3 --rounds 1   # a quick try
    .venv/bin/python benchmarks/train_throughput.py --precision --preset demo
    .venv/bin/python benchmarks/train_throughput.py --device cuda --resolution 256 --batch-size 32

Results go to ``benchmarks/RESULTS.md`` (this script's section for the mode is replaced; the rest is kept). On a GPU,
``benchmarks/train_levers.py`` measures the speed levers, the MFU and this comparison at the course's scale
(``benchmarks/gpu_check.sh`` runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers import checkpoints  # noqa: E402
from helpers.frozen.cache import LatentCache  # noqa: E402
from helpers.training import TrainConfig, TrainEvent, train  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from results import RESULTS, machine, spread, write_section  # noqa: E402

CAPTION_WORDS = ("red blue green yellow purple orange slime golem ghost bird spider mushroom dragon bat with horns "
                 "wings crown sword shield spots the monster is standing still walking attacking jumping hurt").split()


# --------------------------------------------------------------------------------------------------- encoders
class HashTokenizerCLIP:
    """CLIP ViT-B/32's text transformer (random weights) behind a word-hash tokenizer: the course's cost."""

    def __init__(self, device):
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(0)
        self.model = CLIPTextModel(CLIPTextConfig()).to(device).eval().requires_grad_(False)
        self.hidden_size = self.model.config.hidden_size
        self.device = device

    def encode(self, prompts):
        ids = torch.full((len(prompts), 77), 49407, dtype=torch.long)  # <|endoftext|> padding, as CLIP
        for i, p in enumerate(prompts):
            toks = [49406] + [int(hashlib.md5(w.encode()).hexdigest(), 16) % 49000 + 256 for w in p.split()][:75]
            toks.append(49407)
            ids[i, :len(toks)] = torch.tensor(toks)
        with torch.no_grad():
            return self.model(input_ids=ids.to(self.device)).last_hidden_state.float()


def sd_vae(device):
    """Stable Diffusion v1's AutoencoderKL architecture (random weights)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512,
                        scaling_factor=0.18215)
    return vae.to(device).eval().requires_grad_(False)


class EncodeEveryStep:
    """A stand-in for LatentCache whose ``batch`` runs the VAE encoder and the text encoder (the course's way)."""

    def __init__(self, images: torch.Tensor, captions: list[list[str]], vae, text_encoder, latent_shape):
        self.images, self.captions, self.vae, self.text_encoder = images, captions, vae, text_encoder
        self.n_images = images.shape[0]
        self.latent_shape = tuple(latent_shape)
        self.text_emb = torch.zeros(1, 77, text_encoder.hidden_size)  # only its width is read
        self.scaling = float(vae.config.scaling_factor)
        p = next(vae.parameters())
        self.device, self.dtype = p.device, p.dtype

    def batch(self, indices, generator, *, flip_p=0.5, caption_dropout=0.1):
        indices = torch.as_tensor(indices, dtype=torch.long)
        b = len(indices)
        flip = torch.rand(b, generator=generator) < flip_p
        images = self.images[indices]
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        with torch.no_grad():  # (not inference_mode: its tensors could not enter the autograd graph of the UNet)
            dist = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator).to(self.device)
            latents = ((dist.mean + dist.std * noise) * self.scaling).float().cpu()
        pick = torch.rand(b, generator=generator)
        drop = torch.rand(b, generator=generator) < caption_dropout
        prompts = []
        for j, i in enumerate(indices.tolist()):
            caps = self.captions[i]
            prompts.append("" if drop[j] else caps[min(int(pick[j] * len(caps)), len(caps) - 1)])
        text = self.text_encoder.encode(prompts).float().cpu().clone()  # helpers' encoder: an inference-mode
        return latents, text                                             # tensor, cloned into a normal one


def random_cache(n: int, latent_shape, hidden: int, n_captions: int = 64) -> LatentCache:
    """A LatentCache of the right shapes (values do not change the time of a step)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, *latent_shape, generator=g).half()
    std = (torch.rand(n, *latent_shape, generator=g) * 0.1).half()
    ids = torch.randint(1, n_captions, (n, 2), generator=g)
    return LatentCache(path=Path("in-memory"), keys=[str(i) for i in range(n)], image_names=[f"{i}.png" for i in range(n)],
                       captions=[""] + [f"c{i}" for i in range(1, n_captions)], empty_index=0, caption_ids=ids,
                       caption_counts=torch.full((n,), 2), mean=mean, std=std, mean_flip=mean.flip(-1),
                       std_flip=std.flip(-1), text_emb=torch.randn(n_captions, 77, hidden, generator=g).half(),
                       scaling_factor=1.0, meta={})


def random_captions(n: int, seed: int = 0) -> list[list[str]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        caps = []
        for _ in range(2):
            k = int(torch.randint(8, 20, (1,), generator=g))
            caps.append(" ".join(CAPTION_WORDS[int(i)] for i in torch.randint(len(CAPTION_WORDS), (k,), generator=g)))
        out.append(caps)
    return out


# --------------------------------------------------------------------------------------------------- timing
def timed_run(config: TrainConfig, source, warmup: int) -> list[float]:
    """Seconds per optimizer step of one ``train`` call (after ``warmup`` steps)."""
    stamps: list[float] = []

    def clock(event: TrainEvent):
        if event.kind in ("start", "log"):
            stamps.append(time.perf_counter())

    train(config, cache=source, callback=clock)
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return durations[warmup:]


def summarize(per_step: list[float], global_batch: int) -> dict:
    return {**spread([global_batch / s for s in per_step]), "s_per_step": statistics.median(per_step)}


def write_results(section: str, key: str) -> None:
    """Replace this script's ``key`` section of RESULTS.md; keep everything else."""
    write_section(f"train_throughput:{key}", section, RESULTS)


def fmt(s: dict) -> str:
    return (f"{s['median']:.1f} | {s['q1']:.1f}-{s['q3']:.1f} | {s['min']:.1f}-{s['max']:.1f} | "
            f"{s['s_per_step']:.3f} | {s['n']}")


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None, help="UNet preset (default: reference; demo with --precision)")
    ap.add_argument("--resolution", type=int, default=64, help="image side in px (default 64)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per round and side (incl. warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each round")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides")
    ap.add_argument("--encoders", choices=("sd-random", "demo"), default="sd-random")
    ap.add_argument("--data-dir", default=None, help="demo data folder with vae/ (for --encoders demo)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16"))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--precision", action="store_true", help="compare fp32 vs bf16 autocast (cached data)")
    ap.add_argument("--note", default=None, help="a line of context for RESULTS.md (e.g. machine load)")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps <= args.warmup:
        ap.error("--steps must be larger than --warmup")
    preset = args.preset or ("demo" if args.precision else "reference")
    device = torch.device(args.device)
    n_images = max(64, args.batch_size * 4)

    # no checkpoints, no sampling: identical on both sides, and seconds of disk writes for the reference UNet
    checkpoints.save_unet = lambda *a, **k: None
    checkpoints.save_state = lambda *a, **k: None
    checkpoints.prune = lambda *a, **k: []

    if args.precision:  # cached data only: no encoders; the demo geometry (VAE factor 4) unless reference
        vae = text_encoder = None
        factor = 8 if preset == "reference" else 4
        latent_shape, hidden = (4, args.resolution // factor, args.resolution // factor), 384 if preset != "reference" else 512
        encoders = ""
    elif args.encoders == "demo":
        from helpers.frozen import load_text_encoder, load_vae
        from helpers.profiles import demo_text_encoder_path

        if not args.data_dir:
            ap.error("--encoders demo needs --data-dir (a demo data folder whose vae/ is trained)")
        vae = load_vae(str(Path(args.data_dir) / "vae"), device=device)
        text_encoder = load_text_encoder(demo_text_encoder_path(), device=device)
        encoders = "demo: all-MiniLM-L6-v2 (pretrained) + the demo VAE"
    else:
        vae, text_encoder = sd_vae(device), HashTokenizerCLIP(device)
        encoders = ("course architectures, random weights: SD v1 AutoencoderKL + CLIP ViT-B/32 text transformer "
                    "(timing does not depend on weight values)")
    if vae is not None:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        latent_shape = (int(vae.config.latent_channels), args.resolution // factor, args.resolution // factor)
        hidden = text_encoder.hidden_size

    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 3, args.resolution, args.resolution, generator=g) * 2 - 1
    sources = {"cached": random_cache(n_images, latent_shape, hidden)}
    if not args.precision:
        sources["encode"] = EncodeEveryStep(images, random_captions(n_images), vae, text_encoder, latent_shape)

    tmp = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    base = dict(unet_preset=preset, resolution=args.resolution, batch_size=args.batch_size, grad_accum=1,
                max_steps=args.steps, warmup_steps=1, eval_freq=0, save_freq=0, log_every=1, device=str(device),
                mixed_precision=args.mixed_precision, sample_prompts=[])
    sides = ([("fp32", "cached", "no"), ("bf16", "cached", "bf16")] if args.precision
             else [("cached", "cached", args.mixed_precision), ("encode", "encode", args.mixed_precision)])
    times: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    print(f"{preset} UNet, {args.resolution} px -> latents {latent_shape}, batch {args.batch_size}, {device}; "
          f"{args.rounds} rounds x {args.steps} steps ({args.warmup} untimed) per side")
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]  # alternate which side goes first
        for name, source, precision in order:
            cfg = TrainConfig(run_name=f"{name}-{r}", run_dir=str(tmp / f"{name}-{r}"),
                              **{**base, "mixed_precision": precision})
            per_step = timed_run(cfg, sources[source], args.warmup)
            times[name] += per_step
            print(f"round {r + 1}/{args.rounds} {name:>6}: {statistics.median(per_step):.3f} s/step")

    stats = {name: summarize(v, args.batch_size) for name, v in times.items()}
    a, b = (sides[0][0], sides[1][0])
    ratio = stats[a]["median"] / stats[b]["median"]
    command = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/train_throughput.py", *(argv or sys.argv[1:])])
    what = "fp32 vs bf16 autocast" if args.precision else "cached latents vs encoding every step"
    lines = [
        f"## Training throughput: {what}",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- loop: helpers.training.train, UNet preset `{preset}`, {args.resolution} px (latents "
        f"{'x'.join(map(str, latent_shape))}), batch {args.batch_size}, device {device}, AdamW + EMA + grad clipping; "
        f"checkpoints and sampling off",
        f"- encoders: {encoders}" if not args.precision else "- data: cached latents",
        f"- {args.rounds} alternating rounds x {args.steps - args.warmup} timed steps per side",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        "| side | samples/s (median) | 25-75 % | min-max | s/step (median) | steps |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {fmt(s)} |" for name, s in stats.items()],
        "",
        f"**{a} / {b} = {ratio:.2f}x** (ratio of the median samples/s)",
    ]
    section = "\n".join(lines)
    print("\n" + section)
    if not args.no_write:
        write_results(section, "precision" if args.precision else "cache")
        print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
