"""UNet-CICM and the plain UNet it augments.

The backbone follows the paper's "UNet with 15 convolutional layers" at ``depth=3``: a stem conv,
two convs per encoder level (a strided one, then a plain one), a bottleneck conv, two convs per
decoder level (after nearest upsampling and the skip concatenation) and an output conv:
1 + 2*3 + 1 + 2*3 + 1 = 15. A memory sits at each level in ``cicm_levels`` (the bottleneck by
default, paper Fig. 1a allows several), with a gamma head (3x3 conv + sigmoid) that predicts the
corrupted ratio of each position. With ``cicm_levels=()`` this is the plain UNet.

Input: image [B, 3, H, W] in [0, 1] and mask [B, 1, H, W] with 1 = hole; H and W multiples of
``config.stride``. The network sees the image with its holes zeroed (the paper) or filled from
the known pixels (``hole_fill="harmonic"``, the default model; ``harmonic_fill``), plus the mask. The output
is ``sigmoid(head)`` (the paper) or, with ``output="residual"`` (the default model), the hole fill
plus a correction from a zero-initialised head, clamped to [0, 1].
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .memory import ContextMemory, GeneralizationStats, context_weight


class InpaintOutput(NamedTuple):
    prediction: torch.Tensor  # [B, 3, H, W] the network's output everywhere, in [0, 1]
    composite: torch.Tensor  # [B, 3, H, W] prediction in the holes, the input elsewhere (exactly)
    gammas: dict[str, torch.Tensor]  # level -> [B, 1, h, w] predicted corrupted ratio (predicted mode)
    routes: dict[str, torch.Tensor]  # level -> [B, h/r, w/r] chosen set per region (int64)
    features: dict[str, torch.Tensor]  # level -> [B, C, h, w] features before augmentation


SMOOTHING_STEPS = 8  # full-resolution Jacobi steps of the "smooth-push-pull" fill (more on coarser levels)
HARMONIC_STEPS = 2  # full-resolution Jacobi steps of the "harmonic" fill (4x more per coarser level)
HARMONIC_MAX_STEPS = 32  # and at most this many on any level


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))


def push_pull_fill(image: torch.Tensor, hole: torch.Tensor, levels: int = 7, smoothing: int = 0,
                   even_levels: int = 0) -> torch.Tensor:
    """Fill the hole with colours pulled from the known pixels around it (push-pull interpolation).

    Pull: average the known colours and their coverage over a pyramid of 2x2 cells. Push: from the
    coarsest level down, a cell keeps its own average where it has known pixels and takes the
    coarser level's colour in proportion to what it lacks. Known pixels come back unchanged.
    ``smoothing`` > 0 (``hole_fill="smooth-push-pull"``) relaxes each level's partly known cells
    towards the mean of their four neighbours (``smoothing`` Jacobi steps at full resolution,
    doubling per coarser level up to 4x). Superseded by ``harmonic_fill``, which is closer to the
    harmonic fill for less work; kept so that checkpoints trained on it load and run unchanged.
    ``even_levels``: see ``_pyramid_fill``.
    """
    steps = (lambda level: min(smoothing * 2**level, 4 * smoothing)) if smoothing else None
    return _pyramid_fill(image, hole, levels, steps, anchored=False, even_levels=even_levels)


def harmonic_fill(image: torch.Tensor, hole: torch.Tensor, levels: int = 7, even_levels: int = 0) -> torch.Tensor:
    """Fill the hole with a fast multigrid approximation of the harmonic (Laplace) fill.

    The pyramid of ``push_pull_fill``; then, coarse to fine, each level starts from the coarser
    solution and takes Jacobi steps in which a cell holding a share ``s`` of known pixels is
    anchored to their mean colour with weight ``s`` and moves to the mean of its four neighbours
    with weight ``1 - s``: ``v <- s * mean_known + (1 - s) * mean(neighbours of v)``. At full
    resolution ``s`` is 0 or 1: Laplace's equation with the known pixels as its boundary. Steps
    per level: 2 at full resolution, 4x more per coarser level (a level has 4x fewer cells, so
    each costs the same) up to 32. On the 48 evaluation pairs of reports/quality.md it scores
    30.7/24.3/21.0 dB per hole-size bin, against 30.9/24.5/21.2 for the exact harmonic solution
    (a sparse solve) and 30.1/24.0/20.4 for ``smooth-push-pull`` (measured 2026-11-25).
    Per step: one neighbour sum, one Mul, one Add: it exports to ONNX and TensorRT as is.
    ``even_levels``: see ``_pyramid_fill``.
    """
    return _pyramid_fill(image, hole, levels, lambda level: min(HARMONIC_STEPS * 4**level, HARMONIC_MAX_STEPS),
                         anchored=True, even_levels=even_levels)


def _pyramid_fill(image: torch.Tensor, hole: torch.Tensor, levels: int, steps: Callable[[int], int] | None,
                  anchored: bool, even_levels: int = 0) -> torch.Tensor:
    """Pull (pyramid of known colour and coverage), then push coarse to fine, relaxing each level.

    ``anchored``: every cell is tied to its known mean by its coverage (``harmonic_fill``);
    otherwise only cells without full coverage move, freely (``smooth-push-pull``).
    Odd sizes pool with a partial last cell (ceil mode). ``even_levels``: the caller guarantees
    that the first ``even_levels`` levels have even sides (the model's inputs are multiples of
    its stride), so they pool without ceil mode: the same numbers, and in an exported graph an
    AveragePool that onnxruntime runs 8x faster (89 against 708 us for 3x256x256, measured).
    """
    side = 2**even_levels
    if even_levels and not torch.jit.is_tracing() and (image.shape[-2] % side or image.shape[-1] % side):
        raise ValueError(f"even_levels={even_levels} needs height and width divisible by {side}, got "
                         f"{image.shape[-2]}x{image.shape[-1]}; pass even_levels=0 for any size")
    known = 1.0 - hole
    colours, weights = [image * known], [known]
    for level in range(levels):
        ceil = level >= even_levels
        colours.append(F.avg_pool2d(colours[-1], 2, ceil_mode=ceil))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=ceil))
    filled = colours[-1] / weights[-1].clamp(min=1e-6)
    for level in range(levels - 1, -1, -1):
        colour, weight = colours[level], weights[level]
        if level < even_levels:  # exactly twice the coarser size: a constant scale, no shape arithmetic in a graph
            coarse = F.interpolate(filled, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            coarse = F.interpolate(filled, size=colour.shape[-2:], mode="bilinear", align_corners=False)
        if level == 0:  # coverage is the 0/1 mask: what the general formula gives (exactly, for a 0/1 hole)
            share, anchor = weight, colour
        else:
            share = weight.clamp(max=1.0)
            anchor = colour / weight.clamp(min=1e-6) * share
        filled = anchor + coarse * (1.0 - share)
        if steps is None:
            continue
        if anchored:
            filled = _relax(filled, anchor, 1.0 - share, steps(level))
        else:  # cells with full coverage keep their value, the others move
            free = (weight < 1.0).to(filled.dtype)
            filled = _relax(filled, (1.0 - free) * filled, free, steps(level))
    return filled


def _relax(values: torch.Tensor, anchor: torch.Tensor, free: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Jacobi steps ``values <- anchor + free * mean(in-image 4-neighbours of values)``.

    The neighbour sum is written two ways with the same result: in PyTorch as shifted slices of a
    zero-padded tensor (views: 7x faster than a depthwise convolution in CPU eager mode on 3
    channels, measured at 256x256), and in an exported graph as one depthwise 3x3 Conv with a
    constant kernel (onnxruntime copies every Slice: the slices took 18 % of its time, measured).
    """
    exporting = torch.onnx.is_in_onnx_export()
    cross = [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]

    def neighbour_sum(x: torch.Tensor, channels: int) -> torch.Tensor:
        if exporting:  # a constant [C, 1, 3, 3] kernel: an initializer in the graph
            kernel = torch.tensor([[cross]] * channels, dtype=x.dtype, device=x.device)
            return F.conv2d(x, kernel, padding=1, groups=channels)
        p = F.pad(x, (1, 1, 1, 1))
        return p[:, :, :-2, 1:-1] + p[:, :, 2:, 1:-1] + p[:, :, 1:-1, :-2] + p[:, :, 1:-1, 2:]

    channels = int(values.shape[1])  # static: the image's channels
    # in-image neighbours: 2..4 (0 on a 1x1 level). Exported, one per colour channel, with the
    # values' own depthwise Conv: onnxruntime ran the one-channel Conv in its blocked layout, padded
    # to 16 outputs (0.6 ms at 256x256, profiled), and the steps' Mul then broadcast. Same output,
    # bit for bit; the fill alone 5.9 -> 5.3 ms in onnxruntime (2026-12-07, 2 threads, 60 rounds).
    ones = torch.ones_like(values[:1]) if exporting else torch.ones_like(values[:, :1])
    count = neighbour_sum(ones, int(ones.shape[1])).clamp(min=1.0)
    move = free / count
    for _ in range(steps):
        values = anchor + move * neighbour_sum(values, channels)
    return values


def _split_concat_conv(layer: nn.Sequential, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``layer(cat([a, b]))`` for a Conv2d + activation ``layer``, as two convolutions summed.

    For exported graphs, where one input comes from a memory. onnxruntime's CPU convolutions run
    in a blocked channel layout (NCHWc); a channel Concat of two blocked tensors stays blocked and
    the convolution after it takes the activation, so the plain Concat is fastest where both
    inputs are convolution outputs. The memory's output is plain NCHW (its MatMuls), and a Concat
    with it would cost a layout round trip: there each convolution reads its input in the layout
    it has. Concat at every level but the memory's ran 2 % faster than splitting all three
    (2026-12-03, onnxruntime 1.32, default model, 256x256, 2 threads; the split everywhere was
    3-7 % faster than Concat everywhere with an older onnxruntime, level with 1.32). Same result
    up to float rounding.
    """
    conv, act = layer[0], layer[1]
    channels = int(a.shape[1])
    y = F.conv2d(a, conv.weight[:, :channels], None, conv.stride, conv.padding)
    y = y + F.conv2d(b, conv.weight[:, channels:], conv.bias, conv.stride, conv.padding)
    return act(y)


class Composite(nn.Module):
    """``prediction`` in the holes, ``image`` elsewhere, bit for bit (``hole`` is exactly 0 or 1).

    A module so that its exported nodes are named ``/model/composite/...`` (FP16 export keeps
    them FP32). In an exported graph it is ``prediction * hole + (image - image * hole)``: for
    finite values and a 0/1 hole every term is exact (a product by 0 or 1, a difference that is 0
    or ``image``, a sum with an exact zero), so it equals ``Where`` bit for bit, and onnxruntime's
    CPU provider runs the four elementwise ops in 0.05 ms against 0.6 ms for its broadcasting
    ``Where`` at 3x256x256 (the whole default model: 0.7-1.7 % faster, 2026-12-03, 2 threads).
    Not ``image * (1 - hole)``: the exporter would merge that with the hole fill's identical
    product, which runs in FP16 in an FP16 graph.
    """

    def forward(self, hole: torch.Tensor, prediction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return prediction * hole + (image - image * hole)
        return torch.where(hole > 0.5, prediction, image)


def corrupted_ratio(mask: torch.Tensor, level: int, region_size: int = 1) -> torch.Tensor:
    """Ground-truth corrupted ratio per position of ``level``: the hole fraction of its pixels.

    The paper accumulates and normalizes |I - I_gt| per region; with a binary mask and holes
    zeroed in the input, the mask fraction is that quantity without its dependence on pixel
    colours (a black pixel in a hole would otherwise count as intact). [B, 1, h, w].
    """
    return F.avg_pool2d(mask.float(), 2**level * region_size)


def complete_regions(mask: torch.Tensor, level: int, region_size: int = 1) -> torch.Tensor:
    """[B, 1, h/r, w/r] True where a region's pixel footprint holds no hole pixel."""
    return F.max_pool2d(mask.float(), 2**level * region_size) == 0


class UNetCICM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ch = [config.channels(level) for level in range(config.depth + 1)]
        self.stem = _conv(config.in_channels + 1, ch[0])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(ch[i - 1], ch[i], stride=2), _conv(ch[i], ch[i]))
            for i in range(1, config.depth + 1))
        self.bottleneck = _conv(ch[-1], ch[-1])
        self.up = nn.ModuleList(
            nn.Sequential(_conv(ch[i] + ch[i - 1], ch[i - 1]), _conv(ch[i - 1], ch[i - 1]))
            for i in range(config.depth, 0, -1))
        self.head = nn.Conv2d(ch[0], config.in_channels, 3, padding=1)
        if config.output == "residual":  # start from the hole fill itself: the correction begins at zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.composite = Composite()  # no weights: checkpoints are unchanged
        self.memories = nn.ModuleDict(
            {str(level): ContextMemory(ch[level], config.memory) for level in config.cicm_levels})
        self.gamma_heads = nn.ModuleDict()
        if config.memory.ratio == "predicted":
            for level in config.cicm_levels:
                self.gamma_heads[str(level)] = nn.Conv2d(ch[level], 1, 3, padding=1)

    def _check_inputs(self, image: torch.Tensor, mask: torch.Tensor) -> None:
        stride = self.config.stride
        if image.dim() != 4 or image.shape[1] != self.config.in_channels:
            raise ValueError(f"image must be [B, {self.config.in_channels}, H, W], got {list(image.shape)}")
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
            raise ValueError(f"mask must be [B, 1, H, W] matching image {list(image.shape)}, got {list(mask.shape)}")
        if image.shape[2] % stride or image.shape[3] % stride:
            raise ValueError(f"height and width must be multiples of {stride}, got {image.shape[2]}x{image.shape[3]}"
                             " (cicm_deploy.images.pad_to_multiple pads them)")

    def _augment(self, level: int, feat: torch.Tensor, mask: torch.Tensor, out: InpaintOutput) -> torch.Tensor:
        key = str(level)
        if key not in self.memories:
            return feat
        out.features[key] = feat
        if key in self.gamma_heads:
            gamma = torch.sigmoid(self.gamma_heads[key](feat))
            out.gammas[key] = gamma
        elif self.config.memory.ratio == "mask":
            gamma = corrupted_ratio(mask, level)
        else:  # "none": full context everywhere, gamma is not used
            gamma = torch.ones_like(feat[:, :1])
        feat, route = self.memories[key](feat, context_weight(gamma, self.config.memory))
        out.routes[key] = route
        return feat

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> InpaintOutput:
        """image [B, 3, H, W] in [0, 1]; mask [B, 1, H, W], 1 = hole (values > 0.5 count as hole)."""
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            self._check_inputs(image, mask)
        hole = (mask > 0.5).to(image.dtype)
        out = InpaintOutput(image, image, {}, {}, {})
        if self.config.hole_fill == "push-pull":
            seen = push_pull_fill(image, hole, even_levels=self.config.depth)
        elif self.config.hole_fill == "smooth-push-pull":
            seen = push_pull_fill(image, hole, smoothing=SMOOTHING_STEPS, even_levels=self.config.depth)
        elif self.config.hole_fill == "harmonic":  # inputs are multiples of the stride, 2**depth at least
            seen = harmonic_fill(image, hole, even_levels=self.config.depth)
        else:
            seen = image * (1.0 - hole)
        x = self.stem(torch.cat([seen, hole], dim=1))
        x = self._augment(0, x, hole, out)
        skips = [x]
        for level, block in enumerate(self.down, start=1):
            x = block(x)
            if level == self.config.depth:
                x = self.bottleneck(x)
            x = self._augment(level, x, hole, out)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        exporting = torch.onnx.is_in_onnx_export()
        levels = self.config.cicm_levels
        for index, block in enumerate(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            # exported graphs split where an input comes from a memory, not from a convolution
            if exporting and ((index == 0 and self.config.depth in levels) or self.config.depth - 1 - index in levels):
                x = block[1](_split_concat_conv(block[0], x, skips.pop()))
            else:
                x = block(torch.cat([x, skips.pop()], dim=1))
        if self.config.output == "residual":
            prediction = (seen + self.head(x)).clamp(0.0, 1.0)
        else:
            prediction = torch.sigmoid(self.head(x))
        merged = self.composite(hole, prediction, image)  # known pixels kept bit for bit
        # A new tuple, not out._replace(...): torch.compile (Dynamo in torch 2.11) fails on the latter.
        return InpaintOutput(prediction, merged, out.gammas, out.routes, out.features)

    @torch.no_grad()
    def generalize(self, output: InpaintOutput, mask: torch.Tensor,
                   reduce: Callable[[GeneralizationStats], None] | None = None) -> dict[str, torch.Tensor]:
        """Context generalization after a training step: feed complete regions to each memory.

        Uses the features of ``output`` (the step's forward pass); ``reduce`` as in
        ``ContextMemory.generalize``. No-op in eval mode. Returns level -> touched sets [L] (bool).
        """
        touched = {}
        r = self.config.memory.region_size
        for key, memory in self.memories.items():
            feat = output.features[key].detach().float()
            regions = F.avg_pool2d(feat, r) if r > 1 else feat
            complete = complete_regions(mask, int(key), r).flatten()  # [B*h*w]
            flat = regions.permute(0, 2, 3, 1).reshape(-1, regions.shape[1])
            touched[key] = memory.generalize(flat[complete], reduce)
        return touched

    def memory_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over memories of (L_inter, L_intra); zeros for the plain UNet."""
        inter = intra = next(self.parameters()).sum() * 0.0
        for memory in self.memories.values():
            a, b = memory.similarity_losses()
            inter, intra = inter + a, intra + b
        return inter, intra

    def num_conv_layers(self) -> int:
        """Convolutions of the backbone (gamma heads excluded): 15 at depth 3."""
        convs = [m for name, m in self.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("gamma_heads")]
        return len(convs)


def build_model(config: ModelConfig) -> UNetCICM:
    return UNetCICM(config)
