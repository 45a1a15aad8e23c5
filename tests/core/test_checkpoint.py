"""Checkpoints: round trip, atomic writes, and a clear error for each way a file can be wrong."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch

from cicm_deploy.checkpoint import FORMAT_VERSION, CheckpointError, load_model, read_checkpoint, save_checkpoint
from cicm_deploy.config import preset
from cicm_deploy.model import UNetCICM


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UNetCICM(preset("tiny"))


@pytest.fixture
def ckpt(tmp_path, model):
    return save_checkpoint(tmp_path / "model.pt", model, step=7, metrics={"psnr": 30.5})


def test_round_trip_rebuilds_the_same_model(ckpt, model):
    loaded, data = load_model(ckpt)
    assert loaded.config == model.config and not loaded.training
    assert data["step"] == 7 and data["metrics"] == {"psnr": 30.5} and data["format_version"] == FORMAT_VERSION
    image, mask = torch.rand(1, 3, 16, 24), torch.zeros(1, 1, 16, 24)
    mask[..., 2:9, 3:11] = 1
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(image, mask).composite, model(image, mask).composite)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_checkpoint_gets_the_umask_mode_not_the_temporary_files_0600(tmp_path, model):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "shared.pt", model)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a server account, as a plain open() makes it
        os.umask(0o077)
        assert stat.S_IMODE(save_checkpoint(tmp_path / "private.pt", model).stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_optimizer_state_is_saved(tmp_path, model):
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)).prediction.mean().backward()
    opt.step()
    data = read_checkpoint(save_checkpoint(tmp_path / "a.pt", model, optimizer=opt, step=1))
    assert data["optimizer"]["state"]


def test_atomic_write_leaves_no_temporaries_and_keeps_the_old_file_on_failure(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model, step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_failed_write_names_the_checkpoint_and_the_systems_reason(tmp_path, model, monkeypatch):
    import errno

    def full_disk(obj, handle):  # what torch.save does when the disk fills: an OSError inside a RuntimeError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as failed:
        save_checkpoint(tmp_path / "run" / "last.pt", model, step=2)
    assert (failed.value.errno, failed.value.filename) == (errno.ENOSPC, str(tmp_path / "run" / "last.pt"))
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.undo()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError) as failed:
        save_checkpoint(tmp_path / "file" / "last.pt", model)
    assert failed.value.filename == str(tmp_path / "file" / "last.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model(tmp_path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "photo.pt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_model(path)


def test_a_bundle_file_is_named_for_what_it_is(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(b"\x08\x08\x12\x07onnx")
    with pytest.raises(CheckpointError, match=f"model.onnx is an ONNX model, not a PyTorch checkpoint \\(.pt\\): a "
                                              f"bundle directory \\({bundle} is one\\)"):
        read_checkpoint(bundle / "model.onnx")
    from cicm_deploy.inpainter import Inpainter

    with pytest.raises(ValueError, match=f"is a file, an ONNX model: pass the bundle directory .* \\({bundle} holds one"):
        Inpainter(bundle / "model.onnx")


def test_truncated(tmp_path, ckpt):
    path = tmp_path / "cut.pt"
    path.write_bytes(ckpt.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint or is truncated"):
        load_model(path)


def test_bare_state_dict(tmp_path, model):
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="is not a cicm-deploy checkpoint"):
        load_model(path)


def test_unknown_format_version(tmp_path, ckpt):
    data = read_checkpoint(ckpt)
    data["format_version"] = 99
    torch.save(data, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format_version 99; this cicm-deploy reads version 1"):
        load_model(tmp_path / "v99.pt")


def test_config_that_does_not_match_the_weights(tmp_path, ckpt):
    data = read_checkpoint(ckpt)
    data["model_config"]["width"] = 8
    torch.save(data, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not match its model_config .*shape mismatch"):
        load_model(tmp_path / "edited.pt")
    data["model_config"]["memory"]["mode"] = "no-such-mode"
    torch.save(data, tmp_path / "invalid.pt")
    with pytest.raises(CheckpointError, match="model_config is invalid"):
        load_model(tmp_path / "invalid.pt")


def test_missing_memory_weights(tmp_path, ckpt):
    data = read_checkpoint(ckpt)
    del data["state_dict"]["memories.3.sets"]
    torch.save(data, tmp_path / "nomem.pt")
    with pytest.raises(CheckpointError, match="missing memories.3.sets"):
        load_model(tmp_path / "nomem.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused_not_executed(tmp_path, ckpt):
    marker = tmp_path / "pwned"
    data = read_checkpoint(ckpt)
    data["metrics"] = {"evil": _RunsCode(str(marker))}
    path = tmp_path / "evil.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="refusing to load .*can run code"):
        load_model(path)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(CheckpointError, match="bare pickle"):
        load_model(raw)
    assert not marker.exists()
