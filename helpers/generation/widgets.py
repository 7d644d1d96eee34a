"""Interactive widgets (ipywidgets) for generation; the logic lives in plain classes testable without a browser.

- :class:`CheckpointPicker`: a Dropdown of a run's ``ckpt/unet_<step>`` folders (sorted by step) + Refresh.
- :class:`GenerationPanel`: picker, prompt, seed, steps, guidance slider, Generate button and the image.
  Moving the guidance slider regenerates (the slider reports on release: ``continuous_update=False``).
- :class:`SliderDemo`: one slider, one image: the image for the slider's value, generated once and cached (moving
  back is instant; a label says "cached" or "generated in X s"). :func:`prompt_blend_demo` blends two prompts' text
  embeddings (lerp, fixed seed); :func:`guidance_sweep_demo` sweeps the guidance scale.

Every callback is a plain method (``panel.generate()``, ``demo.show(value)``), and setting a widget's ``.value``
from Python triggers the same code as moving it in the browser.
"""

from __future__ import annotations

import html
import io
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import ipywidgets as w
import torch
from IPython.display import display

from helpers.checkpoints import checkpoint_statuses

from .text_to_image import TextToImage

__all__ = ["png_bytes", "lerp_embeddings", "ImageCache", "SliderDemo", "prompt_blend_demo", "guidance_sweep_demo",
           "PromptSliderDemo", "CheckpointPicker", "GenerationPanel"]

IMAGE_WIDTH = "256px"  # small sprites are shown enlarged, with crisp pixels
_IMAGE_STYLE = "image-rendering: pixelated;"


def png_bytes(image) -> bytes:
    """PNG bytes of a PIL image (what ``ipywidgets.Image(value=..., format="png")`` shows)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def lerp_embeddings(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 - t) * a + t * b``: t=0 is prompt a, t=1 is prompt b."""
    return torch.lerp(a, b, float(t))


def _image_widget():
    img = w.Image(format="png", layout=w.Layout(width=IMAGE_WIDTH, height=IMAGE_WIDTH))
    img.add_class("workbook-image")
    return img


def _pixelated_style():
    """A tiny style block so enlarged sprites keep crisp pixels (harmless where HTML is not rendered)."""
    return w.HTML(f"<style>.workbook-image img, img.workbook-image {{{_IMAGE_STYLE}}}</style>")


# --------------------------------------------------------------------------------------------------- cache + slider
class ImageCache:
    """Images by slider value: ``get(value)`` makes the image once (``make(value) -> PIL``), then serves it cached.

    Values are rounded to ``ndigits`` so 0.30000000000000004 and 0.3 are one entry. ``get`` returns
    ``(png_bytes, status)`` with status "cached" or "generated in X.X s".
    """

    def __init__(self, make: Callable[[float], Any], ndigits: int = 4) -> None:
        self.make = make
        self.ndigits = ndigits
        self.images: dict[float, bytes] = {}

    def key(self, value: float) -> float:
        return round(float(value), self.ndigits)

    def __contains__(self, value: float) -> bool:
        return self.key(value) in self.images

    def __len__(self) -> int:
        return len(self.images)

    def get(self, value: float) -> tuple[bytes, str]:
        key = self.key(value)
        if key in self.images:
            return self.images[key], "cached"
        start = time.perf_counter()
        data = png_bytes(self.make(key))
        seconds = time.perf_counter() - start
        self.images[key] = data
        return data, f"generated in {seconds:.1f} s"


class SliderDemo:
    """A slider and the image for its value (from an :class:`ImageCache`), with a status label.

    ``show(value)`` is what moving the slider calls; it returns the PNG bytes shown.
    """

    def __init__(self, make: Callable[[float], Any], *, min: float, max: float, step: float, value: float,
                 description: str, title: str = "", readout_format: str = ".2f") -> None:
        self.cache = ImageCache(make)
        self.slider = w.FloatSlider(value=value, min=min, max=max, step=step, description=description,
                                    continuous_update=False, readout_format=readout_format,
                                    style={"description_width": "initial"},
                                    layout=w.Layout(width="420px"))
        self.image = _image_widget()
        self.status = w.Label(value="")
        self.status.add_class("workbook-status")
        self.title = w.HTML(f"<b>{title}</b>") if title else w.HTML("")
        self.slider.observe(self._on_change, names="value")
        self.widget = w.VBox([_pixelated_style(), self.title, self.slider, self.image, self.status])
        self.errors: list[str] = []

    def _on_change(self, change) -> None:
        self.show(change["new"])

    def show(self, value: float | None = None) -> bytes | None:
        """Show (generating if needed) the image for ``value`` (default: the slider's value)."""
        value = self.slider.value if value is None else value
        self.status.value = f"generating {self.slider.description} {value:g} ..."
        try:
            data, status = self.cache.get(value)
        except Exception as err:  # shown in the label: a callback's exception would otherwise vanish
            self.errors.append(traceback.format_exc())
            self.status.value = f"error: {type(err).__name__}: {err}"
            return None
        self.image.value = data
        self.status.value = f"{self.slider.description} {value:g}: {status}"
        return data

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display
        if not self.image.value:
            self.show()
        display(self.widget)


def prompt_blend_demo(tti: TextToImage, prompt_a: str, prompt_b: str, *, seed: int = 0,
                      guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim",
                      n_steps: int = 10) -> SliderDemo:
    """A slider t in [0, 1] that blends the text embeddings of two prompts, ``lerp(emb_a, emb_b, t)``, same seed."""
    emb = tti.encode([prompt_a, prompt_b])
    emb_a, emb_b = emb[:1], emb[1:]

    def make(t: float):
        return tti.generate_from_embeddings(lerp_embeddings(emb_a, emb_b, t), [seed], guidance_scale=guidance_scale,
                                            steps=steps, scheduler=scheduler, progress=False)[0]

    demo = SliderDemo(make, min=0.0, max=1.0, step=1.0 / n_steps, value=0.0, description="blend",
                      title=f"0 = {html.escape(repr(prompt_a))} &nbsp; → &nbsp; 1 = {html.escape(repr(prompt_b))} "
                      f"(seed {seed})")
    demo.embeddings = (emb_a, emb_b)
    return demo


def guidance_sweep_demo(tti: TextToImage, prompt: str, *, seed: int = 0, steps: int = 50, scheduler: str = "ddim",
                        min: float = 1.0, max: float = 15.0, step: float = 0.5, value: float = 7.5) -> SliderDemo:
    """A guidance-scale slider for one prompt and seed (1.0 = no guidance)."""

    def make(scale: float):
        return tti.generate([prompt], [seed], guidance_scale=scale, steps=steps, scheduler=scheduler,
                            progress=False)[0]

    return SliderDemo(make, min=min, max=max, step=step, value=value, description="guidance scale",
                      title=f"{html.escape(repr(prompt))} (seed {seed})", readout_format=".1f")


class PromptSliderDemo:
    """The two slider demos side by side: prompt blend and guidance sweep. ``.blend``, ``.guidance``, ``.widget``."""

    def __init__(self, tti: TextToImage, prompt_a: str, prompt_b: str, *, seed: int = 0,
                 guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim") -> None:
        self.blend = prompt_blend_demo(tti, prompt_a, prompt_b, seed=seed, guidance_scale=guidance_scale,
                                       steps=steps, scheduler=scheduler)
        self.guidance = guidance_sweep_demo(tti, prompt_a, seed=seed, steps=steps, scheduler=scheduler,
                                            value=guidance_scale)
        self.widget = w.HBox([self.blend.widget, self.guidance.widget])

    def show(self) -> None:
        """Generate the images for the sliders' current values."""
        self.blend.show()
        self.guidance.show()

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display
        self.show()
        display(self.widget)


# --------------------------------------------------------------------------------------------------- picker + panel
class CheckpointPicker:
    """A Dropdown of the run's intact ``ckpt/unet_<step>`` folders sorted by step (value: the folder as a str) +
    Refresh; damaged ones (:func:`helpers.checkpoints.verify_checkpoint`) are listed below it, never offered.

    ``refresh()`` re-reads the folder; the selection stays when it still exists, else the latest is selected.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.dropdown = w.Dropdown(description="checkpoint", options=[], layout=w.Layout(width="320px"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="100px"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.damaged = w.HTML()
        self.widget = w.VBox([w.HBox([self.dropdown, self.refresh_button]), self.damaged])
        self.refresh()

    @property
    def checkpoints(self) -> list[tuple[int, Path]]:
        """The intact UNet checkpoints (step, folder); the damaged ones are in ``self.damaged``."""
        statuses = checkpoint_statuses(self.run_dir, "unet")
        bad = [f"{path.name}: damaged ({html.escape(st.problem)})" for _, path, st in statuses if not st.ok]
        self.damaged.value = "<br>".join(bad)
        return [(step, path) for step, path, st in statuses if st.ok]

    def refresh(self) -> list[tuple[int, Path]]:
        found = self.checkpoints
        current = self.dropdown.value
        options = [(f"step {step}  ({path.name})", str(path)) for step, path in found]
        values = [v for _, v in options]
        self.dropdown.options = options
        self.dropdown.value = current if current in values else (values[-1] if values else None)
        self.dropdown.disabled = not options
        return found

    @property
    def value(self) -> Path | None:
        return Path(self.dropdown.value) if self.dropdown.value else None


class GenerationPanel:
    """Checkpoint picker, prompt, seed, steps, guidance slider, Generate button and the image.

    ``generate()`` is the Generate button's callback; moving the guidance slider calls it too. The loaded
    :class:`TextToImage` objects are kept by checkpoint folder. ``loader(folder, frozen)`` loads one (default
    :meth:`TextToImage.from_checkpoint`).
    """

    def __init__(self, run_dir: str | Path, frozen, *, prompt: str = "", seed: int = 0, steps: int = 50,
                 guidance_scale: float = 7.5, scheduler: str = "ddim",
                 loader: Callable[[Path, Any], Any] | None = None) -> None:
        self.frozen = frozen
        self.loader = loader or TextToImage.from_checkpoint
        self.models: dict[str, Any] = {}
        self.scheduler = scheduler
        self.picker = CheckpointPicker(run_dir)
        self.prompt = w.Textarea(value=prompt, description="prompt", placeholder="a red slime monster, pixel art",
                                 layout=w.Layout(width="420px", height="60px"))
        self.seed = w.IntText(value=seed, description="seed", layout=w.Layout(width="200px"))
        self.steps = w.BoundedIntText(value=steps, min=1, max=1000, description="steps",
                                      layout=w.Layout(width="200px"))
        self.guidance = w.FloatSlider(value=guidance_scale, min=1.0, max=15.0, step=0.5, description="guidance",
                                      continuous_update=False, readout_format=".1f", layout=w.Layout(width="420px"))
        self.button = w.Button(description="Generate", button_style="primary", icon="image")
        self.image = _image_widget()
        self.status = w.Label(value="")
        self.status.add_class("workbook-status")
        self.errors: list[str] = []
        self.last_call: dict | None = None
        self.button.on_click(lambda _: self.generate())
        self.guidance.observe(lambda change: self.generate(), names="value")
        self.widget = w.VBox([_pixelated_style(), self.picker.widget, self.prompt,
                              w.HBox([self.seed, self.steps]), self.guidance, self.button, self.image, self.status])
        if not self.picker.dropdown.options:
            self.status.value = f"no checkpoint in {self.picker.run_dir}/ckpt yet: run notebook 04 first, then Refresh"

    def model(self, folder: str | Path):
        key = str(folder)
        if key not in self.models:
            self.models[key] = self.loader(Path(folder), self.frozen)
        return self.models[key]

    def generate(self) -> bytes | None:
        """Generate the image for the current settings, show it and return its PNG bytes (None on error)."""
        folder = self.picker.value
        if folder is None:
            self.status.value = f"no checkpoint in {self.picker.run_dir}/ckpt: run notebook 04 first, then Refresh"
            return None
        call = {"prompt": self.prompt.value, "seed": int(self.seed.value), "steps": int(self.steps.value),
                "guidance_scale": float(self.guidance.value), "checkpoint": str(folder)}
        self.status.value = "generating ..."
        start = time.perf_counter()
        try:
            tti = self.model(folder)
            image = tti.generate([call["prompt"]], [call["seed"]], guidance_scale=call["guidance_scale"],
                                 steps=call["steps"], scheduler=self.scheduler, progress=False)[0]
        except Exception as err:  # shown in the label: a callback's exception would otherwise vanish
            self.errors.append(traceback.format_exc())
            self.status.value = f"error: {type(err).__name__}: {err}"
            return None
        data = png_bytes(image)
        self.image.value = data
        self.last_call = call
        self.status.value = (f"{Path(folder).name}, guidance {call['guidance_scale']:g}, seed {call['seed']}, "
                             f"{call['steps']} steps: generated in {time.perf_counter() - start:.1f} s")
        return data

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display
        display(self.widget)
