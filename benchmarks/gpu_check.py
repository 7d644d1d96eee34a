"""The Python side of ``benchmarks/gpu_check.sh``: what the machine has, an import blocker that makes a CPU machine
look like the GPU image, and the summary of a check.

    python benchmarks/gpu_check.py preflight --device cuda --out OUT    # versions, GPU, missing modules -> env.json
    python benchmarks/gpu_check.py as-gpu-image SITE_DIR                 # SITE_DIR/sitecustomize.py (see below)
    python benchmarks/gpu_check.py summary OUT [--results RESULTS.md]    # OUT/summary.md + a RESULTS.md section

``as-gpu-image`` writes a ``sitecustomize.py`` that refuses to import any package of this interpreter that the GPU
image (``gpu_image_packages.txt``) and the carried wheels (``gpu_wheels.txt``) do not provide: with SITE_DIR on
PYTHONPATH, a CPU run finds a missing wheel here instead of in a GPU session.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Modules each part of the check imports (top-level names), by part.
NEEDED = {
    "training and tests": ["torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub",
                           "pytest", "pytest_timeout", "filelock", "PIL", "numpy", "scipy", "tqdm", "matplotlib"],
    "notebooks": ["papermill", "nbclient", "nbformat", "ipykernel", "jupyter_client", "IPython", "ipywidgets",
                  "zmq", "torchmetrics"],
}

#: The goals of the course profile on one H100/H200 (issue 12).
GOALS = {"samples_per_s": 1500.0, "encode_ratio": 2.5, "generate_ratio": 8.0, "generate_all_s": 60.0,
         "course_run_min": 20.0}


def _names(path: Path) -> set[str]:
    """Normalised distribution names of a requirements-like file (comments and versions dropped)."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(_normalise(re.split(r"[=<>!~ \[]", line, maxsplit=1)[0]))
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------------- preflight
def preflight(device: str, out: Path | None) -> int:
    """Print and save what the machine has; exit status 0 (all there), 1 (the notebooks' modules missing: the
    notebook step is skipped) or 2 (training modules missing, or no GPU for --device cuda)."""
    env: dict = {"python": platform.python_version(), "executable": sys.executable, "date": time.strftime("%F %T"),
                 "modules": {}, "missing": {}}
    for part, modules in NEEDED.items():
        for name in modules:
            try:
                module = importlib.import_module(name)
                env["modules"][name] = str(getattr(module, "__version__", "?"))
            except Exception as err:  # (ImportError, or a module that breaks on import: both count as missing)
                env["missing"].setdefault(part, []).append(f"{name} ({type(err).__name__}: {err})"[:200])
    status = 2 if "training and tests" in env["missing"] else (1 if env["missing"] else 0)
    if "torch" in env["modules"]:
        import torch

        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            env["gpu_memory_gib"] = round(total / 2 ** 30, 1)
            env["bf16"] = torch.cuda.is_bf16_supported()
        if device == "cuda" and not torch.cuda.is_available():
            env["missing"]["gpu"] = ["torch.cuda.is_available() is False (no GPU here: use --device cpu)"]
            status = 2
    from results import machine

    env["machine"] = machine() if "torch" in env["modules"] else platform.platform()
    print(json.dumps(env, indent=1))
    if env["missing"]:
        print("MISSING: " + "; ".join(f"{part}: {', '.join(m)}" for part, m in env["missing"].items()))
        print("Fetch the wheels on a machine with pip (`bash benchmarks/gpu_check.sh --fetch-wheels`, into ./.whl) "
              "and carry .whl: gpu_check.sh installs them with pip --no-index --target and sets PYTHONPATH.")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "env.json").write_text(json.dumps(env, indent=1) + "\n", encoding="utf-8")
    return status


# --------------------------------------------------------------------------------------------------- as-gpu-image
BLOCKER = '''"""Written by benchmarks/gpu_check.py as-gpu-image: this interpreter imports only what the GPU image
and the carried wheels provide: the path finder does not see the packages below (``import`` and
``importlib.util.find_spec`` both answer "not installed")."""
import sys
from importlib.machinery import PathFinder

_BLOCKED = {blocked!r}


class _GpuImageOnly(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_GpuImageOnly if finder is PathFinder else finder for finder in sys.meta_path]
'''


def _with_dependencies(names: set[str]) -> set[str]:
    """``names`` and, transitively, what their installed distributions here require (the image brings its packages
    with their own dependencies, whose names may differ from this machine's versions)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    dists = {_normalise(d.metadata["Name"]): d for d in md.distributions()}
    todo, seen = list(names), set(names)
    while todo:
        dist = dists.get(todo.pop())
        for line in (dist.requires or []) if dist else []:
            req = Requirement(line)
            name = _normalise(req.name)
            if name not in seen and (req.marker is None or req.marker.evaluate({"extra": ""})):
                seen.add(name)
                todo.append(name)
    return seen


def as_gpu_image(site: Path) -> int:
    """Write ``site/sitecustomize.py`` blocking the top-level modules of every installed distribution that is in
    neither the GPU image's list (with the dependencies of those packages) nor the wheel list (the workbook's own
    package stays importable)."""
    import importlib.metadata as md

    allowed = _with_dependencies(_names(HERE / "gpu_image_packages.txt")) | _names(HERE / "gpu_wheels.txt") | {
        "helpers"}  # (the wheels' own dependencies are not added: a missing one must show)
    blocked = sorted({module for module, dists in md.packages_distributions().items()
                      if not module.startswith("_") and not any(_normalise(d) in allowed for d in dists)})
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(blocked)), encoding="utf-8")
    print(f"{site / 'sitecustomize.py'}: {len(blocked)} modules refused ({', '.join(blocked)})")
    return 0


# --------------------------------------------------------------------------------------------------- summary
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _goal(value: float | None, goal: float, higher: bool = True, fmt: str = "{:.1f}") -> str:
    if value is None:
        return "not measured"
    met = value >= goal if higher else value <= goal
    bound = ">=" if higher else "<="
    return f"{fmt.format(value)} ({'meets' if met else 'misses'} the goal {bound} {fmt.format(goal)})"


def summary(out: Path, results: Path | None) -> int:
    """``out/summary.md`` from the step table and the JSON of the benchmarks; the same text as a section of
    ``results``. Exit status 1 when a step failed."""
    steps = []
    for line in (out / "steps.tsv").read_text(encoding="utf-8").splitlines():
        name, rc, seconds = line.split("\t")
        steps.append((name, rc, int(seconds)))
    env = _read_json(out / "env.json") or {}
    tr, gen = _read_json(out / "train.json"), _read_json(out / "generate.json")
    quick = bool(tr and tr.get("quick"))
    lines = [f"## GPU check: `benchmarks/gpu_check.sh` ({env.get('gpu') or 'cpu'}{', --quick' if quick else ''})", "",
             f"- machine: {env.get('machine', '?')}", f"- date: {env.get('date', '?')}",
             f"- python {env.get('python')}, " + ", ".join(f"{k} {v}" for k, v in env.get("modules", {}).items()
                                                           if k in ("torch", "diffusers", "transformers")), "",
             "| step | result | seconds |", "|---|---|---|"]
    verdict = {"0": "passed", "124": "timed out", "137": "killed (time)", "skipped": "skipped"}
    lines += [f"| {n} | {verdict.get(rc, f'failed (exit {rc})')} | {s} |" for n, rc, s in steps]
    lines += [f"| total | | {sum(s for _, _, s in steps)} |", ""]
    if tr:
        ok = [r for r in tr["rows"] if "error" not in r]
        best = max(ok, key=lambda r: r["samples_per_s"]["median"], default=None)
        allon = next((r for r in ok if r["name"] == "all levers"), None)
        course = min(tr["course_run"].values(), default=None)
        lines += [
            f"- training, {tr['preset']} UNet at {tr['resolution']} px, global batch {tr['batch']}: all levers "
            f"{_goal(allon and allon['samples_per_s']['median'], GOALS['samples_per_s'])} samples/s; best row "
            f"`{best and best['name']}` {_goal(best and best['samples_per_s']['median'], GOALS['samples_per_s'])} "
            f"samples/s, MFU {_pct(best and best.get('mfu'))} of {tr['peak_tflops'] or '?'} TFLOP/s "
            f"({_pct(best and best.get('mfu_matmul'))} of the measured matmul {tr['matmul_tflops'] or '?'})",
            f"- cached / encode every step: {_goal(tr['encode_ratio'], GOALS['encode_ratio'], fmt='{:.2f}x')}",
            f"- course run (20k steps x 64) estimated: {_goal(course and course / 60, GOALS['course_run_min'], False)}"
            " min (fastest row; see the train_levers section)"]
    if gen:
        lines += [f"- generation, {gen['prompts']} prompts, {gen['steps']} DDIM steps, batch {gen['batch_size']}: "
                  f"batched / one at a time {_goal(gen['ratio'], GOALS['generate_ratio'], fmt='{:.2f}x')}; all "
                  f"prompts batched {_goal(gen['seconds_all_prompts_batched'], GOALS['generate_all_s'], False)} s"]
    if quick:
        lines += ["", "(--quick: tiny sizes; the numbers only show that every step runs)"]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if results is not None:
        from results import write_section

        write_section(f"gpu_check:{'quick' if quick else env.get('gpu') and 'cuda' or 'cpu'}", text, results)
    return 0 if all(rc in ("0",) for _, rc, _ in steps) else 1


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f} %" if x is not None else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preflight")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    p = sub.add_parser("as-gpu-image")
    p.add_argument("site", type=Path)
    p = sub.add_parser("summary")
    p.add_argument("out", type=Path)
    p.add_argument("--results", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.command == "preflight":
        return preflight(args.device, args.out)
    if args.command == "as-gpu-image":
        return as_gpu_image(args.site)
    return summary(args.out, args.results)


if __name__ == "__main__":
    sys.exit(main())
