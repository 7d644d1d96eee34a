"""Can a model be loaded? Answered quickly, also offline (no hub retries).

A local folder must hold ``config.json``; a hub id must be in the normal Hugging Face cache or, when the hub is
reachable, resolve its ``config.json``. Weights load later, with ``from_pretrained``.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache


def model_problem(model_id: str, subfolder: str | None = None) -> str | None:
    """Why ``model_id`` (a local folder or a hub id, optionally with a subfolder) cannot be loaded, or None."""
    folder = Path(model_id).expanduser() / (subfolder or "")
    if Path(model_id).expanduser().exists():
        return None if (folder / "config.json").exists() else f"{folder} has no config.json"
    if Path(model_id).is_absolute() or model_id.startswith((".", "~")):
        return f"{model_id}: no such folder"
    return hub_problem(model_id, subfolder)


@functools.lru_cache(maxsize=16)
def hub_problem(model_id: str, subfolder: str | None = None) -> str | None:
    """Why the hub model ``model_id`` cannot be loaded, or None (cached per session: asked once, not per notebook
    cell or sweep value)."""
    name = f"{model_id}/{subfolder}" if subfolder else model_id
    filename = f"{subfolder}/config.json" if subfolder else "config.json"
    if isinstance(try_to_load_from_cache(model_id, filename), str):
        return None  # in the HF cache: from_pretrained finds it without the network
    if constants.HF_HUB_OFFLINE:
        return f"{name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    problem = endpoint_problem(constants.ENDPOINT)
    if problem:
        return f"{name} is not in the Hugging Face cache and the hub is unreachable ({problem})"
    try:
        hf_hub_download(model_id, "config.json", subfolder=subfolder)
    except Exception as err:
        return f"cannot load {name} ({type(err).__name__}: {err})"
    return None


def endpoint_problem(endpoint: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the hub endpoint opens within ``timeout`` s, else why not (no retries)."""
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port}: {err.strerror or type(err).__name__}"
