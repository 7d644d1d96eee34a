"""helpers.notebooks: the headless runner gives smoke kernels one thread and leaves the environment as it was."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

from helpers.notebooks import SMOKE_KERNEL_ENV, execute_notebooks
from helpers.progress import HEADLESS_ENV


def _threads_notebook(path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}, "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell("smoke = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import torch\nprint('threads', torch.get_num_threads())")]
    nbformat.write(nb, str(path))
    return path


def _printed_threads(executed) -> int:
    nb = json.loads(executed.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    return int(text.split("threads", 1)[1].split()[0])


@pytest.mark.notebook
def test_smoke_kernels_get_one_thread_and_the_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    book = _threads_notebook(tmp_path / "t.ipynb")
    execute_notebooks([book], tmp_path / "smoke", {"smoke": True})
    assert _printed_threads(tmp_path / "smoke" / "t.ipynb") == 1
    assert "OMP_NUM_THREADS" not in os.environ and set(SMOKE_KERNEL_ENV) >= {"OMP_NUM_THREADS"}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    execute_notebooks([book], tmp_path / "full", {"smoke": False})
    assert _printed_threads(tmp_path / "full" / "t.ipynb") == 2 and os.environ["OMP_NUM_THREADS"] == "2"


@pytest.mark.notebook
def test_headless_chapters_save_their_progress_bars_finished(tmp_path, monkeypatch):
    """A saved notebook keeps only a widget's first frame (every bar read 0 %); headless kernels draw text bars,
    so the executed copy shows the finished bar — and a live session (no runner) still gets the widget."""
    monkeypatch.delenv(HEADLESS_ENV, raising=False)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}, "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell("smoke = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("from helpers.progress import tqdm\n"
                                                  "for _ in tqdm(range(7), desc='work'):\n    pass")]
    nbformat.write(nb, str(tmp_path / "p.ipynb"))
    execute_notebooks([tmp_path / "p.ipynb"], tmp_path / "out", {"smoke": True})
    outputs = [o for c in json.loads((tmp_path / "out" / "p.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "work: 100%" in text and "7/7" in text
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert HEADLESS_ENV not in os.environ  # the runner's process is left as it was
