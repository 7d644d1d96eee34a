"""Where things live: the repository root, data/ and outputs/."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """``data/`` at the top of the workbook (override with ``WORKBOOK_DATA``)."""
    return Path(os.environ.get("WORKBOOK_DATA", REPO_ROOT / "data"))


def outputs_root() -> Path:
    """``outputs/`` at the top of the workbook (override with ``WORKBOOK_OUTPUTS``)."""
    return Path(os.environ.get("WORKBOOK_OUTPUTS", REPO_ROOT / "outputs"))
