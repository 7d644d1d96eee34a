"""Scoring a folder of generated images the way the course does, against its references, and sweeping a setting.

- :func:`score_folder`: every metric that can be computed for ``<image_name>`` files (one or more per prompt):
  FID (:mod:`helpers.submission.frechet`), CLIP-T and CLIP-I (:mod:`helpers.submission.clip_scores`, raw cosines as the course reports
  them) and the Fréchet distance in the profile VAE's latent space (labelled "not FID").
- :func:`generate_for_scoring` writes the images to score; :func:`sweep` generates and scores once per value of a
  setting (guidance, steps, checkpoint) and plots the metrics; :func:`examples_figure` shows the worst/best images.
- :func:`pick_settings` scores candidate :class:`Setting` s (checkpoint, guidance, sampler, steps) on a held-out split
  with the profile's judge and picks the best (:func:`pick_metric`): what chapter 06 exports the submission with.

Every image (generated or reference) is read the way training reads images (:func:`helpers.data.images.load_image`: alpha
composited on white, resized to the profile's resolution). A :class:`helpers.submission.scores.MetricResult` records the model
and the settings behind each number; where a scoring model cannot be loaded (offline and not cached, package
missing) it says ``skipped: <why>`` and holds no number — never a number computed from random weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.data import WHITE, DataError, load_image, prompt_list
from helpers.frozen import load_vae
from helpers.plots import new_figure, show_images

from .evidence import Difference, paired_bootstrap
from .clip_scores import ClipScorer, clip_or_skip, clip_scores
from .export import generate_folder, read_prompts, seed_for
from .frechet import VAE_FD_NAME, fid, vae_frechet_distance
from .scores import MetricResult, format_score, metrics_table, print_metrics

__all__ = ["score_folder", "generate_for_scoring", "generated_files", "examples_figure", "sweep", "SweepResult",
           "plot_sweep", "load_reference_map", "generated_pairs", "Setting", "SettingsPick", "pick_settings",
           "pick_metric", "PICK_METRICS", "MetricResult", "metrics_table", "print_metrics"]


# --------------------------------------------------------------------------------------------------- folders
def load_reference_map(reference: str | Path | Mapping[str, Sequence[str | Path]], prompts=None
                       ) -> dict[str, list[Path]]:
    """``image_name -> [reference image paths]`` from a mapping, a ``reference_map.json`` file, a split folder
    (holding ``reference_map.json``), or a plain folder of reference images named like the prompts' ``image_name``
    (the course's layout, and the demo's ``test_reference/``; needs ``prompts``).

    Relative paths in a JSON file are relative to the file's folder.
    """
    if isinstance(reference, Mapping):
        return {str(k): [Path(p) for p in (v if isinstance(v, (list, tuple)) else [v])] for k, v in reference.items()}
    path = Path(reference)
    if path.is_dir():
        if not (path / "reference_map.json").exists() and prompts is not None:
            return {p.image_name: [path / p.image_name] for p in prompts if (path / p.image_name).is_file()}
        path = path / "reference_map.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no reference map (run helpers.data.split.holdout_split first)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    return {k: [(path.parent / p) if not Path(p).is_absolute() else Path(p) for p in v] for k, v in raw.items()}


EXTRA_SEP = "__"  # extra images of a prompt: <stem>__<k>.png (see generate_for_scoring)


def generated_files(generated_dir: str | Path, prompt) -> list[Path]:
    """The generated images of one prompt in a folder: ``<image_name>`` then ``<stem>__<k>.png`` (k = 1, 2, ...)."""
    folder = Path(generated_dir)
    stem = Path(prompt.image_name).stem
    extra = []
    for p in folder.glob(f"{stem}{EXTRA_SEP}*.png"):
        k = p.stem[len(stem) + len(EXTRA_SEP):]
        if k.isdigit():
            extra.append((int(k), p))
    return [folder / prompt.image_name] + [p for _, p in sorted(extra)]


def generated_pairs(generated_dir: str | Path, prompts) -> tuple[list, list[tuple[Path, Any]]]:
    """``(prompts, [(generated image, its prompt), ...])`` of a folder to score: ``prompts`` is a test.json-style
    file or a list of ``TestPrompt``; every prompt's images (:func:`generated_files`) in prompt order. Raises
    DataError naming the folder when a prompt's ``<image_name>`` is missing."""
    gen_dir = Path(generated_dir)
    plist = prompt_list(prompts)
    missing = [p.image_name for p in plist if not (gen_dir / p.image_name).is_file()]
    if missing:
        raise DataError(f"{gen_dir}: {len(missing)} generated image(s) missing, e.g. {missing[:5]} "
                        "(generate them first, e.g. with helpers.submission.metrics.generate_for_scoring)")
    return plist, [(f, p) for p in plist for f in generated_files(gen_dir, p)]


def generate_for_scoring(tti, prompts, out_dir: str | Path, *, size: int, images_per_prompt: int = 1, seed: int = 0,
                         guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim",
                         batch_size: int | None = None, overwrite: bool = True, progress: bool = True) -> Path:
    """Generate ``images_per_prompt`` images per prompt into ``out_dir`` for scoring (not a submission folder).

    Image 0 of a prompt is ``<image_name>`` with seed :func:`helpers.submission.seed_for` ``(key, seed)`` — the same
    image the submission export makes; image ``k >= 1`` is ``<stem>__<k>.png`` with seed ``seed_for(f"{key}#{k}",
    seed)``. More images per prompt make the Fréchet distances less noisy (compare only at equal counts) and the
    CLIP means steadier. The folder is replaced whole (``overwrite=True`` by default).
    """
    plist = read_prompts(prompts)
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, not {images_per_prompt}")
    items = []
    for p in plist:
        stem = Path(p.image_name).stem
        for k in range(images_per_prompt):
            name = p.image_name if k == 0 else f"{stem}{EXTRA_SEP}{k}.png"
            items.append((name, p.text_prompt, seed_for(p.key if k == 0 else f"{p.key}#{k}", seed)))
    out, _ = generate_folder(tti, items, out_dir, size=size, guidance_scale=guidance_scale, steps=steps,
                             scheduler=scheduler, batch_size=batch_size, overwrite=overwrite, progress=progress)
    return out


def _vae_label(profile) -> str:
    return "demo-VAE" if getattr(profile, "name", "demo") == "demo" else "SD-VAE"


def score_folder(generated_dir: str | Path, prompts, reference, profile, *, clip_model: str | ClipScorer | None = None,
                 fid_extractor: nn.Module | None = None, vae=None, antialias: bool = True, batch_size: int = 32,
                 device: str | torch.device | None = None, compute_fid: bool = True, compute_clip: bool = True,
                 compute_vae_fd: bool = True, vae_pool: int = 4) -> list[MetricResult]:
    """Every metric that can be computed for a folder of generated images ``<image_name>`` (one per prompt).

    ``prompts``: a test.json-style file or a list of ``TestPrompt``; ``reference``: ``image_name -> reference
    images`` (a mapping, a ``reference_map.json``, a split folder, or a folder of images named like the prompts; see
    :func:`load_reference_map`). Extra images of a prompt
    (``<stem>__<k>.png``, :func:`generate_for_scoring`) are scored too. Returns, in order: FID (torchmetrics Inception,
    or skipped), CLIP-T (with CLIPScore ×100 beside it), CLIP-I (CLIP ``clip_model``, default
    ``openai/clip-vit-base-patch32``, or skipped), and the Fréchet distance in the profile VAE's latent space
    (labelled "not FID"; ``vae`` = a loaded VAE, else the profile's is loaded). A missing generated image is an error
    that names it.
    """
    device = device or getattr(profile, "device", "cpu")
    plist, pairs = generated_pairs(generated_dir, prompts)  # every generated image with its prompt
    refs = load_reference_map(reference, plist)
    no_ref = [p.image_name for p in plist if not refs.get(p.image_name)]
    if no_ref:
        raise DataError(f"no reference image for {no_ref[:5]} in the reference map")
    res, bg = int(profile.resolution), tuple(getattr(profile, "background", WHITE))
    gen_paths = [f for f, _ in pairs]
    ref_paths = sorted({r for p in plist for r in refs[p.image_name]})
    results: list[MetricResult] = []

    if compute_fid:
        results.append(fid(gen_paths, ref_paths, feature_extractor=fid_extractor, resolution=res,
                           batch_size=batch_size, antialias=antialias, device=device, background=bg))
    if compute_clip:
        scorer, skipped = clip_or_skip(clip_model, ["CLIP-T", "CLIP-I"], len(gen_paths), device)
        if scorer is None:
            results += skipped
        else:
            results += clip_scores(scorer, pairs, refs, res, bg, batch_size)
    if compute_vae_fd:
        name = VAE_FD_NAME if _vae_label(profile) == "demo-VAE" else VAE_FD_NAME.replace("demo-VAE", "SD-VAE")
        where = f"{profile.vae}{'/' + profile.vae_subfolder if profile.vae_subfolder else ''}"
        problem = None
        if vae is None:
            try:
                vae = load_vae(profile.vae, profile.vae_subfolder, device=device)
            except Exception as err:  # VAE not loadable
                problem = f"cannot load the VAE {where} ({type(err).__name__}: {err})"
        if problem:
            results.append(MetricResult.skip(name, problem, model=where, n_images=len(gen_paths),
                                             higher_is_better=False))
        else:
            results.append(vae_frechet_distance(gen_paths, ref_paths, vae, resolution=res, batch_size=batch_size,
                                                pool=vae_pool, device=device, name=name, background=bg,
                                                vae_name=f"{_vae_label(profile)} ({where})"))
    return results


def examples_figure(result: MetricResult, generated_dir: str | Path, prompts, reference=None, k: int = 4,
                    background: tuple[int, int, int] = WHITE):
    """The ``k`` worst (top row) and ``k`` best (bottom row) generated images by ``result.per_image``, each of another
    prompt (no prompt appears twice), with its score and full prompt, and — when ``reference`` (a reference map) is
    given — its first reference image beside it. A 1/0 score is written as the judge's verdict."""
    if result.skipped or not result.per_image:
        raise ValueError(f"{result.name} has no per-image scores ({result.note or 'nothing computed'})")
    plist = prompt_list(prompts)
    gen_dir = Path(generated_dir)
    owner = {f.name: p for p in plist for f in generated_files(gen_dir, p)}
    refs = load_reference_map(reference, plist) if reference is not None else None
    worst, best = _distinct_prompts(result, owner, k)
    binary = set(result.per_image.values()) <= {0.0, 1.0}
    images, captions = [], []
    for label, rows in (("worst", worst), ("best", best)):
        for name, score in rows:
            p = owner.get(name)
            verdict = ("judged right" if score else "judged wrong") if binary else f"{score:.3f}"
            images.append(gen_dir / name)
            captions.append(f"{label}: {verdict} · {p.text_prompt if p else name}")
            if refs is not None:
                ref = refs.get(p.image_name, [None])[0] if p else None
                images.append(ref if ref is not None else gen_dir / name)
                captions.append("its real image" if ref is not None else "(no reference)")
    pil = [load_image(path, None, background=background) for path in images]
    per_row = max(len(worst), len(best)) * (2 if refs is not None else 1)
    return show_images(pil, captions, ncols=max(1, per_row), size=1.6,
                       title=f"{result.name}: worst (top row) and best (bottom row), one image per prompt")


def _distinct_prompts(result: MetricResult, owner: dict, k: int) -> tuple[list, list]:
    """Up to ``k`` worst and ``k`` best (image name, score) of ``result``, each of a prompt not shown yet."""
    ranked = sorted(result.per_image.items(), key=lambda kv: kv[1], reverse=not result.higher_is_better)
    seen: set = set()
    rows: list[list] = [[], []]
    for row, items in ((0, ranked), (1, ranked[::-1])):
        for name, score in items:
            key = owner[name].image_name if name in owner else name
            if key not in seen and len(rows[row]) < k:
                seen.add(key)
                rows[row].append((name, score))
    return rows[0], rows[1]


# --------------------------------------------------------------------------------------------------- sweeps
@dataclass
class SweepResult:
    """Scores per swept value: ``results[i]`` are the metrics of ``values[i]``; ``figure`` plots them."""

    param: str
    values: list
    results: list[list[MetricResult]]
    folders: list[Path]
    figure: Any = None

    def table(self) -> str:
        names = [r.name for r in self.results[0]] if self.results else []
        header = [self.param] + names
        rows = [header]
        for v, res in zip(self.values, self.results):
            rows.append([_label(v)] + [format_score(r.value, r.n_images) for r in res])
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

    def best(self, metric: str) -> Any:
        """The swept value with the best score of ``metric`` (None if it was skipped everywhere)."""
        scored = [(v, r) for v, res in zip(self.values, self.results) for r in res
                  if r.name == metric and not r.skipped]
        if not scored:
            return None
        key = (lambda vr: vr[1].value) if scored[0][1].higher_is_better else (lambda vr: -vr[1].value)
        return max(scored, key=key)[0]


def _label(v) -> str:
    return Path(v).name if isinstance(v, Path) else str(v)


def plot_sweep(param: str, values: Sequence, results: Sequence[Sequence[MetricResult]]):
    """One small panel per computed metric (skipped ones are left out), score vs the swept value."""
    names = []
    for res in results:
        for r in res:
            if not r.skipped and r.name not in names:
                names.append(r.name)
    fig = new_figure((3.6 * max(1, len(names)), 3.0))
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    numeric = all(isinstance(v, (int, float)) for v in values)
    xs = list(values) if numeric else list(range(len(values)))
    for ax, name in zip(axes, names):
        pts = [(x, r.value) for x, res in zip(xs, results) for r in res if r.name == name and not r.skipped]
        hib = next(r.higher_is_better for res in results for r in res if r.name == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.set_title(f"{name}\n({'higher' if hib else 'lower'} is better)", fontsize=8)
        ax.set_xlabel(param)
        if not numeric:
            ax.set_xticks(xs, [_label(v) for v in values], rotation=30, fontsize=7)
    if not names:
        axes[0].text(0.5, 0.5, "every metric was skipped", ha="center", va="center")
    fig.tight_layout()
    return fig


def sweep(values: Sequence, prompts, reference, profile, *, out_dir: str | Path, param: str = "guidance_scale",
          tti=None, make_tti: Callable[[Any], Any] | None = None, steps: int = 50, scheduler: str = "ddim",
          guidance_scale: float = 7.5, seed: int = 0, batch_size: int | None = None, images_per_prompt: int = 1,
          score_kwargs: dict | None = None, progress: bool = False) -> SweepResult:
    """Generate the prompts once per swept value, score each folder, and plot the metrics vs the value.

    ``param``: ``"guidance_scale"`` or ``"steps"`` (one ``tti`` is used), or anything else (e.g. ``"checkpoint"``)
    with ``make_tti(value) -> text-to-image object`` (e.g. ``lambda ck: TextToImage.from_checkpoint(ck, frozen)``).
    Images go to ``out_dir/<param>_<value>/`` (:func:`generate_for_scoring`, ``images_per_prompt`` each; the folders
    are replaced). Seeds are per prompt key (:func:`helpers.submission.seed_for`), so every value sees the same
    initial noise. ``score_kwargs`` go to :func:`score_folder` (the CLIP model and the VAE are loaded once).
    """
    plist = prompt_list(prompts)
    out_dir = Path(out_dir)
    score_kwargs = dict(score_kwargs or {})
    device = score_kwargs.get("device") or getattr(profile, "device", "cpu")
    if score_kwargs.get("compute_clip", True) and not isinstance(score_kwargs.get("clip_model"), ClipScorer):
        scorer, _ = clip_or_skip(score_kwargs.get("clip_model"), ["CLIP"], 0, device)  # load once, not per value
        if scorer is not None:
            score_kwargs["clip_model"] = scorer
    if score_kwargs.get("compute_vae_fd", True) and score_kwargs.get("vae") is None:
        try:
            score_kwargs["vae"] = load_vae(profile.vae, profile.vae_subfolder, device=device)
        except Exception:  # score_folder reports it as skipped
            pass
    all_results, folders = [], []
    for value in values:
        kw = {"guidance_scale": guidance_scale, "steps": steps}
        if param in kw:
            kw[param] = value
            gen = tti
        else:
            if make_tti is None:
                raise ValueError(f"sweeping {param!r} needs make_tti(value) -> text-to-image object")
            gen = make_tti(value)
        if gen is None:
            raise ValueError("sweep needs tti= (or make_tti=)")
        folder = out_dir / f"{param}_{_label(value)}"
        generate_for_scoring(gen, plist, folder, size=int(profile.resolution), scheduler=scheduler, seed=seed,
                             batch_size=batch_size, images_per_prompt=images_per_prompt, overwrite=True,
                             progress=progress, **kw)
        all_results.append(score_folder(folder, plist, reference, profile, **score_kwargs))
        folders.append(folder)
    return SweepResult(param=param, values=list(values), results=all_results, folders=folders,
                       figure=plot_sweep(param, list(values), all_results))


# --------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One way to generate the submission: a UNet checkpoint and the sampler settings."""

    checkpoint: Path
    guidance_scale: float
    scheduler: str = "ddim"
    steps: int = 50

    @property
    def label(self) -> str:
        return f"{Path(self.checkpoint).name} g{self.guidance_scale:g} {self.scheduler}-{self.steps}"

    def as_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "guidance_scale": self.guidance_scale,
                "scheduler": self.scheduler, "steps": self.steps}


#: What a settings pick ranks by when no judge names its metric, in order of preference: the first computed one.
PICK_METRICS = ("FID", "CLIP-I", "CLIP-T")


def pick_metric(results: Sequence[MetricResult], preferred: str | None = None) -> str | None:
    """The metric a settings pick ranks by: ``preferred`` (a judge's own metric) when it was computed, else the first
    computed one of :data:`PICK_METRICS` (FID, else CLIP-I, else CLIP-T), else the first computed metric (e.g. the
    latent Fréchet distance); None when every metric was skipped (nothing to rank by)."""
    computed = [r.name for r in results if not r.skipped]
    return next((name for name in (preferred, *PICK_METRICS, *computed) if name in computed), None)


@dataclass
class SettingsPick:
    """The scores of every candidate :class:`Setting` and the best one by ``metric`` (None: every metric was
    skipped, e.g. offline with no judge; then the incumbent is kept).

    The ``incumbent`` (the profile's default, or the previous search's winner) is replaced only when a candidate is
    better beyond the noise of the prompts: the paired bootstrap interval of its per-prompt difference
    (:func:`helpers.submission.evidence.paired_bootstrap`) lies wholly on its better side. A metric with no
    per-image scores (FID) has no such interval: its best value wins, and the table says so.
    """

    metric: str | None
    settings: list[Setting]
    results: list[list[MetricResult]]
    folders: list[Path]
    inputs: tuple = ()  # what the images were generated from (prompt names, seed, images per prompt)
    reused: list[bool] = field(default_factory=list)  # candidate i was taken from an earlier pick
    incumbent: int = 0  # the setting kept unless another is better beyond the noise
    level: float = 0.95  # the bootstrap interval's level

    def value(self, i: int) -> float | None:
        return next((r.value for r in self.results[i] if r.name == self.metric), None)

    def _per_image(self, i: int) -> dict[str, float]:
        return next((r.per_image for r in self.results[i] if r.name == self.metric and not r.skipped), {})

    @property
    def higher_is_better(self) -> bool:
        return next((r.higher_is_better for res in self.results for r in res if r.name == self.metric), True)

    @property
    def leader_index(self) -> int:
        """The best value (of equals, the incumbent, else the first; the incumbent when nothing was scored)."""
        scored = [(i, v) for i, v in enumerate(self.value(i) for i in range(len(self.settings))) if v is not None]
        if not scored:
            return self.incumbent
        sign = 1.0 if self.higher_is_better else -1.0
        return max(scored, key=lambda iv: (sign * iv[1], iv[0] == self.incumbent, -iv[0]))[0]

    def difference(self, i: int) -> Difference | None:
        """Candidate ``i`` minus the incumbent, per prompt, with its interval (None: no per-image scores)."""
        if i == self.incumbent:
            return None
        return paired_bootstrap(self._per_image(i), self._per_image(self.incumbent), level=self.level)

    @property
    def best_index(self) -> int:
        """The leader when it is the incumbent, when it beats it beyond the noise, or when the metric has no
        interval (FID); else the incumbent."""
        lead = self.leader_index
        if lead == self.incumbent:
            return lead
        diff = self.difference(lead)
        return lead if diff is None or diff.beyond_noise(self.higher_is_better) else self.incumbent

    @property
    def best(self) -> Setting:
        return self.settings[self.best_index]

    def table(self) -> str:
        """One row per candidate, one column per computed metric and the difference to the incumbent with its
        interval; ``*`` marks the best, ``=`` the incumbent (``*=``: both); a candidate taken from an earlier pick says "(scored
        before)"; the last line says why the best is best."""
        names = list(dict.fromkeys(r.name for res in self.results for r in res if not r.skipped))
        diffs = [self.difference(i) for i in range(len(self.settings))]
        delta = f"vs = ({self.level:.0%} interval)"
        rows = [["", "setting", *names] + ([delta] if any(diffs) else [])]
        for i, (s, res) in enumerate(zip(self.settings, self.results)):
            values = {r.name: format_score(r.value, r.n_images) for r in res}
            label = s.label + (" (scored before)" if self.reused and self.reused[i] else "")
            mark = ("*" if i == self.best_index else "") + ("=" if i == self.incumbent else "")
            rows.append([mark, label, *[values.get(n, "-") for n in names]] +
                        ([str(diffs[i]) if diffs[i] else ""] if any(diffs) else []))
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines + [self._verdict()])

    def _verdict(self) -> str:
        if self.metric is None:
            why = "; ".join(dict.fromkeys(r.note for r in self.results[0] if r.skipped))
            return f"every metric was skipped ({why}): keeping {self.best.label}"
        better = "higher" if self.higher_is_better else "lower"
        lead, best = self.leader_index, self.best_index
        if lead == self.incumbent:
            return f"best by {self.metric} ({better} is better): {self.best.label}, the incumbent (marked *=)"
        diff = self.difference(lead)
        if diff is None:
            return (f"best (marked *) by {self.metric}, {better} is better: {self.best.label} ({self.metric} has no "
                    "per-image scores, so no interval: the best value wins)")
        if best == lead:
            return (f"best (marked *) by {self.metric}: {self.best.label}, better than the incumbent by {diff}, "
                    f"beyond the noise of {diff.n} prompts")
        return (f"keeping the incumbent {self.best.label}: {self.settings[lead].label} leads by {diff.mean:+.3f}, "
                f"but its {self.level:.0%} interval over {diff.n} prompts [{diff.low:+.3f}, {diff.high:+.3f}] "
                "includes no gain: a difference of one or two images is what drawing other prompts gives")

    def as_dict(self) -> dict:
        """What the submission records about how its settings were chosen."""
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "best": self.best.as_dict(),
                "incumbent": self.settings[self.incumbent].as_dict(),
                "candidates": [{**s.as_dict(), "value": self.value(i),
                                "vs_incumbent": d.as_dict() if (d := self.difference(i)) else None}
                               for i, s in enumerate(self.settings)]}


def pick_settings(settings: Sequence[Setting], prompts, reference, profile, *, make_tti: Callable[[Path], Any],
                  out_dir: str | Path,
                  metric: str | None = None, judge=None, seed: int = 0, images_per_prompt: int = 1,
                  batch_size: int | None = None, score_kwargs: dict | None = None,
                  reuse: Sequence[SettingsPick] = (), incumbent: int = 0,
                  progress: bool = False) -> SettingsPick:
    """Generate ``prompts`` (a held-out split: their references are known) with every candidate setting, score each
    folder (:func:`score_folder`, plus ``judge.score(folder, prompts, reference)`` when a ``judge`` is given: e.g.
    the demo judge) and rank them by ``metric`` (default :func:`pick_metric` with the judge's ``metric``). Seeds are per prompt key, so every candidate starts from the
    same noise and only the setting differs. ``make_tti(checkpoint)`` loads a checkpoint (e.g.
    ``lambda c: TextToImage.from_checkpoint(c, frozen)``), once per checkpoint. Images go to ``out_dir/<n>/``
    (replaced). A candidate already scored by one of the ``reuse`` picks, from the same prompts, seed and images
    per prompt, is taken from it instead of generated again (e.g. the winner of the previous search).
    ``incumbent``: the index of the setting kept unless another beats it beyond the noise (see :class:`SettingsPick`).
    """
    if not settings:
        raise ValueError("pick_settings needs at least one candidate setting")
    prompts = prompt_list(prompts)
    inputs = (tuple(p.image_name for p in prompts), seed, images_per_prompt)
    done = {s: (res, folder) for p in reuse if p.inputs == inputs
            for s, res, folder in zip(p.settings, p.results, p.folders)}
    out_dir, models = Path(out_dir), {}
    score_kwargs = dict(score_kwargs or {})
    results, folders = [], []
    for i, s in enumerate(settings):
        if s in done:
            results.append(done[s][0])
            folders.append(done[s][1])
            continue
        key = str(s.checkpoint)
        if key not in models:
            models[key] = make_tti(s.checkpoint)
        folder = generate_for_scoring(models[key], prompts, out_dir / f"{i:02d}", size=int(profile.resolution),
                                      images_per_prompt=images_per_prompt, seed=seed, guidance_scale=s.guidance_scale,
                                      steps=s.steps, scheduler=s.scheduler, batch_size=batch_size, progress=progress)
        res = score_folder(folder, prompts, reference, profile, **score_kwargs)
        results.append((judge.score(folder, prompts, reference) if judge is not None else []) + res)
        folders.append(folder)
    return SettingsPick(metric=metric or pick_metric(results[0], getattr(judge, "metric", None)), settings=list(settings), results=results,
                        folders=folders, inputs=inputs, reused=[s in done for s in settings],
                        incumbent=incumbent)
