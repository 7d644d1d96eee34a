from __future__ import annotations

from collections import Counter

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from helpers import plots
from helpers.plots import bar_counts, histogram, make_grid, show_images, to_pil, wrap_label, _font


def _solid(color, size=(16, 16), mode="RGB"):
    return Image.new(mode, size, color)


def test_make_grid_layout_and_pixels():
    imgs = [_solid((255, 0, 0)), _solid((0, 255, 0)), _solid((0, 0, 255))]
    grid = make_grid(imgs, ncols=2, pad=2)
    assert grid.mode == "RGB"
    assert grid.size == (2 * (16 + 2) + 2, 2 * (16 + 2) + 2)
    assert grid.getpixel((2, 2)) == (255, 0, 0)
    assert grid.getpixel((2 + 18, 2)) == (0, 255, 0)
    assert grid.getpixel((2, 2 + 18)) == (0, 0, 255)
    assert grid.getpixel((2 + 18 + 5, 2 + 18 + 5)) == (255, 255, 255)  # empty cell is background
    assert grid.getpixel((0, 0)) == (255, 255, 255)  # padding


def test_make_grid_composites_alpha_and_centres_smaller_tiles():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    big = _solid((0, 0, 0), size=(16, 16))
    grid = make_grid([rgba, big], ncols=2, pad=0, background=(255, 255, 255))
    assert grid.size == (32, 16)
    r, g, b = grid.getpixel((8, 8))  # centre of the first cell: the 8px tile is centred at (4..12)
    assert r == 255 and 125 <= g <= 128 and g == b
    assert grid.getpixel((1, 1)) == (255, 255, 255)


def test_make_grid_labels_are_drawn_wrapped_and_truncated():
    imgs = [_solid((200, 200, 200), size=(64, 64)) for _ in range(2)]
    labels = ["a short one", "a very long label " * 20]
    grid = make_grid(imgs, ncols=2, labels=labels, max_label_lines=3)
    assert grid.height > 64 + 4
    below = np.asarray(grid)[66:, :, :]
    assert (below < 128).any()  # text pixels exist under the tiles
    font = _font(9)
    lines = wrap_label(labels[1], font, 64, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 64 for line in lines)
    with pytest.raises(ValueError, match="labels"):
        make_grid(imgs, labels=["one"])


def test_wrap_label_splits_a_long_word():
    font = _font(10)
    lines = wrap_label("x" * 80, font, 40, 10)
    assert len(lines) > 1 and "".join(lines) == "x" * 80


def test_to_pil_accepts_tensors_and_arrays():
    t = torch.full((3, 4, 5), -1.0)
    t[0] = 1.0
    img = to_pil(t)
    assert img.size == (5, 4) and img.getpixel((0, 0)) == (255, 0, 0)
    assert to_pil(np.zeros((4, 4, 3), np.uint8)).getpixel((0, 0)) == (0, 0, 0)
    assert to_pil(np.ones((4, 4), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    grid = make_grid([t, t], ncols=2, pad=0)
    assert grid.size == (10, 4)


def test_show_images_returns_figure_with_captions_and_title():
    imgs = [_solid((i * 40, 0, 0)) for i in range(5)]
    fig = show_images(imgs, captions=[f"caption number {i} " * 5 for i in range(5)], ncols=3, size=1.5,
                      title="Five")
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.images]
    assert len(visible) == 5 == len(fig.axes)
    caption = visible[0].texts[0].get_text()
    assert caption.startswith("caption number 0") and "\n" in caption  # wrapped
    assert fig._suptitle.get_text() == "Five"
    fig.canvas.draw()  # renders headless with Agg


def test_show_images_checks_caption_count():
    with pytest.raises(ValueError, match="captions"):
        show_images([_solid((0, 0, 0))], captions=["a", "b"])


def test_bar_counts_and_histogram():
    fig = bar_counts(Counter({"walk": 5, "run": 9, "idle": 1}), "actions", top=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["run", "walk"]
    assert "1 more not shown" in ax.get_title()
    fig2 = histogram([1, 2, 3, 80], "tokens", vline=77, vline_label="CLIP limit")
    ax2 = fig2.axes[0]
    assert "n=4" in ax2.get_title()
    assert ax2.get_legend().get_texts()[0].get_text() == "CLIP limit"
    fig.canvas.draw()
    fig2.canvas.draw()


def test_evenly_spaced_keeps_first_and_last():
    from helpers.plots import evenly_spaced

    assert evenly_spaced(range(10), 4) == [0, 3, 6, 9]
    assert evenly_spaced([5, 6], 4) == [5, 6]
    assert evenly_spaced(range(5), 4) == [0, 1, 3, 4]
    assert evenly_spaced(range(7), 1) == [6]
    with pytest.raises(ValueError):
        evenly_spaced(range(3), 0)


def test_balanced_columns_leave_no_pane_empty_when_the_count_allows():
    assert plots.balanced_columns(16, 6) == 4  # 4 x 4 rather than 6 + 6 + 4 with two empty panes
    assert plots.balanced_columns(15, 6) == 5 and plots.balanced_columns(5, 6) == 5
    assert (-13) % plots.balanced_columns(13, 6) <= 2  # a prime: as few empty panes as half the width allows
    with pytest.raises(ValueError):
        plots.balanced_columns(0, 6)


def test_small_tiles_are_enlarged_so_a_label_fits():
    tiles = [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    grid = plots.make_grid(tiles, ncols=2, pad=0, min_tile=128)
    assert grid.width == 2 * 128  # 64 px sprites drawn at 2x (nearest)
    assert plots.make_grid(tiles, ncols=2, pad=0).width == 2 * 64


def test_an_image_table_has_a_label_per_row_and_per_column_and_no_empty_pane():
    rows = [[np.full((8, 8, 3), 40 * (r + c), np.uint8) for c in range(3)] for r in range(2)]
    fig = plots.show_image_table(rows, ["guidance 1.0", "guidance 3.0"], ["a red slime", "a blue bat", "x"])
    assert len(fig.axes) == 6
    texts = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]
    assert {"guidance 1.0", "guidance 3.0", "a red slime", "a blue bat", "x"} <= set(texts)
    with pytest.raises(ValueError):
        plots.show_image_table([rows[0], rows[1][:2]], ["a", "b"])
