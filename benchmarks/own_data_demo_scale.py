"""Wall time of the demo scale on a data folder of ~3,000 images at 64 px: chapters 02 and 04, headless.

Writes a demo-like set of ``n_species x 4 actions x n_frames`` sprites (``helpers.demo.dataset.make_demo_dataset``)
into a work folder, removes its demo stamp (so it is just a folder of someone's images), then runs

    python -m helpers.notebooks --profile demo --data-dir <work>/data --outputs-dir <work>/outputs 02 04

and reports the wall time, the notebooks' own times and the cells that scale with the data: training the demo VAE
on these images (chapter 02), encoding the latent cache (02), and training the UNet (04). The section
``own_data:demo`` of ``benchmarks/RESULTS.md`` gets the numbers.

    .venv/bin/python benchmarks/own_data_demo_scale.py                        # 96 x 4 x 8 = 3,072 images
    .venv/bin/python benchmarks/own_data_demo_scale.py --n-species 24 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from results import RESULTS, machine, write_section  # noqa: E402

# (chapter, a piece of the cell's source, what it does)
CELLS = [("02_frozen_clip_vae", "frozen = load_frozen_models(P)", "demo VAE training on these images (first use)"),
         ("02_frozen_clip_vae", "cache_path = build_cache(", "latent cache: every image + its flip, every caption"),
         ("04_training", "result = train(config", "UNet training")]


def cell_seconds(executed: Path, chapter: str, needle: str) -> float | None:
    """Papermill's duration of the first cell of ``chapter`` whose source holds ``needle``."""
    nb = json.loads((executed / f"{chapter}.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and needle in "".join(cell["source"]):
            return cell["metadata"].get("papermill", {}).get("duration")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-species", type=int, default=96)
    ap.add_argument("--n-frames", type=int, default=8)
    ap.add_argument("--keep", type=Path, default=None, help="work in this (new) folder and keep it")
    ap.add_argument("--note", default=None, help="a line of context for RESULTS.md (e.g. machine load)")
    ap.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    args = ap.parse_args(argv)

    from helpers.demo.dataset import STAMP_NAME, make_demo_dataset

    work = args.keep or Path(tempfile.mkdtemp(prefix="own-data-"))
    data, outputs, executed = work / "data", work / "outputs", work / "executed"
    make_demo_dataset(data, n_species=args.n_species, n_frames=args.n_frames)
    (data / STAMP_NAME).unlink()
    n_images = len(list((data / "train").glob("*.png")))
    cmd = [sys.executable, "-m", "helpers.notebooks", "--profile", "demo", "--data-dir", str(data),
           "--outputs-dir", str(outputs), "--executed-dir", str(executed), "02", "04"]
    start = time.perf_counter()
    with (work / "run.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    try:
        if proc.returncode:
            raise SystemExit(f"the run failed (exit {proc.returncode}); see {work / 'run.log'}")
        report = json.loads(next((outputs / "vae").glob("*/training_report.json")).read_text())
        config = json.loads((outputs / "main" / "train_config.json").read_text())
        per_chapter = {ch: sum(c["metadata"].get("papermill", {}).get("duration") or 0
                               for c in json.loads((executed / f"{ch}.ipynb").read_text())["cells"])
                       for ch in ("02_frozen_clip_vae", "04_training")}
        cells = [(what, cell_seconds(executed, ch, needle)) for ch, needle, what in CELLS]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    command = shlex.join(["python", "benchmarks/own_data_demo_scale.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "## The demo scale on ~3,000 images of one's own (64 px, CPU)",
        "",
        f"- command: `{command}`, which runs `python -m helpers.notebooks --profile demo --data-dir <data> 02 04`",
        f"- machine: {machine()}",
        f"- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- data: {n_images} sprites ({args.n_species} monsters x 4 actions x {args.n_frames} frames), "
        f"64 px, course format, not the generated demo set",
        f"- demo VAE: {report['steps']} steps of {report['batch_size']} crops, held-out PSNR "
        f"{report['psnr_heldout_db']} dB ({report['n_heldout_images']} images of unseen monsters)",
        f"- UNet: preset `{config['unet_preset']}`, {config['max_steps']} steps of batch {config['batch_size']}"
        f" x {config['grad_accum']}",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        "| what | seconds |",
        "|---|---|",
        *(f"| {what} | {s:.0f} |" for what, s in cells if s is not None),
        *(f"| chapter {ch[:2]} (all cells) | {s:.0f} |" for ch, s in per_chapter.items()),
        f"| **wall time of the command** (kernels and imports included) | **{wall:.0f} ({wall / 60:.1f} min)** |",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        write_section("own_data:demo", text, RESULTS)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
