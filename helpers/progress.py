"""Progress bars: tqdm's widget in a live notebook, plain text when a chapter runs headless.

Every long loop of the workbook draws its bar with :data:`tqdm` from here. In JupyterLab that is ``tqdm.auto``'s
widget. A headless run (``make run``, the tests: :mod:`helpers.notebooks` sets :data:`HEADLESS_ENV` for its kernels)
gets the text bar instead, because a saved notebook keeps only a widget's first frame — the executed chapters would
show every bar stuck at 0 %. The text bar's last frame is what the saved copy shows (``TQDM_MININTERVAL`` keeps the
frames few).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as _widget_tqdm
from tqdm.std import tqdm as _text_tqdm

__all__ = ["tqdm", "HEADLESS_ENV", "HEADLESS_KERNEL_ENV"]

HEADLESS_ENV = "WORKBOOK_HEADLESS"
#: What a headless runner sets for its kernels: text bars, redrawn at most every 5 s.
HEADLESS_KERNEL_ENV = {HEADLESS_ENV: "1", "TQDM_MININTERVAL": "5"}

tqdm = _text_tqdm if os.environ.get(HEADLESS_ENV) else _widget_tqdm
