"""Reading one image file for training and scoring: open with checks, any mode to RGB, crop/pad/resize, tensors.

:func:`load_image` (used for training *and* scoring): any mode → RGB with alpha composited on the background →
optional crop to content → pad to square (never distort) → resize (see :func:`resize_square`). A file that cannot
be used raises :class:`ImageFileError` (a :class:`~helpers.data.errors.DataError`) naming it; its ``kind`` is the data
check's problem kind (``empty_file``, ``unreadable``, ``too_large``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helpers.progress import tqdm

from .errors import DataError
from .records import Example, TrainSet

WHITE = (255, 255, 255)  # THE background: alpha is composited on it, crop_to_content crops it away
MAX_PIXELS = 4096 * 4096  # larger images are skipped (a sprite data set has no business holding them)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageFileError(DataError):
    """An image file that cannot be used; ``kind`` is the data check's problem kind."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def open_image(path: Path) -> Image.Image:
    """Open an image lazily; :class:`ImageFileError` naming the file when it is empty, not an image or too large."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageFileError(f"{path}: cannot access the file ({err}). Check that it exists and is readable.",
                        "unreadable") from err
    if size == 0:
        raise ImageFileError(f"{path}: the file is empty (0 bytes). Delete it or copy it again.", "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageFileError(f"{path}: image too large ({err}). Delete it or shrink it below "
                        f"{MAX_PIXELS} pixels.", "too_large") from err
    except Exception as err:  # UnidentifiedImageError, OSError, SyntaxError...
        raise ImageFileError(f"{path}: not a readable image ({type(err).__name__}: {err}). "
                        "Delete it or replace it with a valid PNG.", "unreadable") from err
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise ImageFileError(f"{path}: image too large ({w}x{h} > {MAX_PIXELS} pixels). "
                        "Delete it or shrink it; sprites are a few hundred pixels wide.", "too_large")
    return im


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    """16-bit (I;16*) or 32-bit integer (I) greyscale → 8-bit L by scaling 0..65535 → 0..255 (not clipping)."""
    arr = np.asarray(im).astype(np.float64)
    return Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL image → RGB: alpha (RGBA, LA, PA, P or L/RGB with a transparency key) composited on ``background``;
    16-bit greyscale scaled to 8 bits; float (F) read as 0..255; CMYK and others through PIL's conversion."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES:
        im = _to_8bit_grey(im)
        mode = "L"
    elif mode == "F":
        im = Image.fromarray(np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode in ALPHA_MODES or mode == "P" or "transparency" in im.info:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im if mode == "RGB" else im.convert("RGB")


def content_bbox(img: Image.Image, background: tuple[int, int, int] = WHITE,
                 tolerance: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the RGB pixels that differ from ``background`` by more than
    ``tolerance`` in some channel; None when the image is all background."""
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    diff = np.abs(arr - np.asarray(background, dtype=np.int16)).max(axis=2) > tolerance
    rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def pad_to_square(img: Image.Image, background: tuple[int, int, int] = WHITE, margin: int = 0) -> Image.Image:
    """Centre ``img`` on a square canvas of ``background`` (side = longest side + 2 * margin); never distorts."""
    w, h = img.size
    side = max(w, h) + 2 * margin
    if side == w == h:
        return img
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def crop_content(img: Image.Image, background: tuple[int, int, int] = WHITE, margin: float = 0.04,
                 tolerance: int = 8) -> Image.Image:
    """Crop an RGB image to its non-background bounding box and pad it to a square with ``margin`` (a fraction of
    the box's longest side, at least 1 px) of background around it. All-background images come back padded only."""
    box = content_bbox(img, background, tolerance)
    if box is None:
        return pad_to_square(img, background)
    cropped = img.crop(box)
    pad = max(1, round(margin * max(cropped.size))) if margin > 0 else 0
    return pad_to_square(cropped, background, pad)


_RESAMPLE = {"nearest": Image.NEAREST, "box": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS}


def resize_square(img: Image.Image, size: int, resample: str = "auto") -> Image.Image:
    """Resize a square image to ``size`` x ``size``.

    ``"auto"`` (default): unchanged when already that size; NEAREST for an integer upscale (64 → 256 keeps pixel
    art crisp and exact); LANCZOS with ``reducing_gap=3`` for a downscale (anti-aliased, like the course's
    resizing; the reducing gap makes very large images fast at no visible cost); BICUBIC for a non-integer
    upscale. Or name one: "nearest", "box", "bilinear", "bicubic", "lanczos".
    """
    if img.width != img.height:
        img = pad_to_square(img)
    side = img.width
    if side == size and resample in ("auto", "nearest"):
        return img
    if resample == "auto":
        if size > side:
            method = Image.NEAREST if size % side == 0 else Image.BICUBIC
        else:
            return img.resize((size, size), Image.LANCZOS, reducing_gap=3.0)
    else:
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be 'auto' or one of {sorted(_RESAMPLE)}, not {resample!r}")
        method = _RESAMPLE[resample]
    return img.resize((size, size), method)


def load_image(path: str | Path, size: int | None, background: tuple[int, int, int] = WHITE,
               crop_to_content: bool = False, *, resample: str = "auto", margin: float = 0.04) -> Image.Image:
    """Read one image as RGB ``size`` x ``size`` (used for training and scoring alike).

    Steps: decode any mode (:func:`to_rgb`: alpha composited on ``background``, 16-bit scaled, palette through
    RGBA, CMYK converted) → optional crop to the non-background bounding box with a ``margin`` → pad to a square
    with ``background`` (never distort) → :func:`resize_square` (``size=None``: no resize). Raises DataError naming
    the file when it cannot be read (empty, not an image, truncated, over :data:`MAX_PIXELS`).
    """
    path = Path(path)
    im = open_image(path)
    try:
        with im:
            im.load()
            rgb = to_rgb(im, background)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: the image cannot be decoded ({type(err).__name__}: {err}); it is probably "
                        "truncated or corrupt. Delete it or copy it again.") from err
    if crop_to_content:
        rgb = crop_content(rgb, background, margin)
    else:
        rgb = pad_to_square(rgb, background)
    return rgb if size is None else resize_square(rgb, size, resample)


def pil_to_tensor(img: Image.Image):
    """RGB PIL image → float32 tensor [3,H,W] in [-1, 1]."""
    arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).div_(127.5).sub_(1.0)


def tensor_to_pil(t) -> Image.Image:
    """Tensor [3,H,W] (or [1,3,H,W]) in [-1, 1] → RGB PIL image (values outside the range are clamped)."""
    t = t.detach().float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"tensor_to_pil expects [3,H,W] in [-1,1], got shape {tuple(t.shape)}")
    arr = ((t.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


class ImageDataset:
    """A picklable map-style dataset (works with DataLoader workers): item ``i`` is the tensor [3,size,size] in
    [-1, 1] of ``examples[i]``, loaded with :func:`load_image`."""

    def __init__(self, examples: Sequence[Example] | TrainSet, size: int, background: tuple[int, int, int] = WHITE,
                 crop_to_content: bool = False):
        self.paths = [e.path for e in getattr(examples, "examples", examples)]  # a TrainSet or its examples
        self.size, self.background, self.crop = size, tuple(background), crop_to_content

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return pil_to_tensor(load_image(self.paths[i], self.size, self.background, self.crop))


def load_images(train_set: TrainSet, resolution: int, background: tuple[int, int, int] = WHITE,
                crop_to_content: bool = False, *, progress: bool = True) -> tuple[torch.Tensor, list[str]]:
    """Every training image of ``train_set`` as uint8 ``[N,3,R,R]`` + their keys, prepared like training images
    (:func:`load_image`); what the demo VAE and the judges train on."""
    if not train_set.examples:
        raise DataError(f"{train_set.root} has no training images (see data/README.md).")
    arrays, keys = [], []
    examples = train_set.examples
    for ex in tqdm(examples, desc="loading images", leave=False, disable=not progress or len(examples) < 500):
        img = load_image(ex.path, resolution, background=background, crop_to_content=crop_to_content)
        arrays.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
        keys.append(ex.key)
    return torch.stack(arrays), keys


# --------------------------------------------------------------------------------------------------- augmentations
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` ``[B,3,H,W]`` blurred with a Gaussian of std ``sigma`` pixels (edges replicated; ``sigma <= 0``: ``x``)."""
    if sigma <= 0:
        return x
    half = int(math.ceil(3 * sigma))
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).repeat(3, 1, 1)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), k[:, :, None, :], groups=3)
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), k[:, :, :, None], groups=3)


def random_flip_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """``x`` ``[B,3,H,W]`` in [-1, 1], each image flipped left-right with probability 1/2 and shifted by up to
    ``max_shift`` px each way (white comes in); drawn from ``gen`` (the flips, then the shifts)."""
    n, _, h, w = x.shape
    x = torch.where((torch.rand(n, generator=gen) < 0.5)[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (max_shift,) * 4, value=1.0)
    dy, dx = torch.randint(2 * max_shift + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])

