"""Run the workbook's notebooks headless, in order (``make run`` and the tests use this).

    python -m helpers.notebooks                      # all chapters, profile auto, into outputs/executed/
    python -m helpers.notebooks --smoke --profile demo --data-dir /tmp/d --outputs-dir /tmp/o 01 02
    python -m helpers.notebooks --profile course --text-encoder ~/models/clip --vae ~/models/sd-v1-4 -p guidance_scale=3
    python -m helpers.notebooks --profile demo --data-dir my_sprites/ -p resolution=32 -p crop_to_content=true

``-p NAME=VALUE`` sets any parameter of the parameters cells (``resolution``, ``unet_preset``, ``crop_to_content``,
``image_column``, ``caption_column``, ``prompts``, ...); ``make run DATA=my_sprites/ PROFILE=demo ARGS="-p ..."``
passes the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import papermill as pm

from helpers.paths import REPO_ROOT, outputs_root
from helpers.progress import HEADLESS_KERNEL_ENV

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def chapter_notebooks(selection: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order; ``selection`` keeps those whose name starts with one of its prefixes."""
    books = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        books = [b for b in books if any(b.name.startswith(s) for s in selection)]
        if not books:
            raise SystemExit(f"no notebook in {NOTEBOOKS_DIR} starts with {selection}")
    return books


#: Smoke runs are tiny models: their kernels use one thread each (no OpenMP spin-waiting when the runner shares the
#: cores with another job, e.g. tests in parallel), set through the environment the kernels inherit.
SMOKE_KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextmanager
def _kernel_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` for the kernels started inside the block (they inherit this process's environment)."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebooks(notebooks: list[Path], out_dir: Path, parameters: dict, *, timeout: int = 1800) -> list[dict]:
    """Execute each notebook with papermill (parameters injected after the ``parameters`` cell).

    Stops at the first failure and raises, naming the notebook and its executed copy (which shows the cell).
    Returns one ``{"notebook", "seconds"}`` record per notebook. The kernels draw text progress bars
    (:data:`helpers.progress.HEADLESS_KERNEL_ENV`: a saved notebook keeps a widget's first frame only); smoke runs
    (``parameters["smoke"]``) also get :data:`SMOKE_KERNEL_ENV` (one thread).
    """
    env = {**HEADLESS_KERNEL_ENV, **(SMOKE_KERNEL_ENV if parameters.get("smoke") else {})}
    with _kernel_env(env):
        return _execute(notebooks, out_dir, parameters, timeout)


def _execute(notebooks: list[Path], out_dir: Path, parameters: dict, timeout: int) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for nb in notebooks:
        target = out_dir / nb.name
        start = time.perf_counter()
        print(f"--> {nb.name}", flush=True)
        try:
            pm.execute_notebook(str(nb), str(target), parameters=parameters, cwd=str(nb.parent),
                                kernel_name="python3", progress_bar=False, execution_timeout=timeout)
        except pm.PapermillExecutionError as err:
            raise RuntimeError(f"{nb.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                               f"See the executed copy {target}") from err
        seconds = time.perf_counter() - start
        records.append({"notebook": nb.name, "seconds": round(seconds, 1)})
        print(f"    {nb.name} done in {seconds:.1f} s", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="prefixes such as 01 04 (default: all)")
    ap.add_argument("--profile", default="auto", choices=["auto", "course", "demo"])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--data-dir")
    ap.add_argument("--outputs-dir")
    ap.add_argument("--run-name", default="main")
    ap.add_argument("--text-encoder", help="a hub id or local folder instead of the profile's text encoder")
    ap.add_argument("--vae", help="a hub id or local folder instead of the profile's VAE (an SD folder: its vae/)")
    ap.add_argument("--executed-dir", help="where executed copies go (default outputs/executed)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="another notebook parameter (VALUE as JSON, else a string), e.g. -p guidance_scale=3")
    args = ap.parse_args(argv)
    params = {"profile_name": args.profile, "smoke": args.smoke, "data_dir": args.data_dir,
              "outputs_dir": args.outputs_dir, "run_name": args.run_name, "text_encoder": args.text_encoder,
              "vae": args.vae}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"-p takes NAME=VALUE, not {item!r}")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    executed = Path(args.executed_dir) if args.executed_dir else Path(args.outputs_dir or outputs_root()) / "executed"
    start = time.perf_counter()
    records = execute_notebooks(chapter_notebooks(args.chapters), executed, params)
    total = time.perf_counter() - start
    for r in records:
        print(f"{r['notebook']:<32} {r['seconds']:>7.1f} s")
    print(f"{'total':<32} {total:>7.1f} s   (executed copies in {executed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
