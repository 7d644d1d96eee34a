"""The demo VAE's recipe: train variants of ``helpers.demo.vae.train_demo_vae`` on the demo set and print their
reconstruction PSNR on the training images and on the monsters they never trained on.

    python benchmarks/demo_vae_recipe.py --variant v3=lr=6e-3,steps=1500 --variant v4=lr=3e-3,steps=2500 --seeds 0 1

The seed also draws which monsters are held out (``helpers.data.choose_heldout``), so two seeds compare two draws.
Run one variant at a time on a small machine (the VAE uses two threads). Nothing is written outside ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_variant(text: str) -> tuple[str, dict]:
    """``"name=lr=3e-3,steps=2500"`` -> ``("name", {"lr": 0.003, "steps": 2500})``."""
    name, _, spec = text.partition("=")
    kwargs = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.isdigit() else float(value)
    return name, kwargs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "data" / "demo"))
    ap.add_argument("--variant", action="append", default=[], help="name=key=value,key=value (train_demo_vae args)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="/tmp/demo_vae_recipe")
    args = ap.parse_args(argv)
    from helpers.data import load_train_set
    from helpers.demo.vae import train_demo_vae

    train_set = load_train_set(args.data, verbose=False)
    print("| variant | seed | held-out monsters | train PSNR dB | held-out PSNR dB | seconds |\n|---|---|---|---|---|---|")
    for name, kwargs in map(parse_variant, args.variant or ["current="]):
        for seed in args.seeds:
            start = time.perf_counter()
            out = train_demo_vae(train_set, Path(args.out) / f"{name}-s{seed}", seed=seed, overwrite=True,
                                 progress=False, **kwargs)
            r = json.loads((out / "training_report.json").read_text())
            print(f"| {name} {kwargs} | {seed} | {', '.join(r['heldout_monsters'])} | {r['psnr_train_db']} | "
                  f"{r['psnr_heldout_db']} | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
