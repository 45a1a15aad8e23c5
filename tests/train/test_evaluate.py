"""Evaluation metrics, masks in their bins, the eval and demo commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cicm_deploy.cli import cli
from cicm_deploy.train.evaluate import BASELINES, EvalSet, center_crop, evaluate, metrics
from cicm_deploy.train.masks import BINS, BIN_NAMES, MaskFolder, bin_index, evaluation_masks, free_form_mask, sample_mask


def test_identity_and_constant_predictors_have_known_psnr(rng):
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert metrics(image, image) == {"psnr": math.inf, "ssim": 1.0, "l1": 0.0}
    zeros = np.zeros_like(image)
    expected = 10 * math.log10(255**2 / np.mean(image.astype(np.float64) ** 2))
    assert metrics(image, zeros)["psnr"] == pytest.approx(expected)
    assert metrics(image, zeros)["l1"] == pytest.approx(image.mean() / 255 * 100)
    data = EvalSet([image] * 3, [np.ones((32, 32), bool)] * 3, list(BIN_NAMES))
    result = evaluate({"identity": lambda i, m: i, "zeros": lambda i, m: np.zeros_like(i)}, data, progress=False)
    assert result["summary"]["identity"]["all"]["psnr"] == math.inf
    assert result["summary"]["zeros"]["20-40%"]["psnr"] == pytest.approx(expected)
    assert result["summary"]["zeros"]["all"]["n"] == 3


def test_masks_land_in_their_bins():
    rng = np.random.default_rng(0)
    for index, (low, high) in enumerate(BINS):
        for _ in range(5):
            ratio = free_form_mask(64, 96, rng, (low, high)).mean()
            assert low < ratio <= high and bin_index(ratio) == index
    ratios = [sample_mask(64, 64, rng).mean() for _ in range(60)]
    assert min(ratios) > 0 and max(ratios) <= 0.6
    assert {bin_index(r) for r in ratios} == {0, 1, 2}


def test_evaluation_masks_are_fixed_and_seeded():
    a, b = evaluation_masks(48, 48, 2), evaluation_masks(48, 48, 2)
    assert [n for n, _ in a] == ["0-20%"] * 2 + ["20-40%"] * 2 + ["40-60%"] * 2
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_mask_folder_loader(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    folder = MaskFolder(tmp_path)
    assert len(folder) == 1 and folder.get(0, 20, 30).sum() == 75
    assert folder.get(0, 40, 60).shape == (40, 60)
    assert MaskFolder(tmp_path, invert=True).get(0, 20, 30).sum() == 600 - 75


def test_baselines_fill_holes_and_keep_the_rest(photo, hole):
    for predict in BASELINES.values():
        out = predict(photo, hole)
        assert np.array_equal(out[~hole], photo[~hole])
        assert not np.array_equal(out[hole], np.zeros_like(out[hole]))


def test_exact_harmonic_solves_laplace_in_the_hole():
    from cicm_deploy.train.evaluate import exact_harmonic

    ramp = np.tile(np.linspace(0, 250, 40).astype(np.uint8), (30, 1))[..., None].repeat(3, axis=2)
    hole = np.zeros((30, 40), bool)
    hole[5:25, 8:30] = True
    out = exact_harmonic(ramp, hole)
    assert np.array_equal(out[~hole], ramp[~hole])
    # a linear ramp is harmonic, so it is its own solution (up to uint8 rounding)
    assert np.abs(out.astype(int) - ramp.astype(int)).max() <= 1
    corner = np.zeros_like(hole)
    corner[0:3, 34:40] = True  # on the border: the missing neighbours are left out (zero flux), not zeros
    out = exact_harmonic(ramp, corner)
    assert out[corner].min() >= ramp[0, 33, 0] - 1 and np.array_equal(out[~corner], ramp[~corner])
    assert np.array_equal(exact_harmonic(ramp, np.zeros_like(hole)), ramp)


def test_center_crop():
    image = np.zeros((100, 200, 3), np.uint8)
    assert center_crop(image, 64).shape == (64, 64, 3)


def test_eval_command(tmp_path, routed_checkpoint, bundles):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(photos / f"p{index}.png")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["eval", str(routed_checkpoint), str(bundles("fp32", "onnx").path),
                                      "--data", str(photos), "--split", "all", "--size", "64", "--per-bin", "1",
                                      "--name", "torch", "--name", "onnx", "-o", str(out), "--examples", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["summary"]) == {"torch", "onnx", "Telea", "Navier-Stokes", "Harmonic (exact)"}
    torch_psnr = report["summary"]["torch"]["all"]["psnr"]
    assert report["summary"]["onnx"]["all"]["psnr"] == pytest.approx(torch_psnr, abs=0.05)
    assert "| torch |" in out.with_suffix(".md").read_text()
    assert Image.open(out.with_name("report_examples.png")).size == (160 * 8, 18 + 160 * 2)
    assert "paired with several masks" not in out.with_suffix(".md").read_text()  # 3 evaluations of 3 photos

    twin = tmp_path / "other" / routed_checkpoint.name  # two checkpoints with one file name, and a dotted -o
    twin.parent.mkdir()
    twin.write_bytes(routed_checkpoint.read_bytes())
    dotted = tmp_path / "rep" / "my.v2"
    result = CliRunner().invoke(cli, ["eval", str(routed_checkpoint), str(twin), "--data", str(photos), "--split",
                                      "all", "--size", "64", "--per-bin", "1", "--no-baselines", "-o", str(dotted),
                                      "--examples", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dotted.parent.iterdir()) == ["my.v2.json", "my.v2.md", "my.v2_examples.png"]
    report = json.loads((dotted.parent / "my.v2.json").read_text())
    labels = {f"{routed_checkpoint.parent.name}/{routed_checkpoint.stem}", f"other/{routed_checkpoint.stem}"}
    assert set(report["summary"]) == labels and set(report["setup"]["targets"]) == labels
    clash = CliRunner().invoke(cli, ["eval", str(routed_checkpoint), "--data", str(photos), "--name", "Telea"])
    assert clash.exit_code == 2 and "Telea names a baseline" in clash.output


def test_eval_without_its_extra_says_what_to_install(tmp_path, routed_checkpoint, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    result = CliRunner().invoke(cli, ["eval", str(routed_checkpoint), "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: eval needs scikit-image: pip install 'cicm-deploy[eval]'"


def test_demo_with_a_checkpoint(tmp_path, routed_checkpoint):
    out = tmp_path / "demo.png"
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "--checkpoint", str(routed_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output
    width, height = Image.open(out).size
    assert width == 3 * 512 and height == 384
    bad = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path / "demo.xyz"), "--checkpoint", str(tmp_path / "no.pt")])
    assert bad.exit_code == 2 and "unknown suffix '.xyz'" in bad.output  # refused before the model is even looked for


def test_comparison_lines_say_where_the_first_method_loses():
    from cicm_deploy.train.evaluate import comparison_lines

    summary = {"A": {"0-20%": {"psnr": 30.0}, "20-40%": {"psnr": 25.0}},
               "B": {"0-20%": {"psnr": 29.5}, "20-40%": {"psnr": 25.5}}}
    text = "\n".join(comparison_lines(summary))
    assert "0-20%: +0.50" in text and "A does not beat B in 20-40% (by 0.50 dB)" in text
