"""Readable, slow reference of the memory math: one loop iteration per region.

It restates Eq. 2, 3 and 4 (with the decisions of ``memory.py``) position by position, so the
vectorized ``ContextMemory`` can be tested against it. It never runs in production.
"""

from __future__ import annotations

import math

import torch

from .memory import ContextMemory, keep_count


def _kept(scores: list[float], scope: str) -> list[bool]:
    """The entries at least as large as the k-th largest (ties kept)."""
    keep = keep_count(len(scores), scope)
    kth = sorted(scores, reverse=True)[keep - 1]
    return [s >= kth for s in scores]


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:  # strict: the first maximum wins, as torch.argmax
            best = i
    return best


def _softmax(values: list[float], kept: list[bool]) -> list[float]:
    top = max(v for v, k in zip(values, kept) if k)
    exps = [math.exp(v - top) if k else 0.0 for v, k in zip(values, kept)]
    total = sum(exps)
    return [e / total for e in exps]


def region_context(memory: ContextMemory, f: torch.Tensor, scope: str) -> tuple[torch.Tensor, int, list[float]]:
    """Context vector, route and per-vector weights (over the routed set, or all L*K when merged)."""
    cfg = memory.cfg
    anchors = memory.anchors.detach().double()
    sets = memory.sets.detach().double()
    f = f.double()
    if cfg.mode == "merged":
        vectors = [sets[l, k] for l in range(sets.shape[0]) for k in range(sets.shape[1])]
        scores = [float(f @ v) for v in vectors]
        route = _argmax(scores) // sets.shape[1]
    else:
        route = _argmax([float(f @ anchors[l]) for l in range(anchors.shape[0])])
        if cfg.mode == "anchor_only":
            return anchors[route], route, []
        vectors = [sets[route, k] for k in range(sets.shape[1])]
        scores = [float(f @ v) for v in vectors]
    lam = _softmax(scores, _kept(scores, scope))
    ctx = torch.zeros_like(f)
    for weight, vector in zip(lam, vectors):
        ctx = ctx + weight * vector
    return ctx, route, lam


def augment_reference(memory: ContextMemory, feat: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 for every region of feat [B, C, H, W] with ratios gamma [B, 1, H, W]."""
    cfg = memory.cfg
    r = cfg.region_size
    feat, gamma = feat.detach(), gamma.detach()
    b, c, height, width = feat.shape
    out = torch.zeros(b, c, height, width, dtype=torch.float64)
    routes = torch.zeros(b, height // r, width // r, dtype=torch.long)
    for i in range(b):
        for y in range(height // r):
            for x in range(width // r):
                window = (slice(y * r, (y + 1) * r), slice(x * r, (x + 1) * r))
                region = feat[i, :, window[0], window[1]].double().mean(dim=(1, 2))
                ratio = float(gamma[i, 0, window[0], window[1]].double().mean())
                if cfg.ratio == "none":
                    w = 1.0
                elif cfg.gamma_convention == "described":
                    w = ratio
                else:
                    w = 1.0 - ratio
                ctx, route, _ = region_context(memory, region, cfg.augment_scope)
                routes[i, y, x] = route
                for yy in range(y * r, (y + 1) * r):
                    for xx in range(x * r, (x + 1) * r):
                        out[i, :, yy, xx] = (1.0 - w) * feat[i, :, yy, xx].double() + w * ctx
    return out, routes


def generalize_reference(memory: ContextMemory, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchors and sets after injecting complete-region features [N, C] (Eq. 2 and 3).

    Every feature is scored against the memory as it was before the batch (see memory.py).
    """
    cfg = memory.cfg
    anchors = memory.anchors.detach().double().clone()
    sets = memory.sets.detach().double().clone()
    num_sets, set_size, _ = sets.shape
    if cfg.mode == "anchor_only":
        total = {l: torch.zeros_like(anchors[0]) for l in range(num_sets)}
        count = {l: 0 for l in range(num_sets)}
        for f in feats:
            _, route, _ = region_context(memory, f, "all")
            total[route] = total[route] + f.double()
            count[route] += 1
        for l in range(num_sets):
            if count[l]:
                anchors[l] = cfg.momentum * anchors[l] + (1 - cfg.momentum) * total[l] / count[l]
        return anchors, sets

    acc = torch.zeros_like(sets)
    weight = torch.zeros(num_sets, set_size, dtype=torch.float64)
    for f in feats:
        _, route, lam_all = region_context(memory, f, "all")
        scope = _kept_update_weights(memory, f, route, lam_all)
        for (l, k), lam in scope.items():
            acc[l, k] = acc[l, k] + lam * f.double()
            weight[l, k] += lam
    for l in range(num_sets):
        for k in range(set_size):
            if cfg.update_rule == "additive":
                sets[l, k] = sets[l, k] + acc[l, k]
            else:
                alpha = cfg.update_rate * min(1.0, float(weight[l, k]))
                if weight[l, k] > 0:
                    mean = acc[l, k] / weight[l, k]
                    sets[l, k] = (1 - alpha) * sets[l, k] + alpha * mean
        if cfg.mode == "sets" and float(weight[l].sum()) > 0:
            anchors[l] = cfg.momentum * anchors[l] + (1 - cfg.momentum) * sets[l].mean(0)
    return anchors, sets


def _kept_update_weights(memory: ContextMemory, f: torch.Tensor, route: int, lam: list[float]) -> dict[tuple[int, int], float]:
    """lambda of the vectors the update scope keeps, keyed by (set, index); the rest get none."""
    set_size = memory.sets.shape[1]
    sets = memory.sets.detach().double()
    if memory.cfg.mode == "merged":
        keys = [(l, k) for l in range(sets.shape[0]) for k in range(set_size)]
    else:
        keys = [(route, k) for k in range(set_size)]
    scores = [float(f.double() @ sets[l, k]) for l, k in keys]
    kept = _kept(scores, memory.cfg.update_scope)
    return {key: value for key, value, keep in zip(keys, lam, kept) if keep}
