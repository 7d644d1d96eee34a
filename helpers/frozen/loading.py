"""Loading a frozen pretrained model: quiet, checked, with errors that say what to do.

Both frozen models (:mod:`helpers.frozen.text_encoder`, :mod:`helpers.frozen.vae`) load with the normal
``from_pretrained`` code path from a hub id (through the HF cache) or a local folder, and come back frozen
(``eval()``, ``requires_grad_(False)``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import diffusers.utils.logging as dlog
import torch
import transformers.utils.logging as tlog

class ModelLoadError(OSError):
    """A model could not be loaded; the message names the id or folder and what to do."""


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the load reports of transformers/diffusers (e.g. CLIP's unused vision weights) and their bars."""
    t_level, d_level = tlog.get_verbosity(), dlog.get_verbosity()
    t_bar = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(t_level)
        dlog.set_verbosity(d_level)
        if t_bar:
            tlog.enable_progress_bar()


def _looks_like_path(model_id: str) -> bool:
    """True for things that can only be folders (absolute/relative paths), False for ``owner/name`` hub ids."""
    s = str(model_id)
    return (Path(s).is_absolute() or s.startswith((".", "~")) or "\\" in s or s.count("/") > 1
            or s.endswith("/"))


def _where(model_id: str, subfolder: str | None) -> str:
    return f"{model_id}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def check_local(model_id: str | Path, subfolder: str | None, what: str) -> Path | None:
    """For a local folder: check it holds a model (``config.json``) and return it; None for a hub id."""
    path = Path(model_id).expanduser()
    if not path.exists():
        if _looks_like_path(str(model_id)):
            raise ModelLoadError(
                f"The {what} folder {path} does not exist. Pass an existing folder that holds the model files "
                "(config.json + weights), a hub id such as 'openai/clip-vit-base-patch32', or use profile_name='demo'.")
        return None
    if not path.is_dir():
        raise ModelLoadError(f"The {what} path {path} is a file, not a model folder (a folder with config.json).")
    folder = path / subfolder if subfolder else path
    if not (folder / "config.json").exists():
        hint = ""
        for sub in ("vae", "text_encoder"):
            if not subfolder and (path / sub / "config.json").exists():
                hint = f" It has a {sub}/ subfolder: pass subfolder={sub!r}."
        raise ModelLoadError(
            f"{folder} is not a model folder: it has no config.json.{hint} Pass a folder saved with "
            "save_pretrained (config.json + weights) or a hub id, or use profile_name='demo'.")
    return folder


def hub_error(model_id: str, subfolder: str | None, what: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Cannot load the {what} {_where(model_id, subfolder)}: {type(err).__name__}: {err}\n"
        f"What to do: with network access it downloads once into the HF cache; offline, bring its files into the HF "
        f"cache (e.g. `hf download {model_id}` on a machine with network, then copy ~/.cache/huggingface) "
        "or pass a local folder that holds them (config.json + weights); or run the workbook with profile_name='demo'.")



def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
