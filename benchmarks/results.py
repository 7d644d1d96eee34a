"""What the benchmark scripts share: the machine line and the sections they write into ``RESULTS.md``.

Each script owns named sections of ``benchmarks/RESULTS.md`` between ``<!-- <name>:begin -->`` and
``<!-- <name>:end -->`` markers; a new run replaces its section and keeps everything else.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPU model, logical CPUs, torch and its thread count, the GPU if any, Python and the OS, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{gpu}, Python {platform.python_version()}, {platform.system()}")


def spread(values: list[float]) -> dict:
    """Median, quartiles, min and max of ``values`` (at least one)."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
    return {"median": statistics.median(v), "q1": q[0], "q3": q[2], "min": v[0], "max": v[-1], "n": len(v)}


def write_section(name: str, section: str, results: Path = RESULTS) -> None:
    """Replace the ``name`` section of ``results`` (between its markers) with ``section``; keep the rest."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + block
    results.write_text(text, encoding="utf-8")
