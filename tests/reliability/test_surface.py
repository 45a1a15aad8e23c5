"""Reliability battery: malformed inputs across the public surface end in one clear error, never a
traceback from deep inside a library and never a partial output file; property tests for the
image loader and padding; non-finite values are caught on the way in and on the way out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import PIL
from PIL import Image

from cicm_deploy.cli import cli
from cicm_deploy.images import ImageError, crop, load_image, load_mask, pad_to_multiple, save_image, save_mask
from cicm_deploy.runtimes.base import NonFiniteOutputError, RuntimeInputError
from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]


@pytest.mark.filterwarnings("ignore:.*holds only 0s and 1s")  # a tiny random image can be one (the warning is right)
@pytest.mark.filterwarnings("ignore:.*looks like a photo, not a mask")  # random pixels do (the warning is right)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(MODES), width=st.integers(1, 40), height=st.integers(1, 40),
       fmt=st.sampled_from(["PNG", "TIFF", "BMP", "JPEG"]), seed=st.integers(0, 2**16))
def test_any_image_loads_correctly_or_fails_cleanly(tmp_path, mode, width, height, fmt, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":  # made from 16-bit values: Pillow before 11 has no RGB -> I;16 conversion
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: nothing to load
    try:
        rgb = load_image(path)
    except ImageError as exc:
        assert str(path) in str(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3)
    mask = load_mask(path)
    assert mask.dtype == np.bool_ and mask.shape == (height, width)


@pytest.mark.parametrize("mode,fmt", [("RGB", "PNG"), ("L", "PNG"), ("1", "PNG"), ("P", "PNG"), ("CMYK", "TIFF"),
                                      ("I;16", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("YCbCr", "TIFF"),
                                      ("RGB", "BMP"), ("L", "TIFF")])
def test_documented_modes_load_as_pil_converts_them(tmp_path, mode, fmt):
    """The README's promise: RGB as is; grayscale, palette, CMYK, opaque alpha and 16-bit converted."""
    rng = np.random.default_rng(7)
    if mode == "I;16":
        values = rng.integers(0, 65536, (23, 31), dtype=np.uint16)
        image = Image.fromarray(values)  # mode I;16
    else:
        image = Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt)
    if mode == "YCbCr" and int(PIL.__version__.split(".")[0]) < 13:
        # Pillow before 13 cannot read back the YCbCr TIFFs it writes ("image file is truncated",
        # measured with 10.0 to 12.3): the README says so, and the loader must say it cleanly
        with pytest.raises(ImageError, match=f"{re.escape(str(path))} is not a readable image"):
            load_image(path)
        return
    rgb = load_image(path)
    with Image.open(path) as saved:
        if mode == "I;16":  # 16-bit: 0..65535 onto 0..255, rounded (PIL's own convert would clip)
            gray = np.rint(np.asarray(saved).astype(np.float64) * 255 / 65535).astype(np.uint8)
            expected = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            expected = np.asarray(saved.convert("RGB"))
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, expected)


@settings(max_examples=80, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), stride=st.sampled_from([1, 2, 8, 16, 24]),
       channels=st.sampled_from([0, 1, 3]))
def test_pad_then_crop_is_identity(height, width, stride, channels):
    shape = (height, width) if channels == 0 else (height, width, channels)
    array = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    padded = pad_to_multiple(array, stride)
    assert padded.shape[0] % stride == 0 and padded.shape[1] % stride == 0
    assert np.array_equal(crop(padded, height, width), array)


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0" + b"0" * 40])
def test_truncated_images_fail_cleanly_and_leave_no_output(tmp_path, data, routed_checkpoint):
    bad = tmp_path / "bad.png"
    bad.write_bytes(data)
    good_mask = save_mask(tmp_path / "m.png", np.zeros((8, 8), bool))
    out = tmp_path / "out.png"
    result = CliRunner().invoke(cli, ["inpaint", str(bad), str(good_mask), "-o", str(out), "--checkpoint",
                                      str(routed_checkpoint)])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not out.exists()


def test_truncated_real_png(tmp_path, photo):
    path = save_image(tmp_path / "p.png", photo)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ImageError, match="is not a readable image"):
        load_image(path)


@pytest.mark.parametrize("mask_value,expected_known", [(0.0, True), (1.0, False)])
def test_empty_and_full_masks(bundles, mask_value, expected_known, rng):
    image = rng.random((1, 3, 16, 24), dtype=np.float32)
    mask = np.full((1, 1, 16, 24), mask_value, np.float32)
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        out = runtime.run({"image": image, "mask": mask})["inpainted"]
    assert np.array_equal(out, image) == expected_known
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_one_pixel_and_large_frames(bundles, rng):
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        tiny = runtime.infer(np.array([[[10, 20, 30]]], np.uint8), np.array([[True]]))
        assert tiny.shape == (1, 1, 3)
        big = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
        hole = np.zeros((1080, 1920), bool)
        hole[500:560, 900:1000] = True
        out = runtime.infer(big, hole)
        assert np.array_equal(out[~hole], big[~hole])


def test_nan_in_float_input_is_refused(bundles):
    image = np.zeros((1, 3, 16, 16), np.float32)
    image[0, 0, 3, 3] = np.nan
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        with pytest.raises(RuntimeInputError, match="'image' holds NaN or Inf"):
            runtime.run({"image": image, "mask": np.zeros((1, 1, 16, 16), np.float32)})


def test_nan_in_backend_output_is_reported_not_passed_on(bundles, monkeypatch):
    runtime = OnnxRuntimeBackend(bundles("fp32", "onnx").path).load()
    monkeypatch.setattr(runtime, "_run", lambda feeds: {"inpainted": np.full((1, 3, 16, 16), np.inf, np.float32)})
    with pytest.raises(NonFiniteOutputError, match="produced NaN/Inf in 'inpainted'"):
        runtime.infer(np.zeros((16, 16, 3), np.uint8), np.ones((16, 16), bool))


def test_truncated_onnx_in_a_bundle(bundles, tmp_path):
    import json
    import shutil

    from cicm_deploy.runtimes.bundle import sha256_file

    path = tmp_path / "b"
    shutil.copytree(bundles("fp32", "onnx").path, path)
    model = path / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(model)
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == 2 and "fails the ONNX checker" in result.output


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL semantics")
def test_writer_killed_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, routed_checkpoint):
    """A process killed while writing a checkpoint over an existing one: the old file still loads."""
    import shutil

    target = tmp_path / "model.pt"
    shutil.copy(routed_checkpoint, target)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from cicm_deploy.checkpoint import save_checkpoint
        from cicm_deploy.config import preset
        from cicm_deploy.model import UNetCICM

        real_save = torch.save
        def dying_save(obj, handle, *a, **k):
            handle.write(b"partial checkpoint bytes")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        save_checkpoint({str(target)!r}, UNetCICM(preset("paper")))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    from cicm_deploy.checkpoint import load_model

    model, _ = load_model(target)  # the previous checkpoint, intact
    assert model.config.width == 16
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.pt"]
    assert all(name.startswith(".model.pt.") and name.endswith(".tmp") for name in leftovers)


def test_malicious_checkpoint_through_the_cli(tmp_path, photo, hole):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    import torch

    torch.save({"format_version": 1, "model_config": {}, "state_dict": {}, "x": RunsCode()}, evil)
    image, mask = save_image(tmp_path / "p.png", photo), save_mask(tmp_path / "m.png", hole)
    result = CliRunner().invoke(cli, ["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                      "--checkpoint", str(evil)])
    assert result.exit_code == 2 and "refusing to load" in result.output
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o.png").exists()
