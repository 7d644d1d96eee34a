"""Where things live (the repository root, data/ and outputs/) and how a file or a folder is written atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """``data/`` at the top of the workbook (override with ``WORKBOOK_DATA``)."""
    return Path(os.environ.get("WORKBOOK_DATA", REPO_ROOT / "data"))


def outputs_root() -> Path:
    """``outputs/`` at the top of the workbook (override with ``WORKBOOK_OUTPUTS``)."""
    return Path(os.environ.get("WORKBOOK_OUTPUTS", REPO_ROOT / "outputs"))


@contextmanager
def atomic_folder(final: str | Path, *, replace: bool = False, tmp_prefix: str | None = None) -> Iterator[Path]:
    """Write a folder all at once: yield a new temporary sibling of ``final``, rename it to ``final`` on success.

    ``final`` therefore never holds half a result: if the block raises (or the process dies) only a hidden
    temporary folder is left (deleted here when possible). An existing ``final`` is replaced only with
    ``replace=True`` (moved aside first, then deleted); otherwise ``FileExistsError``. ``tmp_prefix`` names the
    temporary folder (default ``.<name>.tmp-``) so that a caller can recognise and clean leftovers.
    """
    final = Path(final)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it, or choose another folder.")
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = tmp_prefix if tmp_prefix is not None else f".{final.name}.tmp-"
    tmp = final.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # (not mkdtemp: the folder keeps the user's usual permissions)
    try:
        yield tmp
        old = None
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} appeared while it was being written; not replacing it.")
            old = final.with_name(f"{prefix}old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError as err:
            if final.exists():  # another writer got there between the check and the rename
                raise FileExistsError(f"{final} appeared while it was being written; not replacing it.") from err
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` all at once: a temporary sibling file, then ``os.replace``.

    Readers see the old file or the new one, never half of one; a failed write leaves ``path`` as it was. The
    temporary name is unique (pid + random), so two writers never share it. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
