"""What a UNet costs: parameters per block, the FLOPs of one forward pass, an estimate of training memory, the
shape after every block, and the cost of attention at each resolution (chapter 03).

:func:`summary` counts on a meta-device copy (no weights, no compute): FLOPs with torch's FLOP counter (attention
counted as a fused SDPA kernel would run it) and the activations autograd saves for the backward pass.
:func:`shape_check` runs one real forward pass and shows the shape after every block.
"""

from __future__ import annotations

import contextlib
import html
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from matplotlib.patches import Rectangle
from torch.utils.flop_counter import FlopCounterMode

from helpers.frozen import parameter_count
from helpers.plots import new_figure

__all__ = ["summary", "UNetSummary", "shape_check", "ShapeCheck", "attention_costs", "plot_blocks"]


# --------------------------------------------------------------------------------------------------- blocks
def _blocks(unet) -> list[tuple[str, list[str]]]:
    """(row name, [top-level module names]) in the order data flows through the UNet."""
    rows: list[tuple[str, list[str]]] = [("conv_in", ["conv_in"]), ("time_embedding", ["time_proj", "time_embedding"])]
    known = {"conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block", "up_blocks", "conv_norm_out",
             "conv_act", "conv_out"}
    for name, child in unet.named_children():  # class/addition embeddings, encoder_hid_proj...: only if present
        if name not in known and child is not None and any(True for _ in child.parameters()):
            rows.append((name, [name]))
    rows += [(f"down_blocks.{i}", [f"down_blocks.{i}"]) for i in range(len(unet.down_blocks))]
    if unet.mid_block is not None:
        rows.append(("mid_block", ["mid_block"]))
    rows += [(f"up_blocks.{i}", [f"up_blocks.{i}"]) for i in range(len(unet.up_blocks))]
    rows.append(("conv_out", ["conv_norm_out", "conv_out"]))
    return rows


def _has_attention(module: torch.nn.Module) -> bool:
    return any(type(m).__name__ in ("Transformer2DModel", "Attention") for m in module.modules())


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    if hasattr(x, "sample"):
        return x.sample
    return None


def _dummy_inputs(unet, batch_size: int, seq_len: int, device, dtype):
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    sample = torch.randn(batch_size, cfg.in_channels, size, size, device=device, dtype=dtype)
    timestep = torch.randint(0, 1000, (batch_size,), device=device)
    text = torch.randn(batch_size, seq_len, cfg.cross_attention_dim, device=device, dtype=dtype)
    return sample, timestep, text


def _meta_copy(unet, dtype):
    """An uninitialised copy of ``unet``'s architecture on the meta device (costs no memory)."""
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(unet.config)
    if dtype != torch.float32:  # nn.Module.to: diffusers' own .to() warns about dtype casts
        torch.nn.Module.to(model, dtype=dtype)
    return model


def _record_shapes(unet, run) -> dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]:
    """Run ``run()`` with hooks on the top-level blocks; returns {module name: (input shape, output shape)}."""
    shapes: dict[str, list] = {}
    handles = []
    modules = dict(unet.named_modules())
    for _, names in _blocks(unet):
        for name in names:
            mod = modules.get(name)
            if mod is None:
                continue

            def pre(m, args, kwargs, name=name):
                x = kwargs.get("hidden_states", args[0] if args else None)
                t = _first_tensor(x)
                shapes.setdefault(name, [None, None])[0] = tuple(t.shape) if t is not None else None

            def post(m, args, kwargs, out, name=name):
                t = _first_tensor(out)
                shapes.setdefault(name, [None, None])[1] = tuple(t.shape) if t is not None else None

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(mod.register_forward_hook(post, with_kwargs=True))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1]) for k, v in shapes.items()}


# --------------------------------------------------------------------------------------------------- memory
class _FlashLikeSDPA(torch.autograd.Function):
    """Attention that keeps for backward what fused (flash / memory-efficient) SDPA keeps: q, k, v, the output and
    a float32 log-sum-exp per query, not the [N, N] attention matrix that the meta device's reference ("math")
    implementation would keep. The forward runs the original function (its FLOPs are counted, and inside an
    autograd.Function its intermediates are not saved)."""

    @staticmethod
    def forward(ctx, q, k, v, sdpa):
        out = sdpa(q, k, v)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - never called (counting only)
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None


@contextlib.contextmanager
def _fused_attention_for_counting():
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or is_causal or scale is not None or kwargs:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kwargs)
        return _FlashLikeSDPA.apply(query, key, value, original)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def _count_saved_bytes(model) -> Iterator[dict]:
    """Count the bytes of the tensors autograd keeps for backward (parameters excluded) while the block runs:
    ``result["bytes"]`` after the block."""
    params = {id(p) for p in model.parameters()}
    kept: dict[int, tuple[torch.Tensor, int]] = {}
    result = {"bytes": 0}

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        if id(base) not in params and id(base) not in kept:
            kept[id(base)] = (base, base.numel() * base.element_size())  # the reference keeps the id unique
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _fused_attention_for_counting():
        yield result
    result["bytes"] = sum(b for _, b in kept.values())


# --------------------------------------------------------------------------------------------------- summary
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n}"


@dataclass
class UNetSummary:
    """What a UNet costs. Printing it (or showing it in a notebook) gives three tables.

    - ``rows``: one dict per block in data-flow order: ``block`` (module name), ``type`` (class), ``attention``
      (holds transformer layers), ``resolution`` (the H x W the block works at, i.e. its input), ``channels``
      (in -> out), ``params`` (count), ``params_share`` (of the total), ``gflops`` (multiply-adds x 2 of that block in
      one forward pass at ``batch_size``).
    - ``total_params`` / ``trainable_params``.
    - ``forward_flops``: FLOPs of one forward pass at ``batch_size`` (``torch.utils.flop_counter.FlopCounterMode``:
      matrix multiplications, convolutions and attention, counted as 2 x multiply-adds; normalisations and
      element-wise ops are not counted, they are a few percent). A training step costs about 3x this
      (backward = 2 x forward).
    - ``memory``: an ESTIMATE of training memory in bytes at ``batch_size`` with AdamW and an EMA copy:
      ``weights`` (fp32 master weights, 4 B/param), ``gradients`` (4 B/param), ``adamw_states`` (exp_avg and
      exp_avg_sq: 8 B/param), ``ema`` (a fp32 copy: 4 B/param), ``activations`` (MEASURED: the bytes of every tensor
      autograd saves for backward during one forward pass at ``batch_size`` in ``dtype``, counted with
      ``torch.autograd.graph.saved_tensors_hooks`` on a meta-device copy, i.e. without computing anything; attention
      counted as fused SDPA keeps it, no [N, N] matrix), ``total``. Not included: the CUDA context (~0.5 GiB),
      allocator fragmentation and temporary buffers of the backward pass (allow ~20-30 % more), the frozen text
      encoder and VAE (not needed when training reads the latent cache).
    """

    rows: list[dict]
    total_params: int
    trainable_params: int
    batch_size: int
    seq_len: int
    sample_shape: tuple[int, ...]
    dtype: str
    forward_flops: int
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def forward_gflops(self) -> float:
        return self.forward_flops / 1e9

    @property
    def train_step_gflops(self) -> float:
        """≈ 3 x forward (the backward pass computes gradients for activations and weights)."""
        return 3 * self.forward_flops / 1e9

    def params_table(self) -> str:
        head = f"{'block':<16}{'type':<26}{'attn':<6}{'resolution':<12}{'channels':<13}{'params':>14}{'share':>8}" \
               f"{'GFLOPs':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['block']:<16}{r['type']:<26}{'yes' if r['attention'] else '':<6}{r['resolution']:<12}"
                         f"{r['channels']:<13}{r['params']:>14,}{r['params_share']:>7.1%}{r['gflops']:>9.2f}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<73}{self.total_params:>14,}{1:>7.0%}{self.forward_gflops:>9.2f}")
        return "\n".join(lines)

    def memory_table(self) -> str:
        labels = {"weights": "weights (fp32)", "gradients": "gradients (fp32)",
                  "adamw_states": "AdamW exp_avg + exp_avg_sq", "ema": "EMA copy (fp32)",
                  "activations": f"activations ({self.dtype}, batch {self.batch_size})", "total": "total"}
        return "\n".join(f"{labels[k]:<36}{_fmt_bytes(v):>12}" for k, v in self.memory.items())

    def __str__(self) -> str:
        return "\n".join([
            f"UNet2DConditionModel: {self.total_params:,} parameters ({self.total_params / 1e6:.2f} M), "
            f"input {list(self.sample_shape)}, text [{self.batch_size}, {self.seq_len}, D]",
            self.params_table(), "",
            f"Forward pass at batch {self.batch_size}: {self.forward_gflops:.2f} GFLOPs "
            f"(a training step ≈ 3x: {self.train_step_gflops:.2f} GFLOPs)", "",
            f"Training memory estimate at batch {self.batch_size} (AdamW + EMA):",
            self.memory_table()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(r['block'])}</td><td>{html.escape(r['type'])}</td>"
            f"<td>{'✓' if r['attention'] else ''}</td><td>{r['resolution']}</td><td>{html.escape(r['channels'])}</td>"
            f"<td style='text-align:right'>{r['params']:,}</td>"
            f"<td style='text-align:right'>{r['params_share']:.1%}</td>"
            f"<td style='text-align:right'>{r['gflops']:.2f}</td></tr>" for r in self.rows)
        mem = "".join(f"<tr><td>{html.escape(line[:36].strip())}</td><td style='text-align:right'>"
                      f"{html.escape(line[36:].strip())}</td></tr>" for line in self.memory_table().splitlines())
        return (
            f"<p><b>UNet2DConditionModel</b>: {self.total_params:,} parameters ({self.total_params / 1e6:.2f} M); "
            f"input {list(self.sample_shape)}</p>"
            "<table><tr><th>block</th><th>type</th><th>attn</th><th>resolution</th><th>channels</th><th>params</th>"
            f"<th>share</th><th>GFLOPs</th></tr>{cells}<tr><td><b>total</b></td><td></td><td></td><td></td><td></td>"
            f"<td style='text-align:right'><b>{self.total_params:,}</b></td><td></td>"
            f"<td style='text-align:right'><b>{self.forward_gflops:.2f}</b></td></tr></table>"
            f"<p>Forward pass at batch {self.batch_size}: <b>{self.forward_gflops:.2f} GFLOPs</b> "
            f"(a training step ≈ 3x). Training memory estimate at batch {self.batch_size}:</p>"
            f"<table>{mem}</table>")

    def to_dict(self) -> dict:
        return {"rows": self.rows, "total_params": self.total_params, "trainable_params": self.trainable_params,
                "batch_size": self.batch_size, "seq_len": self.seq_len, "sample_shape": list(self.sample_shape),
                "dtype": self.dtype, "forward_flops": self.forward_flops, "memory": dict(self.memory)}


def summary(unet, *, batch_size: int = 1, seq_len: int = 77, dtype: torch.dtype = torch.float32) -> UNetSummary:
    """Parameters per block, FLOPs of one forward pass and a training-memory estimate (see :class:`UNetSummary`).

    Everything is computed on an uninitialised meta-device copy of ``unet``'s architecture (from its config):
    instant and memory-free even for the 241 M reference, and ``unet`` itself may live on any device, or on meta.
    ``batch_size``: the batch of the FLOPs and activation numbers. ``seq_len``: text tokens (77). ``dtype``: the
    compute dtype of the activations (``torch.bfloat16`` approximates mixed-precision training; the weights,
    gradients, optimizer and EMA are counted in fp32 either way).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    model = _meta_copy(unet, dtype).train()
    inputs = _dummy_inputs(model, batch_size, seq_len, "meta", dtype)

    counter = FlopCounterMode(display=False)
    saved: dict = {}

    def run():  # one forward pass on the meta copy: FLOPs, block shapes and saved activations at once
        with counter, _count_saved_bytes(model) as result:
            model(*inputs)
        saved.update(result)

    shapes = _record_shapes(model, run)
    flops_by_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    total_flops = int(flops_by_module.get("Global", flops_by_module.get(root, 0)))

    total = parameter_count(unet)
    modules = dict(unet.named_modules())
    rows = []
    for row, names in _blocks(unet):
        params = sum(parameter_count(modules[n]) for n in names if n in modules)
        gflops = sum(flops_by_module.get(f"{root}.{n}", 0) for n in names) / 1e9
        used = [n for n in names if n in shapes and n != "time_proj"]
        shape_in = next((shapes[n][0] for n in used if shapes[n][0] is not None), None)
        shape_out = next((shapes[n][1] for n in reversed(used) if shapes[n][1] is not None), None)
        if shape_in is None or len(shape_in) != 4:
            resolution = "-"
            channels = f"{shape_in[-1]}→{shape_out[-1]}" if shape_in and shape_out else "-"
        else:
            resolution = f"{shape_in[2]}×{shape_in[3]}"
            channels = f"{shape_in[1]}→{shape_out[1]}" if shape_out else f"{shape_in[1]}"
        mods = [modules[n] for n in names if n in modules and parameter_count(modules[n])]
        rows.append({"block": row, "type": "+".join(type(m).__name__ for m in mods) or "-",
                     "attention": any(_has_attention(m) for m in mods), "resolution": resolution,
                     "channels": channels, "params": int(params), "params_share": params / total if total else 0.0,
                     "gflops": gflops})
    assert sum(r["params"] for r in rows) == total, "the block rows must add up to the total"

    trainable = parameter_count(unet, trainable_only=True)
    activations = saved["bytes"]
    memory = {"weights": 4 * total, "gradients": 4 * trainable, "adamw_states": 8 * trainable, "ema": 4 * trainable,
              "activations": int(activations)}
    memory["total"] = sum(memory.values())
    return UNetSummary(rows=rows, total_params=total, trainable_params=trainable, batch_size=batch_size,
                       seq_len=seq_len, sample_shape=tuple(inputs[0].shape), dtype=str(dtype).replace("torch.", ""),
                       forward_flops=total_flops, memory=memory)


# --------------------------------------------------------------------------------------------------- shapes
@dataclass
class ShapeCheck:
    """Shapes of one forward pass: the three inputs, every block's output, the prediction."""

    inputs: dict[str, tuple[int, ...]]
    blocks: list[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None]]  # (block, input shape, output shape)
    output: tuple[int, ...]

    def __str__(self) -> str:
        lines = ["inputs:"]
        lines += [f"  {k:<24}{list(v)}" for k, v in self.inputs.items()]
        lines.append(f"{'block':<18}{'input':<22}output")
        lines += [f"  {b:<16}{str(list(i)) if i else '-':<22}{list(o) if o else '-'}" for b, i, o in self.blocks]
        lines.append(f"output (the prediction, noise ε or v): {list(self.output)}")
        return "\n".join(lines)

    __repr__ = __str__

    @property
    def ok(self) -> bool:
        """The prediction has the shape of the noisy latents (as it must)."""
        return tuple(self.output) == tuple(self.inputs["sample"])


def shape_check(unet, batch_size: int = 2, seq_len: int = 77, verbose: bool = True) -> ShapeCheck:
    """Run one forward pass with random inputs (no gradients) and return/print the shape after every block.

    Runs where ``unet`` lives (a meta-device UNet gives the shapes without computing anything). Raises if the
    output shape differs from the input's.
    """
    try:
        p = next(unet.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:  # pragma: no cover
        device, dtype = torch.device("cpu"), torch.float32
    sample, timestep, text = _dummy_inputs(unet, batch_size, seq_len, device, dtype)
    result = {}

    def run():
        with torch.no_grad():
            result["out"] = unet(sample, timestep, encoder_hidden_states=text).sample

    shapes = _record_shapes(unet, run)
    blocks = []
    for row, names in _blocks(unet):
        if row == "time_embedding":
            continue
        shape_in = next((shapes[n][0] for n in names if n in shapes), None)
        shape_out = next((shapes[n][1] for n in reversed(names) if n in shapes), None)
        blocks.append((row, shape_in, shape_out))
    check = ShapeCheck(inputs={"sample": tuple(sample.shape), "timestep": tuple(timestep.shape),
                               "encoder_hidden_states": tuple(text.shape)},
                       blocks=blocks, output=tuple(result["out"].shape))
    if verbose:
        print(check)
    if not check.ok:
        raise AssertionError(f"UNet output {list(check.output)} != input {list(check.inputs['sample'])}")
    return check


# --------------------------------------------------------------------------------------------------- attention
def attention_costs(sizes=(64, 32, 16, 8, 4), channels: int = 256, text_len: int = 77,
                    batch_size: int = 1) -> list[dict]:
    """What one attention layer costs at each latent side ``s`` (tokens N = s x s), at width ``channels``.

    Per row: ``tokens`` N; ``self_scores`` = N² entries of the self-attention matrix (summed over heads it is the
    same FLOPs; per head it is what must be held or streamed); ``cross_scores`` = N x ``text_len``;
    ``self_attn_gflops`` = 2·2·N²·C (QKᵀ and the weighted sum of V) x batch; ``projections_gflops`` = the q/k/v/out
    linear layers of self-attention, 2·4·N·C² x batch (grows only with N). Self-attention's share explodes at high
    resolution: that is why the highest-resolution blocks of small UNets often skip attention.
    """
    rows = []
    for s in sizes:
        n = s * s
        rows.append({"side": s, "tokens": n, "self_scores": n * n, "cross_scores": n * text_len,
                     "self_attn_gflops": batch_size * 4 * n * n * channels / 1e9,
                     "projections_gflops": batch_size * 8 * n * channels * channels / 1e9})
    return rows


def plot_blocks(summaries: dict[str, UNetSummary], what: str = "params"):
    """Bar chart of parameters (``what="params"``, millions) or forward GFLOPs (``what="gflops"``) per block, one
    panel per summary (e.g. ``{"reference": s_ref, "demo": s_demo}``). Returns the matplotlib Figure."""
    if what not in ("params", "gflops"):
        raise ValueError("what must be 'params' or 'gflops'")
    fig = new_figure((6.5 * len(summaries), 3.8))
    axes = fig.subplots(1, len(summaries), squeeze=False)
    for ax, (title, s) in zip(axes[0], summaries.items()):
        names = [r["block"] for r in s.rows]
        values = [r["params"] / 1e6 if what == "params" else r["gflops"] for r in s.rows]
        colors = ["tab:orange" if r["attention"] else "tab:blue" for r in s.rows]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        total = s.total_params / 1e6 if what == "params" else s.forward_gflops
        unit = "M parameters" if what == "params" else f"GFLOPs (forward, batch {s.batch_size})"
        ax.set_title(f"{title}: {total:,.2f} {unit}", fontsize=10)
        ax.set_ylabel(unit)
    axes[0][0].legend(handles=[Rectangle((0, 0), 1, 1, color="tab:orange"), Rectangle((0, 0), 1, 1, color="tab:blue")],
                      labels=["with attention", "convolutions only"], fontsize=8)
    fig.tight_layout()
    return fig
