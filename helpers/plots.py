"""Pictures: image grids (PNG files) and small matplotlib figures for the notebooks.

- :func:`make_grid` pastes images into one PIL image (optionally with a label under each tile); training sample
  grids ``samples/step_<step>.png`` are written with it.
- :func:`show_images` draws images with wrapped captions in a matplotlib Figure for notebooks;
  :func:`show_image_table` draws rows of images with a label per row and per column (e.g. guidance x prompt).
- :func:`bar_counts` and :func:`histogram` are the two charts of the data notebook.

Every function accepts PIL images, ``uint8`` numpy arrays ``[H,W,3|4]`` / ``[H,W]`` or torch tensors ``[3,H,W]``
in ``[-1, 1]`` (the workbook's convention). Figures are created headless-safe: they work with the Agg backend and
are *closed* in pyplot before being returned, so a notebook cell shows each one exactly once — as its last
expression (or with ``display(fig)``); save with ``fig.savefig(path)``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from helpers.data.images import WHITE


def evenly_spaced(items: Sequence[Any], k: int = 4) -> list[Any]:
    """At most ``k`` items of ``items``, evenly spread, always with the first and the last (e.g. which sample grids
    or checkpoints of a run to show): ``evenly_spaced(range(10), 4) == [0, 3, 6, 9]``."""
    items = list(items)
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    if len(items) <= k:
        return items
    if k == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def balanced_columns(n: int, max_cols: int = 8) -> int:
    """How many columns to lay ``n`` panes out in: at most ``max_cols`` and at least about half of it, with the
    fewest empty panes in the last row (ties: more columns). ``balanced_columns(16, 6) == 4`` (4 x 4, none empty)."""
    if n < 1 or max_cols < 1:
        raise ValueError(f"need n >= 1 and max_cols >= 1, not {n}, {max_cols}")
    if n <= max_cols:
        return n
    low = max(1, -(-max_cols // 2))
    return min(range(max_cols, low - 1, -1), key=lambda c: (-n) % c)


def to_pil(image: Any, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """One image as an RGB PIL image.

    PIL images are converted to RGB (alpha composited on ``background``); numpy arrays must be ``uint8`` (or float
    in [0, 1]); torch tensors ``[3,H,W]`` (or ``[1,3,H,W]``) are read as the workbook's ``[-1, 1]`` range.
    """
    if isinstance(image, Image.Image):
        img = image
    elif hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, without importing torch
        t = image.detach().cpu().float()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a tensor [3,H,W] in [-1,1], got shape {tuple(t.shape)}")
        arr = ((t.clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8).transpose(1, 2, 0)
        img = Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                arr = (np.clip(arr, 0.0, 1.0) * 255).round()
            arr = arr.astype(np.uint8)
        img = Image.fromarray(arr)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    try:
        return font.getlength(text)
    except Exception:
        box = font.getbbox(text)
        return box[2] - box[0]


def wrap_label(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap of ``text`` to ``width`` pixels; long words are split, the overflow ends in '...'."""
    words = str(text).split()
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if _text_width(font, candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while _text_width(font, current) > width and len(current) > 1:  # split a word that is too long alone
            cut = len(current) - 1
            while cut > 1 and _text_width(font, current[:cut]) > width:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _text_width(font, last + "...") > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + "..."]
    return lines


def make_grid(images: Sequence[Any], ncols: int = 8, labels: Sequence[str] | None = None, pad: int = 2,
              background: tuple[int, int, int] = WHITE, *, max_label_lines: int = 3,
              font_size: int | None = None, text_color: tuple[int, int, int] = (0, 0, 0),
              min_tile: int = 0) -> Image.Image:
    """Paste ``images`` into one RGB image, ``ncols`` per row, with an optional label under each tile.

    Tiles keep their size (cells are as large as the largest image; smaller ones are centred), except that tiles
    smaller than ``min_tile`` pixels are enlarged by a whole factor (nearest neighbour: pixel art stays crisp), so a
    64 px sprite has room for its label. Labels use PIL's
    default font (``font_size`` defaults to about a twelfth of the tile width, 9-16 px), word-wrapped to the tile
    width and cut after ``max_label_lines`` lines with '...'. Alpha is composited on ``background``.
    """
    tiles = [_enlarged(to_pil(im, background), min_tile) for im in images]
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"make_grid got {len(tiles)} images but {len(labels)} labels")
    ncols = max(1, min(ncols, len(tiles)))
    nrows = (len(tiles) + ncols - 1) // ncols
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)

    label_lines: list[list[str]] = []
    line_h = 0
    font = None
    if labels is not None:
        font = _font(font_size or int(min(16, max(9, tw // 12))))
        box = font.getbbox("Ag")
        line_h = int(box[3] - box[1]) + 3
        label_lines = [wrap_label(lab or "", font, tw, max_label_lines) for lab in labels]
    label_h = line_h * max((len(ls) for ls in label_lines), default=0)
    if labels is not None and label_h:
        label_h += 2

    cell_w, cell_h = tw + pad, th + label_h + pad
    grid = Image.new("RGB", (ncols * cell_w + pad, nrows * cell_h + pad), background)
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * cell_w, pad + r * cell_h
        grid.paste(tile, (x0 + (tw - tile.width) // 2, y0 + (th - tile.height) // 2))
        if label_lines:
            for j, line in enumerate(label_lines[i]):
                x = x0 + max(0, (tw - _text_width(font, line)) / 2)
                draw.text((x, y0 + th + 2 + j * line_h), line, fill=text_color, font=font)
    return grid


def _enlarged(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` scaled up by the smallest whole factor that makes its longer side at least ``min_side``."""
    factor = -(-min_side // max(image.size)) if min_side > max(image.size) else 1
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure that a notebook shows exactly once (as a cell's result or with ``display(fig)``)."""
    fig = plt.figure(figsize=figsize)
    plt.close(fig)  # shown once: as a cell's result (or display(fig)), never again by the inline backend
    return fig


def show_images(images: Sequence[Any], captions: Sequence[str] | None = None, ncols: int = 8, size: float = 2.0,
                title: str | None = None, *, caption_chars: int | None = None, fontsize: float = 8.0,
                max_lines: int = 6):
    """A matplotlib Figure with ``images`` in a grid, a wrapped caption under each and an optional title.

    ``size`` is the side of one image in inches. Pixel art stays crisp (nearest-neighbour display). Captions wrap
    at ``caption_chars`` characters (default: what fits ``size`` inches) and are cut after ``max_lines`` lines.
    """
    pil = [to_pil(im) for im in images]
    if not pil:
        raise ValueError("show_images needs at least one image")
    if captions is not None and len(captions) != len(pil):
        raise ValueError(f"show_images got {len(pil)} images but {len(captions)} captions")
    ncols = max(1, min(ncols, len(pil)))
    nrows = (len(pil) + ncols - 1) // ncols
    chars = caption_chars or max(8, int(size * 72 / (fontsize * 0.6)))
    wrapped = None
    caption_lines = 0
    if captions is not None:
        wrapped = [textwrap.wrap(str(c), chars, max_lines=max_lines, placeholder="...") or [""] for c in captions]
        caption_lines = max(len(w) for w in wrapped)
    gap, margin = 0.06, 0.05  # inches
    cap_h = (caption_lines * fontsize * 1.3 + 4) / 72 if caption_lines else 0.0  # inches under each image
    title_h = (fontsize + 3) * 2.2 / 72 if title else 0.0
    row_h = size + cap_h + gap
    width = 2 * margin + ncols * size + (ncols - 1) * gap
    height = 2 * margin + title_h + nrows * row_h - gap
    fig = new_figure((width, height))
    for i, img in enumerate(pil):
        r, c = divmod(i, ncols)
        left = margin + c * (size + gap)
        bottom = height - margin - title_h - r * row_h - size
        ax = fig.add_axes((left / width, bottom / height, size / width, size / height))
        ax.set_axis_off()
        ax.imshow(np.asarray(img), interpolation="nearest")
        if wrapped is not None:
            ax.text(0.5, -0.01, "\n".join(wrapped[i]), fontsize=fontsize, ha="center", va="top",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=fontsize + 3, y=1 - margin / height, va="top")
    return fig


def show_image_table(rows: Sequence[Sequence[Any]], row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
                     size: float = 1.6, title: str | None = None, *, fontsize: float = 8.0, label_width: float = 1.1,
                     max_lines: int = 5):
    """A matplotlib Figure of images in a table: one row per entry of ``rows`` (all the same length), its label on
    the left (``row_labels``: e.g. the guidance scale or checkpoint), and a wrapped label above each column
    (``col_labels``: e.g. the prompts). Every cell holds an image: no empty panes."""
    rows = [[to_pil(im) for im in row] for row in rows]
    ncols = len(rows[0]) if rows else 0
    if not ncols or any(len(r) != ncols for r in rows) or len(row_labels) != len(rows):
        raise ValueError(f"show_image_table needs rows of equal, non-zero length and one label per row "
                         f"(got {[len(r) for r in rows]} and {len(row_labels)} labels)")
    if col_labels is not None and len(col_labels) != ncols:
        raise ValueError(f"show_image_table got {ncols} columns but {len(col_labels)} column labels")
    chars = max(8, int(size * 72 / (fontsize * 0.6)))
    heads = [textwrap.wrap(str(c), chars, max_lines=max_lines, placeholder="...") for c in (col_labels or [])]
    head_h = (max((len(h) for h in heads), default=0) * fontsize * 1.3 + 6) / 72 if col_labels else 0.0
    gap, margin = 0.06, 0.05
    title_h = (fontsize + 3) * 2.2 / 72 if title else 0.0
    width = 2 * margin + label_width + ncols * size + (ncols - 1) * gap
    height = 2 * margin + title_h + head_h + len(rows) * (size + gap) - gap
    fig = new_figure((width, height))
    for r, row in enumerate(rows):
        bottom = height - margin - title_h - head_h - r * (size + gap) - size
        fig.text((margin + label_width - 0.08) / width, (bottom + size / 2) / height, str(row_labels[r]),
                 ha="right", va="center", fontsize=fontsize + 1)
        for c, img in enumerate(row):
            left = margin + label_width + c * (size + gap)
            ax = fig.add_axes((left / width, bottom / height, size / width, size / height))
            ax.set_axis_off()
            ax.imshow(np.asarray(img), interpolation="nearest")
            if r == 0 and col_labels is not None:
                ax.text(0.5, 1.02, "\n".join(heads[c]), fontsize=fontsize, ha="center", va="bottom",
                        transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=fontsize + 3, y=1 - margin / height, va="top")
    return fig


def bar_counts(counts: Mapping[Any, float] | Iterable[tuple[Any, float]], title: str = "", *, top: int | None = 30,
               xlabel: str = "count", sort: bool = True):
    """A horizontal bar chart of ``counts`` (a Counter/dict or (label, count) pairs), largest first.

    Only the ``top`` largest bars are drawn (None: all); the title says how many were left out.
    """
    items = list(counts.items()) if isinstance(counts, Mapping) else list(counts)
    if sort:
        items.sort(key=lambda kv: (-kv[1], str(kv[0])))
    left_out = 0
    if top is not None and len(items) > top:
        left_out = len(items) - top
        items = items[:top]
    labels = [str(k) for k, _ in items]
    values = [v for _, v in items]
    fig = new_figure((7, 0.6 + 0.28 * max(1, len(items))))
    ax = fig.subplots()
    ax.barh(range(len(items)), values, color="tab:blue")
    ax.set_yticks(range(len(items)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:g}", va="center", fontsize=7)
    full_title = title + (f" (top {len(items)}; {left_out} more not shown)" if left_out else "")
    if full_title:
        ax.set_title(full_title)
    fig.tight_layout()
    return fig


def histogram(values: Iterable[float], title: str = "", vline: float | None = None, vline_label: str | None = None,
              *, bins: int | Sequence[float] = 30, xlabel: str = "", log: bool = False):
    """A histogram of ``values`` with an optional vertical marker line (e.g. CLIP's 77-token limit)."""
    vals = np.asarray(list(values), dtype=float)
    fig = new_figure((7, 3.2))
    ax = fig.subplots()
    if vals.size:
        ax.hist(vals, bins=bins, color="tab:blue", log=log)
    if vline is not None:
        ax.axvline(vline, color="tab:red", linestyle="--", label=vline_label)
        if vline_label:
            ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(f"{title} (n={vals.size})")
    fig.tight_layout()
    return fig
