"""The memory math: a hand-computed example, the naive reference, every ablation switch."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cicm_deploy.config import MemoryConfig
from cicm_deploy.memory import ContextMemory, scope_mask
from cicm_deploy.reference import augment_reference, generalize_reference


def hand_memory(**changes) -> ContextMemory:
    """C = 2, L = 2, K = 2 with memory values simple enough to work out on paper."""
    cfg = MemoryConfig(num_sets=2, set_size=2, **changes)
    memory = ContextMemory(2, cfg)
    with torch.no_grad():
        memory.anchors.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        memory.sets.copy_(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]]))
    return memory


F_HAND = torch.tensor([[2.0, 1.0]])  # scores vs anchors: 2 and 1 -> set 0; vs set 0: 2 and 0
LAM = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]  # 0.8808, 0.1192


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    """[N, C] -> [1, C, 1, N] feature map (one row of N positions)."""
    return vectors.t().unsqueeze(0).unsqueeze(2)


@pytest.mark.parametrize("convention,ratio,expected", [
    ("described", "predicted", [0.75 * 2 + 0.25 * LAM[0], 0.75 * 1]),  # R = (1-g) F + g ctx
    ("printed", "predicted", [0.25 * 2 + 0.75 * LAM[0], 0.25 * 1]),  # Eq. 4 as printed
    ("described", "none", [LAM[0], 0.0]),  # w/o ratio: full context
])
def test_augmentation_hand_computed(convention, ratio, expected):
    memory = hand_memory(gamma_convention=convention, ratio=ratio)
    out, route = memory.augment(as_map(F_HAND), torch.full((1, 1, 1, 1), 0.25))
    assert route.flatten().tolist() == [0]
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_generalization_hand_computed_additive():
    memory = hand_memory(update_rule="additive").train()
    touched = memory.generalize(F_HAND)
    assert touched.tolist() == [True, False]
    c00 = [1 + LAM[0] * 2, LAM[0] * 1]
    c01 = [LAM[1] * 2, LAM[1] * 1]
    assert memory.sets[0].flatten().tolist() == pytest.approx(c00 + c01, abs=1e-6)
    assert memory.sets[1].tolist() == [[0.0, 1.0], [0.0, 2.0]]  # not routed: unchanged
    anchor0 = [0.5 * 1 + 0.5 * (c00[0] + c01[0]) / 2, 0.5 * 0 + 0.5 * (c00[1] + c01[1]) / 2]  # Eq. 3
    assert memory.anchors[0].tolist() == pytest.approx(anchor0, abs=1e-6)
    assert memory.anchors[1].tolist() == [0.0, 1.0]


def test_generalization_hand_computed_bounded():
    memory = hand_memory(update_rule="bounded", update_rate=0.5).train()
    memory.generalize(F_HAND)
    a0, a1 = 0.5 * LAM[0], 0.5 * LAM[1]  # a = eta * min(1, lambda)
    expected = [(1 - a0) * 1 + a0 * 2, a0 * 1, a1 * 2, a1 * 1]
    assert memory.sets[0].flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_similarity_losses_hand_computed():
    memory = hand_memory(similarity_loss="dot")
    inter, intra = (t.detach() for t in memory.similarity_losses())
    assert float(inter) == pytest.approx(0.0)  # orthogonal anchors
    # A0.C00 = 1, A0.C01 = 0, A1.C10 = 1, A1.C11 = 2 -> sum 4
    assert float(intra) == pytest.approx(4.0)
    cosine = hand_memory(similarity_loss="cosine")
    _, intra_cos = (t.detach() for t in cosine.similarity_losses())
    assert float(intra_cos) == pytest.approx(1 + 0 + 1 + 1)  # zero vector: cosine 0


def test_argmax_ties_take_the_first_set_like_torch():
    memory = hand_memory()
    with torch.no_grad():
        memory.anchors.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    _, route = memory.augment(as_map(torch.tensor([[3.0, 5.0]])), torch.ones(1, 1, 1, 1))
    assert route.flatten().tolist() == [0]


def test_route_margins_hand_computed():
    """Best minus second-best routing score over |F| * the longest key (anchors; merged: set vectors)."""
    memory = hand_memory()  # anchors (1, 0) and (0, 1), both of length 1
    feats = torch.tensor([[2.0, 1.0], [3.0, 3.0], [0.0, 4.0]])  # scores (2, 1), (3, 3), (0, 4)
    margins = memory.route_margins(as_map(feats)).flatten()
    assert margins.tolist() == pytest.approx([1 / math.sqrt(5), 0.0, 1.0])
    merged = ContextMemory(2, MemoryConfig(num_sets=2, set_size=2, mode="merged"))  # no anchors
    anchor_only = ContextMemory(2, MemoryConfig(num_sets=2, set_size=2, mode="anchor_only"))  # no sets
    with torch.no_grad():
        merged.sets.copy_(memory.sets)
        anchor_only.anchors.copy_(memory.anchors)
    # merged: a set scores as its best vector, (2, 2) for F = (2, 1), (0, 8) for (0, 4); the longest vector is 2
    assert merged.route_margins(as_map(feats[[0, 2]])).flatten().tolist() == pytest.approx([0.0, 8 / (4 * 2)])
    assert anchor_only.route_margins(as_map(feats)).flatten().tolist() == pytest.approx([1 / math.sqrt(5), 0.0, 1.0])
    single = ContextMemory(2, MemoryConfig(num_sets=1, set_size=2))
    assert math.isinf(float(single.route_margins(as_map(feats[:1]))))


def test_route_margins_have_the_routes_shape_and_are_small_only_near_ties():
    torch.manual_seed(0)
    for region in (1, 2):
        memory = random_memory(2, region_size=region)
        feat = torch.randn(2, 6, 4, 6)
        _, route = memory(feat, torch.ones(2, 1, 4, 6))
        margins = memory.route_margins(feat)
        assert margins.shape == route.shape and bool((margins >= 0).all())
    with torch.no_grad():  # a second anchor equal to the routed one: every position is an exact tie
        memory = random_memory(2)
        memory.anchors[1] = memory.anchors[0] * (1 + 2**-20)
        feat = memory.anchors[0].view(1, 6, 1, 1).repeat(1, 1, 2, 2)
        assert float(memory.route_margins(feat).max()) < 1e-5


def test_scope_mask_keeps_ties():
    scores = torch.tensor([[3.0, 1.0, 3.0, 0.0]])
    assert scope_mask(scores, "top1").tolist() == [[True, False, True, False]]
    assert scope_mask(scores, "top50").tolist() == [[True, False, True, False]]
    assert scope_mask(scores, "all").all()


SWITCHES = list(itertools.product(
    ["sets", "anchor_only", "merged"], ["all", "top50", "top1"], [1, 2]))


def random_memory(seed: int, channels: int = 6, **changes) -> ContextMemory:
    torch.manual_seed(seed)
    cfg = MemoryConfig(num_sets=3, set_size=5, init_scale=0.7, **changes)
    return ContextMemory(channels, cfg)


@pytest.mark.parametrize("mode,scope,region", SWITCHES)
@pytest.mark.parametrize("convention,ratio", [("described", "predicted"), ("printed", "predicted"),
                                              ("described", "none")])
def test_augmentation_matches_naive_loop(mode, scope, region, convention, ratio):
    memory = random_memory(0, mode=mode, augment_scope=scope, region_size=region,
                           gamma_convention=convention, ratio=ratio)
    feat = torch.randn(2, 6, 4, 6)
    gamma = torch.rand(2, 1, 4, 6)
    out, route = memory.augment(feat, gamma)
    ref_out, ref_route = augment_reference(memory, feat, gamma)
    assert torch.equal(route, ref_route)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode,scope,rule", list(itertools.product(
    ["sets", "anchor_only", "merged"], ["all", "top50", "top1"], ["additive", "bounded"])))
def test_generalization_matches_naive_loop(mode, scope, rule):
    memory = random_memory(1, mode=mode, update_scope=scope, update_rule=rule).train()
    feats = torch.randn(17, 6)
    ref_anchors, ref_sets = generalize_reference(memory, feats)
    memory.generalize(feats)
    torch.testing.assert_close(memory.anchors.double(), ref_anchors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory.sets.double(), ref_sets, atol=1e-5, rtol=1e-5)


def test_update_scope_moves_only_the_top_vectors():
    memory = hand_memory(update_scope="top1", update_rule="additive").train()
    memory.generalize(F_HAND)
    assert memory.sets[0, 1].tolist() == [0.0, 0.0]  # second-best vector of the routed set untouched
    assert memory.sets[0, 0].tolist() == pytest.approx([1 + 2 * LAM[0], LAM[0]], abs=1e-6)


def test_augment_scope_top1_uses_only_the_best_vector():
    memory = hand_memory(augment_scope="top1", ratio="none")
    out, _ = memory.augment(as_map(F_HAND), torch.ones(1, 1, 1, 1))
    assert out.flatten().tolist() == pytest.approx([1.0, 0.0])  # exactly C00


def test_anchor_only_and_merged_shapes():
    anchor_only = random_memory(2, mode="anchor_only")
    assert anchor_only.sets.shape == (3, 0, 6) and anchor_only.anchors.shape == (3, 6)
    merged = random_memory(2, mode="merged")
    assert merged.anchors.shape == (0, 6) and merged.sets.shape == (3, 5, 6)
    inter, intra = (t.detach() for t in merged.similarity_losses())
    assert float(inter) == 0.0 and float(intra) == 0.0


def test_generalization_changes_only_routed_sets():
    memory = random_memory(3).train()
    before_a, before_s = memory.anchors.detach().clone(), memory.sets.detach().clone()
    feats = torch.randn(4, 6)
    route, _, _ = memory._scores(feats)
    touched = memory.generalize(feats)
    routed = torch.zeros(3, dtype=torch.bool)
    routed[route] = True
    assert torch.equal(touched, routed)
    for l in range(3):
        changed = not torch.equal(memory.sets[l], before_s[l]) or not torch.equal(memory.anchors[l], before_a[l])
        assert changed == bool(routed[l])


def test_generalization_only_during_training():
    memory = random_memory(4).eval()
    before = [t.detach().clone() for t in (memory.anchors, memory.sets)]
    touched = memory.generalize(torch.randn(8, 6))
    assert not touched.any()
    assert torch.equal(memory.anchors, before[0]) and torch.equal(memory.sets, before[1])


def test_generalization_takes_no_gradient():
    memory = random_memory(5).train()
    feats = torch.randn(8, 6, requires_grad=True)
    memory.generalize(feats)
    assert memory.anchors.grad is None and memory.sets.grad is None and feats.grad is None
    assert memory.sets.requires_grad  # still a parameter the losses can train


def test_bounded_update_stays_within_feature_magnitude_additive_does_not():
    torch.manual_seed(6)
    bounded = random_memory(6, update_rule="bounded").train()
    additive = random_memory(6, update_rule="additive").train()
    for _ in range(50):
        feats = torch.randn(64, 6).clamp(-3, 3)
        bounded.generalize(feats)
        additive.generalize(feats)
    assert bounded.max_abs() <= 3.0
    assert additive.max_abs() > 30.0


def test_scores_stay_fp32_under_autocast():
    memory = random_memory(7)
    feat = torch.randn(1, 6, 3, 3)
    gamma = torch.rand(1, 1, 3, 3)
    expected, route = memory.augment(feat, gamma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, route_amp = memory.augment(feat, gamma)
    assert out.dtype == torch.float32
    assert torch.equal(route, route_amp)
    torch.testing.assert_close(out, expected)


def test_memory_receives_gradient_from_losses_and_augmentation():
    memory = random_memory(8)
    out, _ = memory.augment(torch.randn(1, 6, 2, 2), torch.rand(1, 1, 2, 2))
    inter, intra = memory.similarity_losses()
    (out.square().mean() + inter - intra).backward()
    assert memory.anchors.grad is not None and memory.anchors.grad.abs().sum() > 0
    assert memory.sets.grad is not None and memory.sets.grad.abs().sum() > 0
