"""Wall time of ``make run`` on a fresh clone: set-up + the six notebooks, then a second run that reuses everything.

Clones the committed ``HEAD`` of this repository into a temporary folder (nothing of this checkout is reused: no
``.venv``, no ``data/``, no ``outputs/``), runs ``make run PROFILE=<profile>`` there twice and writes the times,
per notebook, into this script's section of ``benchmarks/RESULTS.md``. The first run includes creating the
virtual environment (from the package index or pip's cache), generating the demo data, training the demo VAE,
building the cache and training the UNet; the second shows what a re-run costs.

    .venv/bin/python benchmarks/make_run_walltime.py                 # demo profile, ~8 min on 2 idle cores
    .venv/bin/python benchmarks/make_run_walltime.py --keep /tmp/run  # keep the clone to look at its outputs
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
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

NOTEBOOK_LINE = re.compile(r"^(\d\d_\S+\.ipynb)\s+([\d.]+) s$")


def timed_make_run(clone: Path, profile: str, log: Path) -> tuple[float, dict[str, float]]:
    """Run ``make run`` in ``clone``; returns (wall seconds, seconds per notebook). Raises if it fails."""
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(["make", "run", f"PROFILE={profile}"], cwd=clone, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"make run failed (exit {proc.returncode}); see {log}")
    per_notebook = {m[1]: float(m[2]) for line in log.read_text().splitlines() if (m := NOTEBOOK_LINE.match(line))}
    return seconds, per_notebook


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo", choices=["demo", "auto", "course"])
    ap.add_argument("--keep", type=Path, default=None, help="clone into this (new) folder and keep it")
    ap.add_argument("--note", default=None, help="a line of context for RESULTS.md (e.g. machine load)")
    ap.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    ap.add_argument("--once", action="store_true", help="only the first (fresh clone) run")
    args = ap.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="make-run-"))
    clone = work / "repo"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    try:
        first, nb_first = timed_make_run(clone, args.profile, work / "make-run-1.log")
        print(f"first make run: {first:.1f} s", flush=True)
        second, nb_second = (float("nan"), {}) if args.once else timed_make_run(clone, args.profile,
                                                                              work / "make-run-2.log")
        print(f"second make run: {second:.1f} s", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    command = shlex.join(["python", "benchmarks/make_run_walltime.py", *(argv if argv is not None else sys.argv[1:])])
    setup = first - sum(nb_first.values())
    lines = [
        f"## `make run` on a fresh clone ({args.profile} profile)",
        "",
        f"- command: `{command}` (commit {commit})",
        f"- machine: {machine()}",
        f"- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        "| | first run (fresh clone) | second run (reuses data, VAE, cache, checkpoints) |",
        "|---|---|---|",
        f"| set-up (venv, pip install) and the runner | {setup:.0f} s | {second - sum(nb_second.values()):.0f} s |",
        *(f"| {name} | {nb_first[name]:.0f} s | {nb_second.get(name, float('nan')):.0f} s |" for name in nb_first),
        f"| **total wall time** | **{first:.0f} s ({first / 60:.1f} min)** | **{second:.0f} s ({second / 60:.1f} min)** |",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        write_section(f"make_run:{args.profile}", text, RESULTS)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
