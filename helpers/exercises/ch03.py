"""Chapter 03's exercises: the parameters of a convolution and of a ResNet block, by formula.

Both are checked against :func:`helpers.unet.parameter_count` of the real layer, built on the ``meta`` device
(instant, no memory): ``torch.nn.Conv2d`` and diffusers' ``ResnetBlock2D`` (the block every level of the UNet
stacks: GroupNorm, 3×3 conv, time-embedding projection, GroupNorm, 3×3 conv, and a 1×1 shortcut conv when the
channel count changes).
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import ResnetBlock2D

from helpers.frozen import parameter_count
from .core import Case, Exercise, Mistake, Question

__all__ = ["conv_params", "resnet_params", "flops_where", "attention_shrink", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- Conv2d
def _ref_conv_params(c_in: int, c_out: int, k: int) -> int:
    with torch.device("meta"):
        return parameter_count(torch.nn.Conv2d(c_in, c_out, k))


def _solution_conv_params(c_in, c_out, k):
    return c_out * c_in * k * k + c_out     # one k×k filter per (output, input) channel pair, one bias per output


conv_params = Exercise(
    "ch03.conv_params", "the parameters of a k×k Conv2d with bias",
    reference=_ref_conv_params, solution=_solution_conv_params,
    cases=lambda: [Case(a, f"Conv2d({a[0]}, {a[1]}, kernel_size={a[2]})")
                   for a in ((4, 32, 3), (256, 384, 3), (384, 256, 1), (768, 768, 3), (3, 5, 7))],
    fallback_name="the helpers' count (parameter_count of a real Conv2d)",
    mistakes=[
        Mistake("The bias is missing: one per output channel, + c_out.", lambda i, o, k: i * o * k * k),
        Mistake("A k×k kernel has k² weights per channel pair, not k.", lambda i, o, k: i * o * k + o),
        Mistake("The bias has one value per OUTPUT channel (c_out), not per input channel.",
                lambda i, o, k: i * o * k * k + i),
        Mistake("Every output channel looks at every input channel: c_in × c_out filters, not c_in + c_out.",
                lambda i, o, k: (i + o) * k * k + o),
    ],
    hint="""Each output channel has one k×k filter for every input channel, plus one bias.""",
    stub='''
    def conv_params(c_in, c_out, k):
        """The number of parameters of torch.nn.Conv2d(c_in, c_out, kernel_size=k) (with its bias): an int."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- ResNet block
def _ref_resnet_params(c_in: int, c_out: int, temb: int) -> int:
    with torch.device("meta"):
        return parameter_count(ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=temb))


def _solution_resnet_params(c_in, c_out, temb):
    norm1 = 2 * c_in                          # GroupNorm: a scale and a shift per channel
    conv1 = c_in * c_out * 9 + c_out          # 3×3 conv
    time_proj = temb * c_out + c_out          # Linear: the time embedding -> one shift per channel
    norm2 = 2 * c_out
    conv2 = c_out * c_out * 9 + c_out
    shortcut = c_in * c_out + c_out if c_in != c_out else 0   # 1×1 conv, only when the channels change
    return norm1 + conv1 + time_proj + norm2 + conv2 + shortcut


def _resnet(missing: str):
    def wrong(i, o, te):
        parts = {"norm1": 2 * i, "conv1": i * o * 9 + o, "time": te * o + o, "norm2": 2 * o,
                 "conv2": o * o * 9 + o, "short": i * o + o if i != o else 0}
        if missing == "always_short":
            parts["short"] = i * o + o
        elif missing == "norm_half":
            parts["norm1"], parts["norm2"] = i, o
        elif missing == "no_bias":
            parts = {"norm1": 2 * i, "conv1": i * o * 9, "time": te * o, "norm2": 2 * o, "conv2": o * o * 9,
                     "short": i * o if i != o else 0}
        else:
            parts[missing] = 0
        return sum(parts.values())
    return wrong


resnet_params = Exercise(
    "ch03.resnet_params", "the parameters of a UNet ResNet block (diffusers' ResnetBlock2D)",
    reference=_ref_resnet_params, solution=_solution_resnet_params,
    cases=lambda: [Case(a, f"ResnetBlock2D({a[0]} -> {a[1]} channels, temb_channels={a[2]})")
                   for a in ((256, 256, 1024), (256, 384, 1024), (32, 64, 128), (768, 512, 1024))],
    fallback_name="the helpers' count (parameter_count of a real ResnetBlock2D)",
    mistakes=[
        Mistake("The shortcut is missing: when c_in != c_out the skip path needs a 1×1 conv "
                "(c_in·c_out + c_out) to match the channels.", _resnet("short")),
        Mistake("The 1×1 shortcut conv only exists when the channel count changes (c_in != c_out); with equal "
                "channels the input is added as it is.", _resnet("always_short")),
        Mistake("The time-embedding projection is missing: a Linear(temb_channels, c_out) with bias.",
                _resnet("time")),
        Mistake("The GroupNorms are missing: each has a scale and a shift per channel (2·c_in and 2·c_out).",
                lambda i, o, te: _resnet("norm1")(i, o, te) - 2 * o),
        Mistake("A GroupNorm has TWO parameters per channel (a scale and a shift).", _resnet("norm_half")),
        Mistake("The biases are missing: every conv and the Linear have one bias per output channel.",
                _resnet("no_bias")),
        Mistake("The second 3×3 conv (c_out -> c_out) is missing.", _resnet("conv2")),
    ],
    hint="""Six parts: GroupNorm(c_in), Conv2d(c_in, c_out, 3), Linear(temb, c_out), GroupNorm(c_out),
    Conv2d(c_out, c_out, 3), and Conv2d(c_in, c_out, 1) only when c_in != c_out. A GroupNorm has 2 parameters per
    channel; convs and the Linear have biases. Print the block (`print(ResnetBlock2D(...))`) to see them.""",
    stub='''
    def resnet_params(c_in, c_out, temb):
        """The number of parameters of diffusers' ResnetBlock2D(in_channels=c_in, out_channels=c_out,
        temb_channels=temb): an int, by formula."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- questions
flops_where = Question(
    "ch03.flops_where",
    "Where does the reference UNet spend most of its FLOPs in one forward pass?",
    ["In the lowest-resolution blocks (4×4, 768 channels), where most parameters are",
     "In the highest-resolution blocks (32×32), where every weight is applied at 1,024 positions",
     "In the mid block",
     "Evenly: every level costs about the same"],
    answer="B",
    explanation="a convolution's weights are applied at every pixel: 32×32 = 1,024 times per image at the top "
                "level against 16 times at 4×4, so the top level dominates the compute although it holds few "
                "parameters (plus the N² self-attention there). Run C.summary(reference) to see it.",
    feedback={"A": "That is where the PARAMETERS are; FLOPs also scale with the number of positions."})

attention_shrink = Question(
    "ch03.attention_shrink",
    "Self-attention at 16×16 instead of 32×32 latents: the score matrix per head and image gets how many "
    "times smaller?",
    ["2", "4", "16", "256"],
    answer="C",
    explanation="N = H·W tokens and the matrix is N × N: 1,024² = 1,048,576 entries against 256² = 65,536, "
                "16 times fewer (the side halves, the tokens drop 4×, their square 16×).",
    feedback={"B": "4× fewer tokens, but every token is compared with every token: square it."})

EXERCISES = [conv_params, resnet_params]
QUESTIONS = [flops_where, attention_shrink]
