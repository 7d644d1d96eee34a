"""helpers.paths.atomic_folder: a folder appears whole or not at all, and is replaced only when asked."""

from __future__ import annotations

import os
import stat

import pytest

from helpers.paths import atomic_folder


def test_the_folder_appears_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "out" / "result"
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "half.txt").write_text("half")
            assert not final.exists()
            raise RuntimeError("crash while writing")
    assert not final.exists() and list((tmp_path / "out").iterdir()) == []  # nothing half-written is left

    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    # the usual permissions (mkdtemp would have made it 0700)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask


def test_an_existing_folder_is_replaced_only_when_asked(tmp_path):
    final = tmp_path / "result"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="result"):
        with atomic_folder(final):
            pass
    with pytest.raises(ValueError):  # a failed replacement keeps the old folder intact
        with atomic_folder(final, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise ValueError
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    with atomic_folder(final, replace=True, tmp_prefix=".tmp-x-") as tmp:
        assert tmp.name.startswith(".tmp-x-")
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]  # no temporary or old folder left
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    from helpers.paths import atomic_write

    target = tmp_path / "sub" / "config.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    import os

    from helpers import paths

    target = tmp_path / "metrics.jsonl"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        paths.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
