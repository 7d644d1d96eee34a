"""Repository hygiene: notebooks are committed stripped and carry a papermill `parameters` cell."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from helpers.notebooks import chapter_notebooks
from helpers.paths import REPO_ROOT

PARAMETERS = ("profile_name", "smoke", "data_dir", "outputs_dir", "text_encoder", "vae", "resolution", "unet_preset",
              "crop_to_content", "image_column", "caption_column", "run_name", "solutions")


def _committed_versions(path):
    """The working-tree file and, when git tracks it, the version in the index (what a commit holds)."""
    yield "working tree", path.read_text()
    rel = path.relative_to(REPO_ROOT).as_posix()
    shown = subprocess.run(["git", "show", f":{rel}"], cwd=REPO_ROOT, capture_output=True, text=True)
    if shown.returncode == 0:
        yield "git index", shown.stdout


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    for where, text in _committed_versions(path):
        nb = nbformat.reads(text, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name} ({where}) holds outputs in cells {dirty}: run `nbstripout {path}`"


@pytest.mark.parametrize("path", chapter_notebooks(), ids=lambda p: p.name)
def test_notebook_has_parameters_cell_after_an_introduction(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown", f"{path.name} should open with a markdown introduction"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    for name in PARAMETERS:
        assert f"{name} =" in tagged[0].source, f"{path.name}: parameters cell lacks `{name} = ...`"
