"""Training samples/s of the reference UNet with each speed lever on and off, the MFU, and the course loop's rate.

One run, side by side (every row a fresh ``helpers.training.train`` call on the same device, UNet, global batch and
precision; checkpoints and sample grids off):

- ``all levers``: the latent cache in GPU memory, no host synchronisation per step (``check_every_step=False``),
  channels_last, fused AdamW, SDPA flash attention (what ``TrainConfig``'s "auto" gives on CUDA); measured first
  and again last (the two give the spread of the machine);
- one row per lever turned off: ``cache_on_device=False``, ``check_every_step=True``, ``channels_last=False``,
  attention on SDPA's math backend (``torch.nn.attention.sdpa_kernel``), AdamW ``foreach`` instead of fused;
- ``+ compile``: all levers and ``compile=True`` (its compile time is reported apart, never in samples/s);
- ``course default (32 x 2 accumulation)``: all levers at the course profile's micro-batch;
- ``encode every step``: the course sample code's loop - every batch encoded by the VAE and the CLIP text
  transformer (the course architectures, random weights, float32 as the sample code) - with the UNet step of
  ``all levers``.

MFU = training FLOPs per sample x samples/s / the GPU's dense bf16 peak. The FLOPs are ``helpers.unet.costs.summary``
's count of one forward pass at batch 1 (matrix products, convolutions and attention as 2 x multiply-adds;
normalisations and element-wise work not counted) x 3 (the backward pass costs about twice the forward). The peak is
the datasheet's (:data:`PEAK_BF16_TFLOPS`, by ``torch.cuda.get_device_name``; ``--peak-tflops`` overrides); an
8192^3 bf16 matrix product is timed too, and the MFU against that measured ceiling is given beside it. The run
also times one checkpoint (UNet + full state) and one sample grid, and estimates the course run (20k steps of 64)
from them. Results: ``--json`` and a section of ``--results`` (benchmarks/RESULTS.md by default).

    python benchmarks/train_levers.py --device cuda                      # ~3 min on an H100/H200
    python benchmarks/train_levers.py --device cpu --quick --no-write     # the plumbing, in a minute on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from helpers import checkpoints  # noqa: E402
from helpers.training import step as train_parts  # noqa: E402
from helpers.training import TrainConfig, TrainEvent, build_train_parts, train  # noqa: E402
from helpers.training.step import synchronize  # noqa: E402
from helpers.unet.costs import summary  # noqa: E402
from results import RESULTS, machine, spread, write_section  # noqa: E402
from train_throughput import EncodeEveryStep, HashTokenizerCLIP, random_cache, random_captions, sd_vae  # noqa: E402

#: Dense (no sparsity) bf16 tensor-core peaks from the vendor's datasheets, TFLOP/s, by a part of the device name
#: (first match wins). The H200 is the H100's chip with more memory: the same arithmetic peak.
PEAK_BF16_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
                    ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0))

COURSE_STEPS, COURSE_BATCH, COURSE_EVERY = 20_000, 64, 500  # the course run: steps, global batch, eval/save freq

ALL_ON = dict(cache_on_device=True, check_every_step=False, channels_last=True, compile=False)


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The datasheet's dense bf16 peak of this GPU and its name (None on a CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None), name


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float | None:
    """bf16 n^3 matrix products on random data: the median TFLOP/s over ``reps`` (after 3 warm-ups), CUDA events."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / statistics.median(times) / 1e12


# --------------------------------------------------------------------------------------------------- the rows
def _foreach_adamw(params, config, device):
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                  weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def rows(quick: bool, device: torch.device, batch: int) -> list[dict]:
    """The configurations of one run: name, TrainConfig overrides, a context, patches, the data source."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = [
        dict(name="all levers", config=ALL_ON),
        dict(name="- cache on device", config={**ALL_ON, "cache_on_device": False}),
        dict(name="- no host sync per step", config={**ALL_ON, "check_every_step": True}),
        dict(name="- channels_last", config={**ALL_ON, "channels_last": False}),
        dict(name="- flash attention (SDPA math)", config=ALL_ON, context=lambda: sdpa_kernel([SDPBackend.MATH])),
        dict(name="- fused AdamW (foreach)", config=ALL_ON, patch=(train_parts, "_make_optimizer", _foreach_adamw)),
        dict(name="+ compile", config={**ALL_ON, "compile": True}),
    ]
    if batch % 2 == 0:
        out.append(dict(name=f"course default ({batch // 2} x 2 accumulation)", config=ALL_ON, grad_accum=2))
    out.append(dict(name="encode every step (course loop)", config={**ALL_ON, "cache_on_device": False},
                    source="encode"))
    out.append(dict(name="all levers (again)", config=ALL_ON))
    if quick and device.type == "cpu":  # torch.compile on a 2-core CPU takes minutes: not part of the quick run
        out = [r for r in out if not r["config"].get("compile")]
    return out


class _Clock:
    """Callback: host time at "start" and at every "log" (the loop syncs there), the compile time, peak memory."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.compile_s = None

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "start":
            self.compile_s = event.metrics.get("compile_s")
        if event.kind in ("start", "log"):
            self.stamps.append(time.perf_counter())


def run_row(row: dict, base: dict, sources: dict, run_dir: Path, warmup_windows: int, log_every: int,
            device: torch.device) -> dict:
    """One row: a ``train`` call of ``base`` + the row's settings; samples/s over the timed windows."""
    accum = row.get("grad_accum", 1)
    cfg = TrainConfig(**{**base, **row["config"], "grad_accum": accum, "batch_size": base["batch_size"] // accum,
                         "run_name": run_dir.name, "run_dir": str(run_dir)})
    clock = _Clock()
    patch = row.get("patch")
    saved = getattr(patch[0], patch[1]) if patch else None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        if patch:
            setattr(patch[0], patch[1], patch[2])
        with row.get("context", contextlib.nullcontext)():
            result = train(cfg, sources[row.get("source", "cached")], callback=clock)
    except Exception as err:  # a lever that fails on this machine is reported, the others still run
        return {"name": row["name"], "error": f"{type(err).__name__}: {str(err)[:300]}"}
    finally:
        if patch:
            setattr(patch[0], patch[1], saved)
    windows = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])][warmup_windows:]
    per_step = [w / log_every for w in windows]
    global_batch = cfg.global_batch()
    return {"name": row["name"], "levers": {**row["config"], "grad_accum": cfg.grad_accum},
            "samples_per_s": spread([global_batch / s for s in per_step]), "s_per_step": statistics.median(per_step),
            "compile_s": clock.compile_s, "steps_timed": len(per_step) * log_every,
            "finite": all(math.isfinite(x) for x in result.losses),
            "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None)}


# --------------------------------------------------------------------------------------------------- side costs
def checkpoint_seconds(base: dict, latent_shape, hidden: int, device: torch.device, tmp: Path) -> float:
    """Seconds to write one UNet checkpoint (EMA weights) and one full training state of this UNet."""
    parts = build_train_parts(TrainConfig(**base), latent_shape, hidden, device)
    start = time.perf_counter()
    checkpoints.save_unet(tmp / "ckpt-run", 1, parts.unet, ema=parts.ema)
    checkpoints.save_state(tmp / "ckpt-run", 1, model=parts.unet, optimizer=parts.optimizer,
                           lr_scheduler=parts.lr_scheduler, ema=parts.ema, rng=True, extra={"step": 1})
    return time.perf_counter() - start


def grid_seconds(unet, vae, text_encoder, latent_shape, n_prompts: int, steps: int, device: torch.device) -> float:
    """Seconds for one sample grid: ``n_prompts`` prompts, guided DDIM ``steps`` steps, VAE decode."""
    from helpers.frozen import decode_latents
    from helpers.generation import sample_latents
    from helpers.schedule import default_scheduler_config, sampling_scheduler

    emb = text_encoder.encode([f"a red monster number {i}" for i in range(n_prompts)] + [""]).cpu()
    unet.eval()
    synchronize(device)  # (the grid's UNet call: eval mode, bf16 autocast on CUDA, as the loop's grids)
    start = time.perf_counter()
    latents = sample_latents(unet, sampling_scheduler("ddim", default_scheduler_config()), emb[:-1], emb[-1:],
                             list(range(n_prompts)), steps=steps, latent_shape=latent_shape, progress=False)
    with torch.no_grad():
        decode_latents(vae, latents.to(device))
    synchronize(device)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------- report
def markdown(report: dict, command: str) -> str:
    peak, matmul = report["peak_tflops"], report["matmul_tflops"]
    flops = report["train_step_gflops_per_sample"]
    lines = [
        f"## Training throughput: the speed levers on and off ({report['device']})",
        "",
        f"- command: `{command}`",
        f"- machine: {report['machine']}",
        f"- date: {report['date']}",
        f"- UNet preset `{report['preset']}` ({report['params_m']:.1f} M params), {report['resolution']} px -> latents "
        f"{report['latent_shape']}, global batch {report['batch']}, mixed precision {report['mixed_precision']}, "
        f"AdamW + EMA + clipping; checkpoints and grids off; {report['timed_steps']} timed steps per row after "
        f"{report['warmup_steps']} untimed",
        f"- FLOPs per training sample: {flops:.1f} GFLOP = 3 x the forward pass at batch 1 "
        "(helpers.unet.costs.summary: matmuls, convolutions, attention as 2 x MACs)",
        f"- MFU = FLOPs/sample x samples/s / peak; peak (datasheet, dense bf16): "
        f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown for this device (give --peak-tflops)'}; measured bf16 "
        f"8192^3 matmul: {f'{matmul:.0f} TFLOP/s' if matmul else 'not measured'}",
        "",
        "| row | samples/s (median) | min-max | s/step | MFU (peak) | MFU (matmul) | peak memory | compile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | | |")
            continue
        s = r["samples_per_s"]
        mem = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "-"
        compiled = f"{r['compile_s']:.0f} s" if r.get("compile_s") else "-"
        lines.append(f"| {r['name']} | {s['median']:.1f} | {s['min']:.1f}-{s['max']:.1f} | {r['s_per_step']:.4f} | "
                     f"{_pct(r.get('mfu'))} | {_pct(r.get('mfu_matmul'))} | {mem} | {compiled} |")
    est = report["course_run"]
    lines += ["", f"**cached (best) / encode every step = {report['encode_ratio']:.2f}x**" if report["encode_ratio"]
              else "", "",
              f"Course run estimate ({COURSE_STEPS} steps x {COURSE_BATCH} at the rates above, a grid and a "
              f"checkpoint every {COURSE_EVERY} steps; one checkpoint {report['checkpoint_s']:.1f} s, one grid of 8 "
              f"prompts x {report['grid_steps']} DDIM steps {report['grid_s']:.1f} s): "
              + "; ".join(f"{k}: {v / 60:.1f} min" for k, v in est.items())]
    if report["quick"]:
        lines += ["", "(--quick: tiny sizes and one short window per row; checks the script, measures nothing)"]
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f} %" if x is not None else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing, measures nothing useful")
    ap.add_argument("--preset", default=None, help="UNet preset (default: reference; tiny with --quick)")
    ap.add_argument("--resolution", type=int, default=None, help="image side in px (default 256; 64 with --quick)")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch (default 64; 4 with --quick)")
    ap.add_argument("--log-every", type=int, default=5, help="steps per timed window (the loop syncs there)")
    ap.add_argument("--warmup-windows", type=int, default=2)
    ap.add_argument("--windows", type=int, default=4, help="timed windows per row")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: datasheet)")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="do not update --results")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.log_every, args.warmup_windows, args.windows = 2, 1, 1
    preset = args.preset or ("tiny" if args.quick else "reference")
    resolution = args.resolution or (64 if args.quick else 256)
    batch = args.batch_size or (4 if args.quick else 64)
    mixed = "bf16" if device.type == "cuda" else "no"

    vae, text_encoder = sd_vae(device), HashTokenizerCLIP(device)
    latent_shape = (4, resolution // 8, resolution // 8)
    hidden = text_encoder.hidden_size
    steps = args.log_every * (args.warmup_windows + args.windows)
    n_images = max(256, 4 * batch)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 3, resolution, resolution, generator=g) * 2 - 1
    # the cache holds a whole row's batches: no epoch boundary (a permutation copy) inside a timed row
    sources = {"cached": random_cache(max(n_images, batch * steps), latent_shape, hidden),
               "encode": EncodeEveryStep(images, random_captions(n_images), vae, text_encoder, latent_shape)}
    base = dict(unet_preset=preset, resolution=resolution, batch_size=batch, max_steps=steps, warmup_steps=1,
                eval_freq=0, save_freq=0, log_every=args.log_every, device=str(device), mixed_precision=mixed,
                sample_prompts=[])
    tmp = Path(tempfile.mkdtemp(prefix="train-levers-"))
    (tmp / "rows").mkdir()

    # side costs first, with the real checkpoint functions: one save, one grid
    ckpt_s = checkpoint_seconds(base, latent_shape, hidden, device, tmp)
    grid_unet = build_train_parts(TrainConfig(**base), latent_shape, hidden, device).unet
    grid_steps = 4 if args.quick else 50
    grid_s = grid_seconds(grid_unet, vae, text_encoder, latent_shape, 8, grid_steps, device)
    params_m = sum(p.numel() for p in grid_unet.parameters()) / 1e6
    del grid_unet
    flops = summary(_meta_unet(preset, hidden, latent_shape), batch_size=1, dtype=torch.bfloat16).train_step_gflops
    peak, gpu_name = peak_tflops(device)
    peak = args.peak_tflops or peak
    matmul = matmul_tflops(device)

    # the rows: no checkpoints, and one UNet initialisation reused (a deep copy per row)
    checkpoints.save_unet = lambda *a, **k: None
    checkpoints.save_state = lambda *a, **k: None
    template: dict = {}
    real_build = train_parts.build_unet

    def build_once(*a, **k):
        key = repr((a, sorted(k.items())))
        if key not in template:
            template[key] = real_build(*a, **k)
        return copy.deepcopy(template[key])

    train_parts.build_unet = build_once
    report_rows = []
    for i, row in enumerate(rows(args.quick, device, batch)):
        r = run_row(row, base, sources, tmp / "rows" / f"row{i}", args.warmup_windows, args.log_every, device)
        if "error" not in r:
            r["mfu"] = flops * 1e9 * r["samples_per_s"]["median"] / (peak * 1e12) if peak else None
            r["mfu_matmul"] = flops * 1e9 * r["samples_per_s"]["median"] / (matmul * 1e12) if matmul else None
        report_rows.append(r)
        print(f"{r['name']:>40}: " + (f"{r['samples_per_s']['median']:.1f} samples/s" if "error" not in r
                                     else r["error"]), flush=True)
    train_parts.build_unet = real_build

    ok = {r["name"]: r for r in report_rows if "error" not in r}
    cached = [r["samples_per_s"]["median"] for n, r in ok.items() if not n.startswith("encode")]
    encode = ok.get("encode every step (course loop)")
    course = {}
    for name in ("all levers", "+ compile", f"course default ({batch // 2} x 2 accumulation)"):
        if name in ok:
            rate = ok[name]["samples_per_s"]["median"]
            course[name] = (COURSE_STEPS * COURSE_BATCH / rate + (ok[name]["compile_s"] or 0)
                            + COURSE_STEPS // COURSE_EVERY * (ckpt_s + grid_s))
    report = {
        "machine": machine(), "device": gpu_name, "date": time.strftime("%Y-%m-%d %H:%M"), "preset": preset,
        "params_m": params_m, "resolution": resolution, "latent_shape": "x".join(map(str, latent_shape)),
        "batch": batch, "mixed_precision": mixed, "timed_steps": args.windows * args.log_every,
        "warmup_steps": args.warmup_windows * args.log_every, "train_step_gflops_per_sample": flops,
        "peak_tflops": peak, "matmul_tflops": matmul, "rows": report_rows,
        "encode_ratio": max(cached) / encode["samples_per_s"]["median"] if cached and encode else None,
        "checkpoint_s": ckpt_s, "grid_s": grid_s, "grid_steps": grid_steps, "course_run": course,
        "quick": args.quick,
    }
    command = shlex.join(["python", "benchmarks/train_levers.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(report, command)
    print("\n" + text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_write:
        write_section(f"train_levers:{device.type}", text, args.results)
        print(f"written to {args.results}")
    return 0


def _meta_unet(preset: str, hidden: int, latent_shape):
    from helpers.unet import build_unet

    return build_unet(preset, cross_attention_dim=hidden, sample_size=latent_shape[-1], device="meta")


if __name__ == "__main__":
    sys.exit(main())
