"""The frozen encoders run once: a cache of VAE latents and text embeddings that training reads.

For every training image the cache holds the VAE's latent distribution (mean and std, unscaled) of the image
and of its horizontal flip (the VAE is not flip-equivariant, so the flipped view is encoded too), and for every
distinct caption (including "") its text embedding. Files are safetensors under
``outputs/cache/<data-name>-<hash>/``; the hash covers the data, the model ids (and local weights), the resolution
and the image settings, so changing any of them builds a new cache and re-running reuses the old one.

Storage is float16 (half the memory; a latent's rounding error is far below the VAE's own noise). A std that
underflows to 0 in float16 only removes noise of size < 1e-7.

On a GPU the training loop keeps a copy of the whole cache in GPU memory (:meth:`LatentCache.to`; the course's
43k images x 2 views x mean/std are ~1.4 GB) and draws every batch there, with a generator on the GPU: a training
step then copies nothing from the host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from helpers.progress import tqdm

from helpers.data import Example, ImageDataset, TrainSet
from helpers.paths import atomic_folder

from .models import FrozenModels
from .vae import encode_images, scaling_factor


CACHE_FORMAT = 1
COMPLETE = "complete.json"


def _model_fingerprint(model_id: str, subfolder: str | None = None) -> dict:
    """A hub id stands for itself; a local folder is fingerprinted by its config and weight files."""
    folder = Path(model_id) / (subfolder or "")
    if not folder.is_dir():
        return {"id": model_id, "subfolder": subfolder}
    files = {}
    for f in sorted(folder.iterdir()):
        if f.suffix in (".json", ".safetensors", ".txt", ".bin"):
            stat = f.stat()
            files[f.name] = hashlib.sha1(f.read_bytes()).hexdigest() if f.suffix == ".json" else [stat.st_size,
                                                                                                   stat.st_mtime_ns]
    return {"id": os.path.basename(os.path.normpath(model_id)), "subfolder": subfolder, "files": files}


def _example_line(ex: Example) -> str:
    """What one cached image depends on: its file (name, size, modification time), key and captions."""
    stat = ex.path.stat()
    return f"{ex.path.name}|{stat.st_size}|{stat.st_mtime_ns}|{ex.key}|{json.dumps(ex.captions)}"


def _settings(*, text_encoder: str, vae: str, vae_subfolder: str | None, resolution: int,
              background: tuple[int, int, int], crop_to_content: bool) -> dict:
    """Everything but the images that the cached tensors depend on (JSON-ready)."""
    return {"format": CACHE_FORMAT, "text_encoder": _model_fingerprint(text_encoder),
            "vae": _model_fingerprint(vae, vae_subfolder), "resolution": resolution, "background": list(background),
            "crop_to_content": crop_to_content}


def _key(lines: list[str], settings: dict) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(f"{line}\n".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_key(train_set: TrainSet, *, text_encoder: str, vae: str, vae_subfolder: str | None, resolution: int,
              background: tuple[int, int, int], crop_to_content: bool = False) -> str:
    """A short hash of everything the cached tensors depend on."""
    return _key([_example_line(ex) for ex in train_set.examples],
                _settings(text_encoder=text_encoder, vae=vae, vae_subfolder=vae_subfolder, resolution=resolution,
                          background=background, crop_to_content=crop_to_content))


def _superset(train_set: TrainSet, cache_dir: Path, settings: dict, digests: list[str]
              ) -> tuple[Path, list[int]] | None:
    """A complete cache of the same data folder and settings that already holds every image of ``train_set`` (e.g.
    the whole data set's, when ``train_set`` leaves out the held-out keys): its folder and the row of each image."""
    settings = json.loads(json.dumps(settings))  # as it reads back from index.json
    for index in sorted(cache_dir.glob("*/index.json")):
        if not (index.parent / COMPLETE).exists():
            continue
        meta = json.loads(index.read_text())
        if meta.get("settings") != settings or meta.get("data_root") != str(train_set.root):
            continue
        row = {d: i for i, d in enumerate(meta.get("examples", []))}
        if all(d in row for d in digests):
            return index.parent, [row[d] for d in digests]
    return None


@dataclass
class LatentCache:
    """Cached latents and text embeddings, all in memory; ``batch`` draws a training batch from them."""

    path: Path
    keys: list[str]  # the monsterID_ACTION key of every image
    image_names: list[str]
    captions: list[str]  # distinct captions; captions[empty_index] == ""
    empty_index: int
    caption_ids: torch.Tensor  # [N, K] candidate caption ids per image, padded with -1
    caption_counts: torch.Tensor  # [N]
    mean: torch.Tensor  # [N, C, h, w] raw (unscaled) latent mean, float16
    std: torch.Tensor
    mean_flip: torch.Tensor
    std_flip: torch.Tensor
    text_emb: torch.Tensor  # [M, 77, D] float16
    scaling_factor: float
    meta: dict

    @property
    def n_images(self) -> int:
        return self.mean.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape[1:])  # type: ignore[return-value]

    @property
    def hidden_size(self) -> int:
        return self.text_emb.shape[-1]

    @property
    def device(self) -> torch.device:
        """Where the tensors live (and where :meth:`batch` draws: its generator must be on this device)."""
        return self.mean.device

    @property
    def nbytes(self) -> int:
        """Bytes of all the tensors (what :meth:`to` puts on a device)."""
        return sum(t.nbytes for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in ("caption_ids", "caption_counts", "mean", "std", "mean_flip",
                                                       "std_flip", "text_emb")}

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LatentCache:
        """A copy of the cache on ``device`` (e.g. the training GPU), whose :meth:`batch` then draws there.

        ``dtype``: the storage of latents and embeddings (default: as stored, float16; bfloat16 takes the same
        memory with less precision). Captions, keys and names stay Python lists; the original is left as it is.
        """
        moved = {name: t.to(device, dtype=dtype if dtype is not None and t.is_floating_point() else None)
                 for name, t in self._tensors().items()}
        return dataclasses.replace(self, **moved)

    def caption_embedding(self, caption: str) -> torch.Tensor:
        """The cached [77, D] embedding of one caption (KeyError if it is not in the cache)."""
        return self.text_emb[self.captions.index(caption)].float()

    def batch(self, indices: torch.Tensor, generator: torch.Generator, *, flip_p: float = 0.5,
              caption_dropout: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents sampled from the cached distributions, and the text embeddings of their captions.

        All randomness comes from ``generator`` in a fixed order (flip, noise, caption choice, dropout), so a
        batch is reproducible and a resumed run continues exactly. Everything is drawn on :attr:`device` (the
        generator must be on it); the batch is float32 there.
        """
        device = self.device
        indices = torch.as_tensor(indices, dtype=torch.long, device=device)
        b = len(indices)
        flip = torch.rand(b, generator=generator, device=device) < flip_p
        view = flip.view(-1, 1, 1, 1)
        mean = torch.where(view, self.mean_flip[indices], self.mean[indices]).float()
        std = torch.where(view, self.std_flip[indices], self.std[indices]).float()
        noise = torch.randn(mean.shape, generator=generator, device=device)
        latents = (mean + std * noise) * self.scaling_factor
        counts = self.caption_counts[indices]
        pick = (torch.rand(b, generator=generator, device=device) * counts).long().clamp_max(counts - 1)
        chosen = self.caption_ids[indices, pick]
        drop = torch.rand(b, generator=generator, device=device) < caption_dropout
        chosen = torch.where(drop, torch.full_like(chosen, self.empty_index), chosen)
        return latents, self.text_emb[chosen].float()

    def scaled_latent_std(self) -> float:
        """Std of the scaled latent means: the scaling factor exists to make this ≈ 1."""
        return float((self.mean.float() * self.scaling_factor).std())


def _encode_views(examples: list[Example], frozen: FrozenModels, resolution: int, background: tuple[int, int, int],
                  crop_to_content: bool, batch_size: int, num_workers: int) -> dict[str, torch.Tensor]:
    vae = frozen.vae
    device, dtype = vae.device, vae.dtype
    loader = DataLoader(ImageDataset(examples, resolution, background, crop_to_content), batch_size=batch_size,
                        num_workers=num_workers)
    out: dict[str, list[torch.Tensor]] = {"mean": [], "std": [], "mean_flip": [], "std_flip": []}
    with tqdm(total=len(examples), desc="VAE latents (image + flip)", unit="img") as bar:
        for images in loader:
            images = images.to(device=device, dtype=dtype)
            for suffix, view in (("", images), ("_flip", images.flip(-1))):
                mean, std = encode_images(vae, view)
                out["mean" + suffix].append(mean.to("cpu", torch.float16))
                out["std" + suffix].append(std.to("cpu", torch.float16))
            bar.update(len(images))
    return {k: torch.cat(v).contiguous() for k, v in out.items()}


def build_cache(train_set: TrainSet, frozen: FrozenModels, profile, *, batch_size: int = 32,
                num_workers: int | None = None, rebuild: bool = False) -> Path:
    """Encode every image (and its flip) with the VAE and every distinct caption with the text encoder, once.

    Images are prepared as the profile says (``resolution``, ``background``, ``crop_to_content``); all of these are
    part of the cache key.

    Returns the cache folder; when a complete cache with the same key exists it is reused (nothing is encoded).
    When another complete cache of the same data folder and settings already holds every image of ``train_set``
    (the whole data set's cache, and ``train_set`` leaves out the held-out keys), its rows are copied instead of
    encoding the images again (``rebuild=True`` encodes anyway). The folder is written under a temporary name and
    renamed when complete, so an interrupted build never leaves a cache that looks finished.
    """
    lines = [_example_line(ex) for ex in train_set.examples]
    settings = _settings(text_encoder=profile.text_encoder, vae=profile.vae, vae_subfolder=profile.vae_subfolder,
                         resolution=profile.resolution, background=profile.background,
                         crop_to_content=profile.crop_to_content)
    key = _key(lines, settings)
    folder = profile.cache_dir / f"{train_set.root.name}-{profile.resolution}px-{key}"
    if (folder / COMPLETE).exists() and not rebuild:
        print(f"Reusing the cache in {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _building(folder):  # two kernels building one cache: the second waits, then reuses the first's
        if (folder / COMPLETE).exists() and not rebuild:
            print(f"Reusing the cache in {folder} (another process built it while this one waited)")
            return folder
        _write_cache(folder, train_set, frozen, profile, key, settings, lines, batch_size=batch_size,
                     num_workers=num_workers, rebuild=rebuild)
    return folder


@contextmanager
def _building(folder: Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` (beside the cache, never in the data folder), saying so when another process has it."""
    lock = FileLock(f"{folder}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another process is building {folder.name}: waiting for it (it is reused when complete)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _write_cache(folder: Path, train_set: TrainSet, frozen: FrozenModels, profile, key: str, settings: dict,
                 lines: list[str], *, batch_size: int, num_workers: int | None, rebuild: bool) -> None:
    """Encode (or copy from a superset cache) and write ``folder`` atomically: the body of :func:`build_cache`."""
    if num_workers is None:
        num_workers = 0 if len(train_set.examples) < 2000 else min(4, os.cpu_count() or 1)
    paths = [ex.path for ex in train_set.examples]
    captions = train_set.distinct_captions()
    index = {c: i for i, c in enumerate(captions)}
    digests = [hashlib.sha256(line.encode()).hexdigest()[:16] for line in lines]
    source = None if rebuild else _superset(train_set, profile.cache_dir, settings, digests)
    if source is not None:  # e.g. the training split of a data set whose whole cache exists: take its rows
        full = load_cache(source[0])
        rows = torch.tensor(source[1], dtype=torch.long)
        latents = {k: getattr(full, k)[rows].contiguous() for k in ("mean", "std", "mean_flip", "std_flip")}
        row_of = {c: i for i, c in enumerate(full.captions)}
        text_emb = full.text_emb[torch.tensor([row_of[c] for c in captions])]
        print(f"Taking {len(paths)} of the {full.n_images} images (and their captions) of the cache {source[0]}: "
              "nothing to encode")
    else:
        latents = _encode_views(train_set.examples, frozen, profile.resolution, profile.background,
                                profile.crop_to_content, batch_size, num_workers)
        text_emb = frozen.text_encoder.encode(captions, batch_size=64, progress=True).to("cpu", torch.float16)
    k = max(len(ex.captions) for ex in train_set.examples)
    caption_ids = torch.full((len(paths), k), -1, dtype=torch.long)
    for i, ex in enumerate(train_set.examples):
        caption_ids[i, :len(ex.captions)] = torch.tensor([index[c] for c in ex.captions])
    meta = {
        "format": CACHE_FORMAT, "key": key, "data_root": str(train_set.root), "data_format": train_set.format,
        "text_encoder": profile.text_encoder, "vae": profile.vae, "vae_subfolder": profile.vae_subfolder,
        "resolution": profile.resolution, "background": list(profile.background),
        "crop_to_content": profile.crop_to_content, "scaling_factor": scaling_factor(frozen.vae),
        "keys": [ex.key for ex in train_set.examples], "image_names": [ex.path.name for ex in train_set.examples],
        "captions": captions, "empty_index": index[""],
        "settings": settings, "examples": digests,
    }
    with atomic_folder(folder, replace=True) as tmp:
        save_file(latents, str(tmp / "latents.safetensors"))
        save_file({"text_emb": text_emb.contiguous(), "caption_ids": caption_ids}, str(tmp / "text.safetensors"))
        (tmp / "index.json").write_text(json.dumps(meta))
        (tmp / COMPLETE).write_text(json.dumps({"n_images": len(paths), "n_captions": len(captions)}))
    print(f"Cached {len(paths)} images (+ flips) and {len(captions)} captions in {folder}")


def load_cache(path: str | Path) -> LatentCache:
    """Load a cache folder written by :func:`build_cache` into memory."""
    path = Path(path)
    if not (path / COMPLETE).exists():
        raise FileNotFoundError(f"{path} is not a complete latent cache (no {COMPLETE}); build it with build_cache().")
    meta = json.loads((path / "index.json").read_text())
    lat = load_file(str(path / "latents.safetensors"))
    text = load_file(str(path / "text.safetensors"))
    ids = text["caption_ids"]
    return LatentCache(
        path=path, keys=meta["keys"], image_names=meta["image_names"], captions=meta["captions"],
        empty_index=meta["empty_index"], caption_ids=ids, caption_counts=(ids >= 0).sum(1),
        mean=lat["mean"], std=lat["std"], mean_flip=lat["mean_flip"], std_flip=lat["std_flip"],
        text_emb=text["text_emb"], scaling_factor=float(meta["scaling_factor"]), meta=meta)
