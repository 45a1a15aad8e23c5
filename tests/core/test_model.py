"""UNet-CICM: structure, the composite, gamma/ratio modes, and generalization on complete regions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cicm_deploy.config import ConfigError, MemoryConfig, ModelConfig, preset
from cicm_deploy.model import UNetCICM, complete_regions, corrupted_ratio, harmonic_fill, push_pull_fill
from cicm_deploy.reference import augment_reference

TINY = preset("tiny")


def inputs(b=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    mask = torch.zeros(b, 1, h, w)
    mask[:, :, 4:20, 8:30] = 1.0
    return image, mask


def test_paper_backbone_has_15_conv_layers():
    assert UNetCICM(ModelConfig()).num_conv_layers() == 15
    assert UNetCICM(preset("unet")).num_conv_layers() == 15


def test_plain_unet_has_no_memory():
    model = UNetCICM(preset("tiny-unet"))
    out = model(*inputs())
    assert len(model.memories) == 0 and out.routes == {} and out.gammas == {}


def test_forward_shapes_and_ranges():
    torch.manual_seed(0)
    model = UNetCICM(TINY).eval()
    image, mask = inputs()
    out = model(image, mask)
    assert out.prediction.shape == image.shape and out.composite.shape == image.shape
    assert out.routes["3"].shape == (2, 4, 6) and out.routes["3"].dtype == torch.int64
    gamma = out.gammas["3"]
    assert gamma.shape == (2, 1, 4, 6) and gamma.min() >= 0 and gamma.max() <= 1
    assert 0 <= out.prediction.min() and out.prediction.max() <= 1


def test_composite_keeps_known_pixels_bit_for_bit():
    torch.manual_seed(0)
    model = UNetCICM(TINY)
    image, mask = inputs()
    out = model(image, mask)
    known = mask.expand_as(image) == 0
    assert torch.equal(out.composite[known], image[known])
    hole = ~known
    assert torch.equal(out.composite[hole], out.prediction[hole])


def test_model_memory_matches_naive_reference_at_the_bottleneck(diversified):
    torch.manual_seed(1)
    model = UNetCICM(TINY).eval()
    diversified(model)
    image, mask = inputs(b=1)
    out = model(image, mask)
    ref_feat, ref_route = augment_reference(model.memories["3"], out.features["3"], out.gammas["3"])
    assert len(torch.unique(ref_route)) >= 2  # not every position in one set: the comparison means something
    assert torch.equal(out.routes["3"], ref_route)
    feat, _ = model.memories["3"].augment(out.features["3"], out.gammas["3"])
    torch.testing.assert_close(feat.detach().double(), ref_feat, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ratio", ["predicted", "none", "mask"])
@pytest.mark.parametrize("levels", [(3,), (2, 3), (1,)])
def test_ratio_modes_and_levels_run_and_train(ratio, levels):
    torch.manual_seed(2)
    cfg = TINY.replace(cicm_levels=levels, memory_ratio=ratio)
    model = UNetCICM(cfg).train()
    image, mask = inputs()
    out = model(image, mask)
    assert set(out.routes) == {str(level) for level in levels}
    assert bool(out.gammas) == (ratio == "predicted")
    inter, intra = model.memory_losses()
    loss = (out.prediction - image).square().mean() + inter - intra
    loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if not name.startswith("gamma_heads")
               or ratio == "predicted")


def test_region_size_two():
    torch.manual_seed(3)
    cfg = TINY.replace(memory_region_size=2)
    model = UNetCICM(cfg)
    image, mask = inputs(h=32, w=48)
    out = model(image, mask)
    assert out.routes["3"].shape == (2, 2, 3)


def test_input_errors():
    model = UNetCICM(TINY)
    image, mask = inputs()
    with pytest.raises(ValueError, match="multiples of 8"):
        model(image[:, :, :30], mask[:, :, :30])
    with pytest.raises(ValueError, match="mask must be"):
        model(image, mask[:, :, :16])
    with pytest.raises(ValueError, match="image must be"):
        model(image[:, :2], mask)


def test_gt_ratio_and_complete_regions():
    mask = torch.zeros(1, 1, 16, 16)
    mask[:, :, :8, :4] = 1.0
    ratio = corrupted_ratio(mask, level=3)
    assert ratio.flatten().tolist() == [0.5, 0.0, 0.0, 0.0]
    assert complete_regions(mask, level=3).flatten().tolist() == [False, True, True, True]


def test_generalize_feeds_exactly_the_complete_regions(monkeypatch):
    torch.manual_seed(4)
    model = UNetCICM(TINY).train()
    image, mask = inputs()
    out = model(image, mask)
    seen = {}
    memory = model.memories["3"]
    monkeypatch.setattr(memory, "generalize", lambda feats, reduce=None: seen.setdefault("feats", feats) is None)
    model.generalize(out, mask)
    complete = complete_regions(mask, 3).flatten()
    feat = out.features["3"].permute(0, 2, 3, 1).reshape(-1, out.features["3"].shape[1])
    assert torch.equal(seen["feats"], feat[complete])
    assert 0 < int(complete.sum()) < complete.numel()


def test_generalize_changes_memory_in_training_only():
    torch.manual_seed(5)
    model = UNetCICM(TINY)
    image, mask = inputs()
    model.eval()
    before = model.memories["3"].sets.detach().clone()
    model.generalize(model(image, mask), mask)
    assert torch.equal(model.memories["3"].sets, before)
    model.train()
    touched = model.generalize(model(image, mask), mask)
    assert touched["3"].any()
    assert not torch.equal(model.memories["3"].sets, before)


def test_anchor_only_and_merged_models_run():
    for mode in ("anchor_only", "merged"):
        model = UNetCICM(TINY.replace(memory_mode=mode)).train()
        image, mask = inputs()
        out = model(image, mask)
        model.generalize(out, mask)
        assert out.composite.shape == image.shape


def test_memory_cfg_is_shared():
    cfg = ModelConfig(width=8, max_width=16, cicm_levels=(2, 3), memory=MemoryConfig(num_sets=2, set_size=3))
    model = UNetCICM(cfg)
    assert model.memories["2"].sets.shape == (2, 3, 16) and model.memories["3"].sets.shape == (2, 3, 16)


def test_push_pull_fill_keeps_known_pixels_and_fills_from_neighbours():
    from cicm_deploy.model import push_pull_fill

    image = torch.zeros(1, 3, 16, 16)
    image[:, 0, :, :8] = 1.0  # left half red, right half black
    hole = torch.zeros(1, 1, 16, 16)
    hole[:, :, 4:12, 2:6] = 1.0  # a hole inside the red half
    filled = push_pull_fill(image, hole)
    known = hole.expand_as(image) == 0
    torch.testing.assert_close(filled[known], image[known])
    assert torch.isfinite(filled).all()
    assert filled[0, 0, 6:10, 3:5].min() > 0.8  # the hole takes the colour around it
    full = push_pull_fill(image, torch.ones(1, 1, 16, 16))
    assert torch.isfinite(full).all()


def test_smooth_push_pull_keeps_known_pixels_and_approaches_the_harmonic_fill():
    ramp = torch.linspace(0.0, 1.0, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    hole = torch.zeros(1, 1, 32, 32)
    hole[:, :, 8:24, 6:26] = 1.0
    plain, smooth = push_pull_fill(ramp, hole), push_pull_fill(ramp, hole, smoothing=8)
    known = hole.expand_as(ramp) == 0
    torch.testing.assert_close(smooth[known], ramp[known])
    inside = hole.expand_as(ramp) > 0
    # a linear ramp is harmonic: relaxation moves the fill towards it, push-pull alone is blockier
    assert (smooth - ramp)[inside].abs().mean() < 0.5 * (plain - ramp)[inside].abs().mean()
    assert smooth.min() >= 0.0 and smooth.max() <= 1.0  # a mean of known colours never overshoots


def test_harmonic_fill_keeps_known_pixels_and_approaches_the_exact_solution():
    import numpy as np

    from cicm_deploy.train.masks import sample_mask

    pytest.importorskip("scipy.sparse", reason="scipy (with the [eval] extra) solves the exact reference")
    from cicm_deploy.train.evaluate import harmonic_solution

    def solve(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        solved = harmonic_solution(image[0].permute(1, 2, 0).numpy(), hole[0, 0].numpy() > 0.5)
        return torch.from_numpy(solved).permute(2, 0, 1)[None].float()

    torch.manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 8, 8), size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    for seed in range(2):  # free-form strokes and boxes, as in training and evaluation
        hole = torch.from_numpy(sample_mask(64, 64, np.random.default_rng(seed))).float()[None, None]
        fast, exact = harmonic_fill(image, hole), solve(image, hole)
        known = hole.expand_as(image) == 0
        inside = ~known
        torch.testing.assert_close(fast[known], image[known])
        assert fast.min() >= image.min() and fast.max() <= image.max()  # means of known colours never overshoot
        error = (fast - exact)[inside].abs().mean()
        smooth_error = (push_pull_fill(image, hole, smoothing=8) - exact)[inside].abs().mean()
        plain_error = (push_pull_fill(image, hole) - exact)[inside].abs().mean()
        assert error < 0.03 and error < 0.7 * smooth_error < 0.7 * plain_error, (error, smooth_error, plain_error)
    # a linear ramp is harmonic: the fill reproduces it closely
    ramp = torch.linspace(0.0, 1.0, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    ramp_hole = torch.zeros(1, 1, 32, 32)
    ramp_hole[:, :, 8:24, 6:26] = 1.0
    assert (harmonic_fill(ramp, ramp_hole) - ramp).abs().max() < 0.05
    assert torch.isfinite(harmonic_fill(image, torch.ones(1, 1, 64, 64))).all()  # nothing known: no NaN


def test_even_levels_pool_without_ceil_mode_and_change_nothing():
    torch.manual_seed(0)
    for shape in ((2, 3, 64, 96), (1, 3, 24, 40), (1, 3, 8, 72)):  # multiples of 8: odd sides from level 3 on
        image, hole = torch.rand(*shape), (torch.rand(shape[0], 1, *shape[2:]) > 0.5).float()
        assert torch.equal(harmonic_fill(image, hole), harmonic_fill(image, hole, even_levels=3))
        assert torch.equal(push_pull_fill(image, hole, smoothing=8), push_pull_fill(image, hole, smoothing=8, even_levels=3))
    image, hole = torch.rand(1, 3, 36, 40), torch.zeros(1, 1, 36, 40)  # 36 is not a multiple of 8
    with pytest.raises(ValueError, match="even_levels=3 needs height and width divisible by 8, got 36x40"):
        harmonic_fill(image, hole, even_levels=3)
    assert harmonic_fill(image, hole).shape == image.shape  # any size without the promise


def test_residual_output_starts_at_the_hole_fill():
    torch.manual_seed(0)
    image, mask = inputs(b=2, h=32, w=32)
    hole = (mask > 0.5).float()
    fills = {"push-pull": push_pull_fill(image, hole), "smooth-push-pull": push_pull_fill(image, hole, smoothing=8),
             "harmonic": harmonic_fill(image, hole)}
    for fill, expected in fills.items():
        model = UNetCICM(preset("tiny").replace(output="residual", hole_fill=fill))
        torch.testing.assert_close(model(image, mask).prediction, expected.clamp(0, 1))
    with pytest.raises(ConfigError, match="output must be one of direct, residual"):
        preset("tiny").replace(output="sum")


def test_default_presets_use_the_harmonic_fill_and_run():
    for name in ("default", "default-unet"):
        cfg = preset(name)
        assert cfg.hole_fill == "harmonic" and cfg.output == "residual"
        out = UNetCICM(cfg)(*inputs(b=1, h=24, w=40))
        assert torch.isfinite(out.composite).all()
