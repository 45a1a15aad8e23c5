"""The command line: the newcomer's path end to end, and one-line user errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cicm_deploy import __version__
from cicm_deploy.cli import cli
from cicm_deploy.images import load_image, save_image, save_mask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    result = CliRunner().invoke(cli, ["init", str(path), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert "untrained 'tiny' model" in result.output
    return path


@pytest.fixture
def files(tmp_path, photo, hole):
    return save_image(tmp_path / "photo.png", photo), save_mask(tmp_path / "mask.png", hole)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_doctor_text_and_json():
    result = run("doctor")
    assert result.exit_code == 0 and "[onnxruntime]" in result.output and "[tensorrt]" in result.output
    report = json.loads(run("doctor", "--json").output)
    assert set(report) == {"system", "torch", "onnxruntime", "gpu", "tensorrt", "plugin", "next_steps"}
    assert report["torch"]["installed"] is True


def test_inpaint_end_to_end_keeps_known_pixels(tmp_path, files, checkpoint, photo, hole):
    out = tmp_path / "out.png"
    result = run("inpaint", files[0], files[1], "-o", out, "--checkpoint", checkpoint)
    assert result.exit_code == 0, result.output
    written = load_image(out)
    assert written.shape == photo.shape
    assert np.array_equal(written[~hole], photo[~hole])
    assert not np.array_equal(written[hole], photo[hole])


def test_inpaint_mask_invert(tmp_path, photo, hole, checkpoint):
    image = save_image(tmp_path / "p.png", photo)
    inverted = save_mask(tmp_path / "m.png", ~hole)
    out = tmp_path / "o.png"
    assert run("inpaint", image, inverted, "-o", out, "--checkpoint", checkpoint, "--mask-invert").exit_code == 0
    assert np.array_equal(load_image(out)[~hole], photo[~hole])


def test_installed_console_script(tmp_path, files, checkpoint):
    """The installed `cicm-deploy` script, as a user runs it: one line on stderr, exit 2, no traceback."""
    script = Path(sys.executable).parent / "cicm-deploy"
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "cicm_deploy.cli"]
    ok = subprocess.run(exe + ["inpaint", *map(str, files), "-o", str(tmp_path / "o.png"), "--checkpoint",
                               str(checkpoint)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(exe + ["inpaint", str(files[0]), str(tmp_path / "none.png"), "-o", str(tmp_path / "x.png"),
                                "--checkpoint", str(checkpoint)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "mask" in bad.stderr and "does not exist" in bad.stderr


@pytest.mark.parametrize("case,expected", [
    ("missing-image", "image .*nope.png does not exist"),
    ("size-mismatch", "image is 61x45 but mask is 30x45"),
    ("bad-checkpoint", "is not a PyTorch checkpoint"),
    ("missing-checkpoint", "does not exist"),
    ("bad-output", "unknown suffix '.xyz'"),
    ("bad-device", "no CUDA GPU|Invalid device|Expected one of"),
    ("unknown-device", "device 'bogus' is not one of auto, cpu, cuda, cuda:N"),
    ("plugin-without-engine", "--plugin goes with --engine"),
    ("device-with-bundle", "--device cpu goes with --checkpoint"),
    ("engine-is-a-bundle", "is a directory \\(a bundle\\?\\); run bundles with --bundle"),
    ("bundle-is-a-file", "a bundle is the directory `cicm-deploy export` writes"),
    ("output-is-the-photo", "is the input photo: writing it would replace the original"),
    ("output-is-the-mask", "is the input mask: writing it would replace the original"),
])
def test_inpaint_user_errors(case, expected, tmp_path, files, checkpoint, photo):
    image, mask = files
    before = image.read_bytes(), mask.read_bytes()
    out, ckpt = tmp_path / "o.png", checkpoint
    extra = []
    if case == "missing-image":
        image = tmp_path / "nope.png"
    elif case == "size-mismatch":
        mask = save_mask(tmp_path / "small.png", np.zeros((45, 30), bool))
    elif case == "bad-checkpoint":
        ckpt = image
    elif case == "missing-checkpoint":
        ckpt = tmp_path / "none.pt"
    elif case == "bad-output":  # refused before the model loads (the checkpoint is not even read)
        out, ckpt = tmp_path / "o.xyz", image
    elif case == "bad-device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU, so cuda is a valid device")
        extra = ["--device", "cuda"]
    elif case == "unknown-device":
        extra = ["--device", "bogus"]
    elif case == "plugin-without-engine":
        extra = ["--plugin", str(tmp_path / "lib.so")]
    elif case == "device-with-bundle":
        extra = ["--device", "cpu"]
    elif case == "output-is-the-photo":  # through another spelling of the same path
        out = tmp_path / ".." / tmp_path.name / image.name
    elif case == "output-is-the-mask":
        out = mask
    model = ["--checkpoint", ckpt]
    if case == "engine-is-a-bundle":
        model = ["--engine", tmp_path]
    elif case == "device-with-bundle":
        model = ["--bundle", tmp_path]
    elif case == "bundle-is-a-file":
        model = ["--bundle", ckpt]
    result = run("inpaint", image, mask, "-o", out, *model, *extra)
    assert result.exit_code == 2, result.output
    import re

    assert re.search(expected, result.output), result.output
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    if case.startswith("output-is-the-"):
        assert (image.read_bytes(), mask.read_bytes()) == before


@pytest.mark.parametrize("shape", ["0x0x0", "-1x64x64", "1x256"])
def test_build_shapes_are_checked_before_anything_runs(shape, tmp_path):
    result = run("build", tmp_path, "-o", tmp_path / "m.engine", "--min-shape", shape)
    assert result.exit_code == 2 and f"--min-shape {shape!r}" in result.output, result.output
    assert "Traceback" not in result.output


def test_init_refuses_to_overwrite(checkpoint):
    result = run("init", checkpoint)
    assert result.exit_code == 2 and "pass --force" in result.output


@pytest.mark.parametrize("name", ["photo.png", "model.ONNX", "model.engine"])
def test_init_refuses_a_name_that_is_not_a_checkpoints(name, tmp_path):
    result = run("init", tmp_path / name)
    assert result.exit_code == 2 and "not a checkpoint" in result.output and ".pt" in result.output, result.output
    assert not (tmp_path / name).exists() and list(tmp_path.iterdir()) == []


def test_init_unknown_preset(tmp_path):
    result = run("init", tmp_path / "x.pt", "--preset", "huge")
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.output


@pytest.mark.parametrize("args,option", [
    (["eval", "CKPT", "--data", "DATA", "--per-bin", "0"], "--per-bin"),
    (["eval", "CKPT", "--data", "DATA", "--size", "-5"], "--size"),
    (["bench", "CKPT", "--iterations", "0"], "--iterations"),
    (["demo", "--seed", "-1"], "--seed"),
    (["bench", "CKPT", "--threads", "-2"], "--threads"),
    (["video", "a.mp4", "b.mp4", "--batch", "0"], "--batch"),
    (["serve", "CKPT", "--instances", "0"], "--instances"),
    (["triton-repo", "CKPT", "-o", "REPO", "--max-batch", "0"], "--max-batch"),
])
def test_numeric_options_are_range_checked(args, option, checkpoint, tmp_path):
    from pathlib import Path

    photos = Path(__file__).resolve().parents[1] / "cicm_deploy" / "assets" / "photos"
    args = [{"CKPT": str(checkpoint), "DATA": str(photos), "REPO": str(tmp_path / "repo")}.get(a, a) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def _report(modules: dict, gpu: bool) -> dict:
    return {"onnxruntime": {"installed": True}, "gpu": {"found": gpu, "compute_capability": "8.6"},
            "tensorrt": {"installed": bool(modules), "modules": modules}, "plugin": {"found": False}}


def test_doctor_next_steps_name_the_tensorrt_that_is_installed():
    from cicm_deploy.environment import next_steps

    rtx_only = " ".join(next_steps(_report({"tensorrt_rtx": "1.7"}, gpu=True)))
    assert "--rtx" in rtx_only and "TensorRT is missing" not in rtx_only
    full = " ".join(next_steps(_report({"tensorrt": "10.13"}, gpu=True)))
    assert "cicm-deploy build BUNDLE -o model.engine" in full and "-DCMAKE_CUDA_ARCHITECTURES=86" in full
    assert "TensorRT is missing" in " ".join(next_steps(_report({}, gpu=True)))
    assert next_steps(_report({}, gpu=False)) == []


def test_doctor_says_why_no_gpu_is_visible():
    from cicm_deploy.environment import gpu_hint

    assert "no CUDA driver" in gpu_hint(None, "13.0.0")
    assert gpu_hint((12, 6), "13.4.4") == ("cuda-python 13.4.4 needs a CUDA 13 driver; this driver supports CUDA 12.6: "
                                           "pip install 'cuda-python<13'")  # JetPack 6 with a fresh pip install
    assert "cuda-python is not installed: pip install 'cicm-deploy[trt-runtime]' 'cuda-python<13'" in gpu_hint((12, 6), None)
    assert "reports no usable GPU to cuda-python 12.6.2" in gpu_hint((12, 6), "12.6.2")
