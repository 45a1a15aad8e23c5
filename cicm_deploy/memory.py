"""The cross-image context memory (CICM, paper Sec. 4): routing, augmentation, generalization.

Shapes: N region features of C channels; L sets (``num_sets``) of K vectors (``set_size``).
``anchors`` is [L, C] and ``sets`` is [L, K, C].

Decisions the paper leaves open, made here (DESIGN §2):

* **Parameters, not buffers.** Anchors and sets are ``nn.Parameter``s. L_inter and L_intra
  (Eq. 8) involve nothing but the memory, so with buffers they would have no gradient at all and
  the paper's "w/o intra / w/o inter" ablations would change nothing. As parameters the optimizer
  moves them by those losses (and by the inpainting loss through the weighted sum of Eq. 4),
  and context generalization overwrites them in place, without gradient, after each batch.
* **Batch-simultaneous generalization.** Every feature of a batch is scored against the memory
  as it was before the batch; the contributions are summed (``collect``) and then applied once
  (``apply``). Sequential injection would make the result depend on the order of positions, and
  the sum is what distributed training all-reduces so that every rank holds the same memory.
* **Anchors move only where features went** (Eq. 3 is applied to the sets that received at least
  one feature in the batch); the other sets are left untouched.
* **Bounded update** (default, a named deviation): Eq. 2 adds ``lambda * F`` forever, so set
  vectors grow without bound and overflow FP16 (max 65504) after export. The bounded rule moves a
  set vector towards the lambda-weighted mean of its features,
  ``C <- (1 - a) C + a * mean_F``, ``a = eta * min(1, sum lambda)``: a convex combination, so
  every set vector (and, by Eq. 3, every anchor) stays inside the hull of features seen.
  ``update_rule="additive"`` keeps Eq. 2 as printed.
* **Scopes** (Table 1 ablations): "top50"/"top1" keep the vectors whose score is at least the
  k-th largest (ties kept). For augmentation the softmax is taken over the kept vectors; for
  generalization the full softmax is computed and the weights of the others are zeroed.
* **Eq. 4's gamma.** As printed, R = gamma F + (1 - gamma) ctx, but the text says a *more*
  corrupted region (larger gamma) gets *more* context, and "w/o ratio" (gamma = 1) means full
  context. The default ``gamma_convention="described"`` follows the text: R = (1 - gamma) F +
  gamma ctx; "printed" follows the formula. ``ratio="none"`` always uses full context.
* **Similarity losses.** L_inter (sum over l != o) and L_intra (sum over l, k), Eq. 8's sums,
  are computed on cosine similarities by default: raw dot products are unbounded, so maximizing
  L_intra would inflate the memory's magnitude. ``similarity_loss="dot"`` keeps Eq. 8's dot
  products. (l = o is left out of L_inter: it would only measure each anchor's own norm.)
* Scores, argmax and softmax always run in FP32, whatever the autocast state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import MemoryConfig


def keep_count(size: int, scope: str) -> int:
    """How many of ``size`` candidates a scope keeps ("all", "top50", "top1")."""
    if scope == "all":
        return size
    if scope == "top50":
        return max(1, math.ceil(size / 2))
    return 1


def scope_mask(scores: torch.Tensor, scope: str) -> torch.Tensor:
    """Boolean mask [..., K]: the entries at least as large as the k-th largest (ties kept)."""
    size = scores.shape[-1]
    keep = keep_count(size, scope)
    if keep >= size:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = scores.topk(keep, dim=-1).values[..., -1:]
    return scores >= kth


def context_weight(gamma: torch.Tensor, cfg: MemoryConfig) -> torch.Tensor:
    """The weight w of the context in R = (1 - w) F + w ctx, from the corrupted ratio gamma."""
    if cfg.ratio == "none":
        return torch.ones_like(gamma)
    return gamma if cfg.gamma_convention == "described" else 1.0 - gamma


@dataclass
class GeneralizationStats:
    """What one batch contributes to the memory; summable across ranks (all-reduce SUM)."""

    weighted_sum: torch.Tensor  # [L, K, C]: sum_n lambda_nlk F_n (anchor_only: [L, 1, C] sum of F)
    weight: torch.Tensor  # [L, K]: sum_n lambda_nlk (anchor_only: [L, 1] feature counts)

    def tensors(self) -> list[torch.Tensor]:
        return [self.weighted_sum, self.weight]


def _onehot(route: torch.Tensor, num_sets: int) -> torch.Tensor:
    """[N] int64 -> [N, L] float32 one-hot (Equal + Cast in ONNX)."""
    return (route.unsqueeze(1) == torch.arange(num_sets, device=route.device)).float()


class ContextMemory(nn.Module):
    """One CICM layer for feature maps of ``channels`` channels."""

    def __init__(self, channels: int, cfg: MemoryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        num_sets = cfg.num_sets
        set_size = 0 if cfg.mode == "anchor_only" else cfg.set_size  # anchor only: no sets
        num_anchors = 0 if cfg.mode == "merged" else num_sets  # merged sets: no anchors
        self.anchors = nn.Parameter(torch.randn(num_anchors, channels) * cfg.init_scale)
        self.sets = nn.Parameter(torch.randn(num_sets, set_size, channels) * cfg.init_scale)

    # ------------------------------------------------------------------ scoring
    def _scores(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Route [N], its one-hot [N, L] and the routed set's logits [N, K] (merged: all L*K).

        Written with ops every ONNX consumer supports (MatMul, ArgMax, Equal, Mul, ReduceSum):
        the one-hot selects the routed set's logits instead of a gather.
        """
        feats = feats.float()
        sets = self.sets.float()
        n = feats.shape[0]
        num_sets, set_size, channels = sets.shape
        if self.cfg.mode == "merged":
            logits = feats @ sets.reshape(num_sets * set_size, channels).t()  # [N, L*K]
            # the set holding the best vector (first on ties), as argmax(logits) // K, without the
            # integer division TensorRT's parser lacks
            route = torch.argmax(logits.reshape(n, num_sets, set_size).amax(dim=2), dim=1)
            return route, _onehot(route, num_sets), logits
        route = torch.argmax(feats @ self.anchors.float().t(), dim=1)  # [N]
        onehot = _onehot(route, num_sets)  # [N, L]
        if self.cfg.mode == "anchor_only":
            return route, onehot, feats.new_zeros(n, 0)
        # All L*K scores in one matmul, then the routed set's K of them: cheaper than gathering
        # [N, K, C] set vectors.
        logits = (feats @ sets.reshape(num_sets * set_size, channels).t()).reshape(n, num_sets, set_size)
        return route, onehot, (logits * onehot.unsqueeze(2)).sum(1)  # [N, K]

    def _spread(self, onehot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Per-feature weights over the routed set [N, K] -> over the whole memory [N, L*K]."""
        if self.cfg.mode == "merged":
            return weights
        return (onehot.unsqueeze(2) * weights.unsqueeze(1)).flatten(1)

    # ------------------------------------------------------------- augmentation
    def context(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vectors [N, C] (FP32) and routes [N] for region features ``feats`` [N, C]."""
        route, onehot, logits = self._scores(feats)
        if self.cfg.mode == "anchor_only":
            return onehot @ self.anchors.float(), route
        if self.cfg.augment_scope != "all":
            logits = logits.masked_fill(~scope_mask(logits, self.cfg.augment_scope), float("-inf"))
        lam = torch.softmax(logits, dim=-1)
        weights = self._spread(onehot, lam)  # [N, L*K]
        return weights @ self.sets.float().reshape(-1, self.channels), route

    def forward(self, feat: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a feature map: R = (1 - w) F + w ctx (Eq. 4 with w = ``context_weight(gamma)``).

        feat [B, C, H, W]; weight [B, 1, H, W] in [0, 1], the context weight per position.
        Returns the augmented map [B, C, H, W] (dtype of ``feat``) and routes [B, H/r, W/r].
        With region_size 1 this module is exactly the CICMAugment op (DESIGN §3): the exporter
        finds its nodes by this module's name.
        """
        r = self.cfg.region_size
        with torch.autocast(device_type=feat.device.type, enabled=False):
            regions = F.avg_pool2d(feat.float(), r) if r > 1 else feat.float()  # [B, C, h, w]
            b, c, h, w = regions.shape
            flat = regions.permute(0, 2, 3, 1).reshape(b * h * w, c)
            ctx, route = self.context(flat)
            ctx = ctx.reshape(b, h, w, c).permute(0, 3, 1, 2)
            weight = weight.float()
            if r > 1:  # one context and one weight per region, shared by its positions
                ctx = F.interpolate(ctx, scale_factor=r, mode="nearest")
                weight = F.interpolate(F.avg_pool2d(weight, r), scale_factor=r, mode="nearest")
            out = (1.0 - weight) * feat.float() + weight * ctx
        return out.to(feat.dtype), route.reshape(b, h, w)

    def augment(self, feat: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` from the corrupted ratio gamma [B, 1, H, W], per the configured convention."""
        return self(feat, context_weight(gamma, self.cfg))

    @torch.no_grad()
    def route_margins(self, feat: torch.Tensor) -> torch.Tensor:
        """How far each region's route is from a tie, [B, h, w] (the routes' shape; FP32).

        The best set's routing score minus the second best's (scores F.A_l; merged: a set's best
        F.C_lk), over |F| times the longest key, which bounds every score. Where this is near FP32's
        rounding, two sets score alike to within what another implementation of the same sums (a
        different summation order: onnxruntime, TensorRT, another CPU) may round either way, and
        both routes are right; parity checks accept either there. +inf with a single set.
        """
        r = self.cfg.region_size
        regions = F.avg_pool2d(feat.float(), r) if r > 1 else feat.float()
        b, c, h, w = regions.shape
        flat = regions.permute(0, 2, 3, 1).reshape(b * h * w, c)
        num_sets = self.sets.shape[0]
        if num_sets < 2:
            return flat.new_full((b, h, w), math.inf)
        if self.cfg.mode == "merged":
            keys = self.sets.float().reshape(-1, c)
            scores = (flat @ keys.t()).reshape(len(flat), num_sets, -1).amax(dim=2)
        else:
            keys = self.anchors.float()
            scores = flat @ keys.t()
        best, second = scores.topk(2, dim=1).values.unbind(1)
        bound = flat.norm(dim=1) * keys.norm(dim=1).max()
        return ((best - second) / bound.clamp(min=torch.finfo(torch.float32).tiny)).reshape(b, h, w)

    # ----------------------------------------------------------- generalization
    @torch.no_grad()
    def collect(self, feats: torch.Tensor) -> GeneralizationStats:
        """Eq. 2's contributions of complete-region features ``feats`` [N, C] (FP32 sums)."""
        feats = feats.detach().float()
        num_sets, set_size, channels = self.sets.shape
        route, onehot, logits = self._scores(feats)
        if self.cfg.mode == "anchor_only":
            return GeneralizationStats((onehot.t() @ feats).unsqueeze(1), onehot.sum(0).unsqueeze(1))
        lam = torch.softmax(logits, dim=-1)
        lam = lam * scope_mask(logits, self.cfg.update_scope)
        weights = self._spread(onehot, lam)  # [N, L*K]
        weighted_sum = (weights.t() @ feats).view(num_sets, set_size, channels)
        return GeneralizationStats(weighted_sum, weights.sum(0).view(num_sets, set_size))

    @torch.no_grad()
    def apply(self, stats: GeneralizationStats) -> torch.Tensor:
        """Write one batch's contributions into the memory; returns the touched sets [L] (bool)."""
        cfg = self.cfg
        beta = cfg.momentum
        if cfg.mode == "anchor_only":
            count = stats.weight[:, 0]
            touched = count > 0
            mean = stats.weighted_sum[:, 0] / count.clamp(min=1).unsqueeze(1)
            new = beta * self.anchors.float() + (1.0 - beta) * mean
            self.anchors.copy_(torch.where(touched.unsqueeze(1), new, self.anchors.float()))
            return touched
        sets = self.sets.float()
        weight = stats.weight.unsqueeze(2)  # [L, K, 1]
        if cfg.update_rule == "additive":  # Eq. 2: C <- C + sum_n lambda F_n
            new_sets = sets + stats.weighted_sum
        else:  # bounded: C <- (1 - a) C + a * weighted mean of F, a = eta * min(1, sum lambda)
            scale = weight.clamp(min=1.0)
            new_sets = sets + cfg.update_rate * (stats.weighted_sum - weight * sets) / scale
        touched = stats.weight.sum(1) > 0  # [L]
        self.sets.copy_(new_sets)
        if cfg.mode == "sets":  # Eq. 3 on the sets that received features
            new_anchors = beta * self.anchors.float() + (1.0 - beta) * new_sets.mean(1)
            self.anchors.copy_(torch.where(touched.unsqueeze(1), new_anchors, self.anchors.float()))
        return touched

    def generalize(self, feats: torch.Tensor,
                   reduce: Callable[[GeneralizationStats], None] | None = None) -> torch.Tensor:
        """Context generalization (training only): inject complete-region features [N, C].

        ``reduce`` sums the batch's statistics across processes in place (distributed training);
        it is called even when this process has no complete region, since every rank must join.
        In eval mode this does nothing: a deployed model never changes its memory.
        Returns the touched sets [L] (bool).
        """
        if not self.training or (feats.shape[0] == 0 and reduce is None):
            return torch.zeros(self.cfg.num_sets, dtype=torch.bool, device=self.sets.device)
        stats = self.collect(feats)
        if reduce is not None:
            reduce(stats)
        return self.apply(stats)

    # ------------------------------------------------------------------ losses
    def similarity_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_inter, L_intra) of Eq. 8: minimize the first, maximize the second.

        L_inter sums the similarity over anchor pairs l != o (l = o would only measure each
        anchor's own norm); L_intra sums the similarity between each anchor and its set's vectors.
        Ablation modes without anchors or sets give zero for the missing term.
        """
        anchors, sets = self.anchors, self.sets
        if self.cfg.similarity_loss == "cosine":
            anchors = F.normalize(anchors, dim=-1)
            sets = F.normalize(sets, dim=-1)
        zero = self.sets.sum() * 0.0
        num = anchors.shape[0]
        if num > 1:
            gram = anchors @ anchors.t()
            inter = gram.sum() - gram.diagonal().sum()
        else:
            inter = zero
        if num > 0 and sets.shape[1] > 0:
            intra = torch.einsum("lc,lkc->lk", anchors, sets).sum()
        else:
            intra = zero
        return inter, intra

    def max_abs(self) -> float:
        """Largest magnitude stored in the memory (FP16 overflows past 65504)."""
        values = [t.detach().abs().max() for t in (self.anchors, self.sets) if t.numel()]
        return float(max(values)) if values else 0.0
