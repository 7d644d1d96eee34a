"""The training callback of chapter 04: a loss curve redrawn in place, and each sample grid shown as it comes."""

from __future__ import annotations

import io
import os

from IPython import get_ipython
from IPython.display import Image, Markdown, display
from matplotlib.figure import Figure

from .loop import TrainEvent
from .run_folder import read_metrics

__all__ = ["LiveLossPlot"]


class LiveLossPlot:
    """A training callback for notebooks: a loss curve redrawn in place, and each sample grid shown as it comes.

    >>> result = train(config, ..., callback=LiveLossPlot(every=20))

    ``every``: redraw after this many optimizer steps. ``history``: a resumed run first loads the curve of its
    ``metrics.jsonl`` (so the plot shows the whole run). Outside a notebook (IPython) it draws nothing (the progress bar and
    metrics.jsonl remain).
    """

    def __init__(self, every: int = 20, show_samples: bool = True, figsize: tuple[float, float] = (7.0, 3.0),
                 log_scale: bool = True, sample_width: int | None = None, history: bool = True) -> None:
        self.every = max(1, int(every))
        self.history = history
        self.show_samples = show_samples
        self.figsize = figsize
        self.log_scale = log_scale
        self.sample_width = sample_width
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.lr: list[float] = []
        self._handle = None
        self._last_draw = -1
        self.max_steps = None

    def __call__(self, event: TrainEvent) -> None:
        self.max_steps = event.max_steps
        if event.kind == "start" and self.history and event.metrics.get("resumed_from") and not self.steps:
            self.load_history(event.metrics["run_dir"])
            if self.steps:
                self.draw()
        elif event.kind == "log":
            self.steps.append(event.step)
            self.loss.append(event.metrics["loss"])
            self.lr.append(event.metrics["lr"])
            if event.step - self._last_draw >= self.every or event.step == event.max_steps:
                self.draw()
        elif event.kind == "sample" and self.show_samples and event.image is not None:
            self._display_image(event.image, f"samples at step {event.step}")
        elif event.kind == "end" and self.steps:
            self.draw()

    def load_history(self, run_dir: str | os.PathLike) -> LiveLossPlot:
        """Start from the curve of ``metrics.jsonl`` (a resumed run shows its whole history)."""
        for rec in read_metrics(run_dir):
            self.steps.append(rec["step"])
            self.loss.append(rec["loss"])
            self.lr.append(rec.get("lr", float("nan")))
        return self

    def figure(self):
        fig = Figure(figsize=self.figsize)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(self.steps, self.loss, lw=1, color="tab:blue", label="loss")
        if len(self.loss) >= 5:
            k = max(2, len(self.loss) // 20)
            smooth = [sum(self.loss[max(0, i - k + 1):i + 1]) / len(self.loss[max(0, i - k + 1):i + 1])
                      for i in range(len(self.loss))]
            ax.plot(self.steps, smooth, lw=2, color="tab:orange", label=f"moving mean ({k} logs)")
        if self.log_scale and self.loss and min(self.loss) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (min-SNR weighted MSE)")
        if self.max_steps:
            ax.set_xlim(0, self.max_steps)
        ax2 = ax.twinx()
        ax2.plot(self.steps, self.lr, lw=1, ls="--", color="tab:gray")
        ax2.set_ylabel("learning rate", color="tab:gray")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        self._last_draw = self.steps[-1] if self.steps else 0
        if get_ipython() is None:
            return
        png = _figure_png(self.figure())
        if self._handle is None:
            self._handle = display(Image(data=png), display_id=True)
        else:
            self._handle.update(Image(data=png))

    def _display_image(self, image, title: str) -> None:
        if get_ipython() is None:
            return
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        display(Markdown(f"**{title}**"))
        display(Image(data=buf.getvalue(), width=self.sample_width))


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
