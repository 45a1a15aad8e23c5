"""The trainer: memory updates on complete regions only, bit-for-bit resume, DDP with gloo, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

from cicm_deploy import CICMWarning
from cicm_deploy.checkpoint import load_model, read_checkpoint
from cicm_deploy.cli import cli
from cicm_deploy.config import preset
from cicm_deploy.model import complete_regions
from cicm_deploy.reference import generalize_reference
from cicm_deploy.train.losses import LossWeights
from cicm_deploy.train.trainer import PhotoSampler, TrainConfig, Trainer, TrainingStopped

PHOTOS = str(Path(__file__).resolve().parents[2] / "cicm_deploy" / "assets" / "photos")


def small_config(tmp_path, **changes) -> TrainConfig:
    base = dict(data=PHOTOS, out=str(tmp_path / "run"), steps=4, batch_size=2, crop=32, cache_side=96,
                val_fraction=0.0, val_images=0, val_every=0, checkpoint_every=0, log_every=1, seed=3)
    base.update(changes)
    return TrainConfig(**base)


def make_trainer(config: TrainConfig, resume: str | None = None) -> Trainer:
    trainer = Trainer(preset("tiny"), config, resume=resume)
    trainer.attach_data(PhotoSampler(config.data, "all", config.crop, config.cache_side, 0.0), None)
    return trainer


def test_step_changes_memory_only_through_complete_regions(tmp_path):
    frozen = small_config(tmp_path, lr=0.0, d_lr=0.0, weights=LossWeights(adversarial=0.0))
    trainer = make_trainer(frozen)
    memory = trainer.model.memories["3"]
    image, mask = trainer.train_data.batch(np.random.default_rng(0), 2)
    mask[:] = 0
    mask[:, :, :16, :] = 1  # top half holes: only the bottom row of bottleneck regions is complete
    trainer.model.train()
    with torch.no_grad():
        feats = trainer.model(image, mask).features["3"]
    complete = complete_regions(mask, 3).flatten()
    flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])[complete]
    expected_anchors, expected_sets = generalize_reference(memory, flat)
    trainer.train_step(image, mask)
    torch.testing.assert_close(memory.anchors.double(), expected_anchors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory.sets.double(), expected_sets, atol=1e-5, rtol=1e-5)

    before = [t.detach().clone() for t in (memory.anchors, memory.sets)]
    trainer.train_step(image, torch.ones_like(mask))  # no complete region at all
    assert torch.equal(memory.anchors, before[0]) and torch.equal(memory.sets, before[1])


def test_step_trains_every_part(tmp_path):
    trainer = make_trainer(small_config(tmp_path))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    d_before = {k: v.detach().clone() for k, v in trainer.discriminator.state_dict().items()}
    image, mask = trainer.train_data.batch(trainer.rng, 2)
    values = trainer.train_step(image, mask)
    assert set(values) >= {"inpaint", "adversarial", "ratio", "inter", "intra", "total", "discriminator"}
    assert all(np.isfinite(v) for v in values.values())
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("memories.3") for k in changed) and any(k.startswith("gamma_heads") for k in changed)
    assert any(not torch.equal(v, d_before[k]) for k, v in trainer.discriminator.state_dict().items())


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"g.{k}": v for k, v in trainer.model.state_dict().items()}
    out.update({f"d.{k}": v for k, v in trainer.discriminator.state_dict().items()})
    return out


def test_resume_continues_bit_for_bit(tmp_path):
    straight = make_trainer(small_config(tmp_path / "a", steps=4))
    straight.fit(progress=False)
    first = make_trainer(small_config(tmp_path / "b", steps=2))
    first.fit(progress=False)
    resumed = make_trainer(small_config(tmp_path / "b", steps=4), resume=str(tmp_path / "b" / "run" / "last.pt"))
    assert resumed.step == 2
    resumed.fit(progress=False)
    a, b = state(straight), state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


class OnDevice:
    """A saved RNG state as read with map_location="cuda": only ``.cpu()`` gives the tensor back."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def cpu(self) -> torch.Tensor:
        return self.tensor


def test_rng_states_read_onto_a_gpu_are_restored_from_the_cpu(monkeypatch):
    from cicm_deploy.train.trainer import restore_rng, rng_state

    saved = rng_state(np.random.default_rng(5))
    expected = torch.rand(3)
    restore_rng(np.random.default_rng(0), {**saved, "torch": OnDevice(saved["torch"])})
    assert torch.equal(torch.rand(3), expected)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    restore_rng(np.random.default_rng(0), {**saved, "cuda": [OnDevice(saved["torch"])]})
    assert len(restored) == 1 and torch.equal(restored[0], saved["torch"])


@pytest.mark.gpu
def test_training_on_the_gpu_stops_and_resumes(tmp_path):
    """bf16 autocast on CUDA, the checkpoint read back onto the GPU (RNG states included)."""
    config = small_config(tmp_path, steps=3, device="cuda")
    first = make_trainer(small_config(tmp_path, steps=2, device="cuda"))
    first.fit(progress=False)
    assert first.device.type == "cuda"
    resumed = make_trainer(config, resume=str(tmp_path / "run" / "last.pt"))
    assert resumed.step == 2
    resumed.fit(progress=False)
    assert resumed.step == 3 and read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3


class StopAt:
    """Wraps a sampler: at the ``at``-th batch, raise ``error`` (or return NaN images)."""

    def __init__(self, sampler, at: int, error: type[BaseException] | None):
        self.sampler, self.at, self.error, self.calls = sampler, at, error, 0

    def batch(self, rng, size):
        self.calls += 1
        image, mask = self.sampler.batch(rng, size)
        if self.calls == self.at:
            if self.error is not None:
                raise self.error()
            image = torch.full_like(image, float("nan"))
        return image, mask


class SignalAt:
    """Wraps a sampler: at the ``at``-th batch, deliver ``signals`` to this process (mid-step)."""

    def __init__(self, sampler, at: int, *signals: int):
        self.sampler, self.at, self.signals, self.calls = sampler, at, signals, 0

    def batch(self, rng, size):
        self.calls += 1
        if self.calls == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)
        return self.sampler.batch(rng, size)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_finishes_the_step_saves_it_and_resumes_bit_for_bit(tmp_path, sig):
    straight = make_trainer(small_config(tmp_path / "a", steps=8, checkpoint_every=2))
    straight.fit(progress=False)
    trainer = make_trainer(small_config(tmp_path / "b", steps=8, checkpoint_every=2))
    trainer.train_data = SignalAt(trainer.train_data, 6, sig)  # arrives while step 6 draws its batch
    with pytest.raises(TrainingStopped) as stopped:
        trainer.fit(progress=False)
    run = Path(trainer.config.out)
    assert (stopped.value.signal_name, stopped.value.step, stopped.value.checkpoint) == (sig.name, 6, run / "last.pt")
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_2.pt", "step_4.pt", "step_6.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
    _, data = load_model(run / "last.pt")
    assert data["step"] == 6  # the step under way finished, then the run stopped at that boundary
    resumed = make_trainer(small_config(tmp_path / "b", steps=8, checkpoint_every=2), resume=str(run / "last.pt"))
    resumed.fit(progress=False)
    a, b = state(straight), state(resumed)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_stop_during_the_last_step_just_finishes_and_an_ignored_sigint_stays_ignored(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=3))
    trainer.train_data = SignalAt(trainer.train_data, 3, signal.SIGTERM)
    assert trainer.fit(progress=False) is trainer.metrics  # done, not "stopped": nothing is left to resume
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started with & by a script
    try:
        ignoring = make_trainer(small_config(tmp_path / "i", steps=4))
        ignoring.train_data = SignalAt(ignoring.train_data, 2, signal.SIGINT)
        ignoring.fit(progress=False)
        assert ignoring.step == 4 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_aborts_at_once_and_a_crash_saves_no_half_step(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=10, val_every=2))
    trainer.train_data = SignalAt(trainer.train_data, 5, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        trainer.fit(progress=False)
    assert not isinstance(interrupted.value, TrainingStopped)
    _, data = load_model(Path(trainer.config.out) / "last.pt")
    assert data["step"] == 4  # the last validation's save; the aborted step is not written half-done
    crashed = make_trainer(small_config(tmp_path / "c", steps=10, val_every=2))
    crashed.train_data = StopAt(crashed.train_data, at=4, error=MemoryError)
    with pytest.raises(MemoryError):
        crashed.fit(progress=False)
    _, data = load_model(Path(crashed.config.out) / "last.pt")
    assert data["step"] == 2


def test_resume_drops_log_lines_the_lost_steps_wrote_and_applies_new_learning_rates(tmp_path):
    first = make_trainer(small_config(tmp_path, steps=2))
    first.fit(progress=False)
    run = Path(first.config.out)
    with open(run / "log.jsonl", "a") as handle:  # a run killed after its save logged steps 3, 4 and half a line
        handle.write('{"step": 3}\n{"step": 4}\n{"step": 5, "inpa')
    resumed = make_trainer(small_config(tmp_path, steps=3, lr=1e-3, d_lr=5e-4, beta1=0.9), resume=str(run / "last.pt"))
    assert [g["lr"] for g in resumed.g_opt.param_groups] == [1e-3]
    assert [g["lr"] for g in resumed.d_opt.param_groups] == [5e-4]
    assert resumed.g_opt.param_groups[0]["betas"] == (0.9, 0.999)
    resumed.fit(progress=False)
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_checkpoints_hold_each_ranks_rng_and_older_ones_still_resume(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=2))
    trainer.fit(progress=False)
    last = Path(trainer.config.out) / "last.pt"
    data = read_checkpoint(last)
    assert data["trainer"]["version"] == 2 and len(data["trainer"]["rng"]) == 1
    data["trainer"].update(version=1, rng=data["trainer"]["rng"][0])  # as version 1 wrote it
    torch.save(data, tmp_path / "v1.pt")
    one, two = (make_trainer(small_config(tmp_path / n, steps=3), resume=str(p)) for n, p in
                (("x", last), ("y", tmp_path / "v1.pt")))
    assert one.rng.bit_generator.state == two.rng.bit_generator.state


def test_non_finite_loss_stops_without_overwriting_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=10, val_every=2))
    trainer.train_data = StopAt(trainer.train_data, at=4, error=None)  # NaN images at step 4
    with pytest.raises(FloatingPointError, match=r"non-finite values at step 4 \(inpaint.*last\.pt keeps step 2"):
        trainer.fit(progress=False)
    model, data = load_model(Path(trainer.config.out) / "last.pt")
    assert data["step"] == 2  # the last save before the bad step (val_every=2), not the poisoned weights
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


def test_non_finite_weights_behind_a_finite_loss_are_not_saved(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=10, val_every=2))
    step = trainer.train_step

    def poisoning_step(image, mask):  # step 4: the loss is finite but an update overflowed
        values = step(image, mask)
        if trainer.step == 4:
            with torch.no_grad():
                trainer.model.head.weight.view(-1)[0] = float("inf")
        return values

    trainer.train_step = poisoning_step
    with pytest.raises(FloatingPointError, match=r"non-finite values at step 4 \(head\.weight\).*keeps step 2"):
        trainer.fit(progress=False)
    model, data = load_model(Path(trainer.config.out) / "last.pt")
    assert data["step"] == 2 and all(torch.isfinite(p).all() for p in model.state_dict().values())


def test_train_cli_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["train", "--preset", "tiny", "--data", PHOTOS, "--out", str(out), "--set", "train.batch_size=2",
              "--set", "train.crop=32", "--set", "train.cache_side=96", "--set", "train.val_fraction=0.0",
              "--set", "train.val_images=0", "--set", "train.checkpoint_every=0", "--set", "train.log_every=1"]
    first = CliRunner().invoke(cli, common + ["--steps", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, common + ["--steps", "3", "--resume", str(out / "last.pt")])
    assert again.exit_code == 0, again.output
    _, data = load_model(out / "last.pt")
    assert data["step"] == 3
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]
    fresh = CliRunner().invoke(cli, common + ["--steps", "2"])  # a new run into the old one's folder
    assert fresh.exit_code == 2 and f"{out} already holds a run; continue it with --resume" in fresh.output
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    untrained = tmp_path / "init.pt"
    assert CliRunner().invoke(cli, ["init", str(untrained), "--preset", "tiny"]).exit_code == 0
    result = CliRunner().invoke(cli, common + ["--out", str(tmp_path / "r2"), "--resume", str(untrained)])  # the last --out counts
    assert result.exit_code == 2 and "has no trainer state" in result.output and "Traceback" not in result.output
    wider = CliRunner().invoke(cli, common + ["--steps", "4", "--resume", str(out / "last.pt"), "--set", "model.width=32"])
    assert wider.exit_code == 2 and wider.output.strip().endswith("that change it") and \
        "holds a model with other model.width;" in wider.output  # the one setting that differs, no others
    same = CliRunner().invoke(cli, ["train", "--resume", str(out / "last.pt"), "--set", "model.width=16",
                                    "--print-config"])  # the checkpoint's own value: fine
    assert same.exit_code == 0 and json.loads(same.output)["model"]["width"] == 16
    paper = CliRunner().invoke(cli, ["train", "--preset", "paper", "--resume", str(out / "last.pt"), "--steps", "4"])
    assert paper.exit_code == 2 and "a resumed run keeps its checkpoint's model" in paper.output


def test_a_resumed_run_continues_in_its_checkpoints_folder(tmp_path):
    import shutil

    first, copy = tmp_path / "first", tmp_path / "copy"
    common = ["train", "--preset", "tiny", "--data", PHOTOS, "--set", "train.batch_size=2", "--set", "train.crop=32",
              "--set", "train.cache_side=96", "--set", "train.val_fraction=0.0", "--set", "train.val_images=0",
              "--set", "train.checkpoint_every=0", "--set", "train.log_every=1"]
    assert CliRunner().invoke(cli, common + ["--out", str(first), "--steps", "2"]).exit_code == 0
    shutil.copytree(first, copy)
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(copy / "last.pt"), "--steps", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert load_model(copy / "last.pt")[1]["step"] == 3 and load_model(first / "last.pt")[1]["step"] == 2
    killed = tmp_path / "killed"  # a run killed before its first save leaves a log and no checkpoint
    killed.mkdir()
    (killed / "log.jsonl").write_text('{"step": 1}\n')
    again = CliRunner().invoke(cli, common + ["--out", str(killed), "--steps", "2"])
    assert again.exit_code == 2 and "holds the log of a run that saved no checkpoint" in again.output
    for step in (2, 10):
        shutil.copy(first / "last.pt", killed / f"step_{step}.pt")  # periodic checkpoints but no last.pt
    again = CliRunner().invoke(cli, common + ["--out", str(killed), "--steps", "2"])
    assert again.exit_code == 2 and f"continue it from its latest checkpoint with --resume {killed / 'step_10.pt'}" \
        in again.output


def test_train_cli_reports_stops_and_divergence_in_one_line(tmp_path, monkeypatch):
    import cicm_deploy.train.run as run

    args = ["train", "--preset", "tiny", "--data", PHOTOS, "--out", str(tmp_path / "r"), "--steps", "50"]

    def stopped(*a, **k):
        raise TrainingStopped("SIGINT", 12, tmp_path / "r" / "last.pt")

    monkeypatch.setattr(run, "run_training", stopped)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130
    assert (f"stopped by SIGINT; last.pt holds step 12; continue with: cicm-deploy train --resume "
            f"{tmp_path / 'r' / 'last.pt'} --steps 50") in result.output

    def diverged(*a, **k):
        raise FloatingPointError("non-finite values at step 3 (inpaint)")

    monkeypatch.setattr(run, "run_training", diverged)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and result.output.strip() == "Error: non-finite values at step 3 (inpaint)"


@contextlib.contextmanager
def _gloo(rank: int, world: int, init_file: str):
    """One rank of a CPU process group (gloo), one thread each, torn down on exit."""
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with _gloo(rank, world, init_file):
        config = small_config(Path(out_dir), steps=3)
        trainer = make_trainer(config)
        for _ in range(config.steps):
            image, mask = trainer.train_data.batch(trainer.rng, config.batch_size)
            trainer.train_step(image, mask)
        torch.save({k: v.detach().clone() for k, v in state(trainer).items()}, Path(out_dir) / f"rank{rank}.pt")
        first_batch = trainer.train_data.batch(np.random.default_rng(trainer.config.seed + 1000 * rank), 1)[0]
        torch.save(first_batch, Path(out_dir) / f"batch{rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_hold_identical_parameters_and_memory(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(k.startswith("g.memories.3.sets") for k in a)
    # the ranks trained on different crops, so the agreement is the all-reduce's doing
    assert not torch.equal(torch.load(tmp_path / "batch0.pt", weights_only=True),
                           torch.load(tmp_path / "batch1.pt", weights_only=True))


def _ddp_resume_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import pickle

    import torch.distributed as dist

    with _gloo(rank, world, init_file):
        config = small_config(Path(out_dir), steps=2)
        trainer = make_trainer(config)
        trainer.fit(progress=False)  # its last step saves last.pt: a collective, rank 0 writes
        dist.barrier()
        resumed = make_trainer(small_config(Path(out_dir), steps=4), resume=str(Path(config.out) / "last.pt"))
        states = (trainer.rng.bit_generator.state, resumed.rng.bit_generator.state)
        (Path(out_dir) / f"rng{rank}.pkl").write_bytes(pickle.dumps(states))


@pytest.mark.slow
def test_ddp_resume_gives_each_rank_its_own_rng_back(tmp_path):
    import pickle

    mp.spawn(_ddp_resume_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    (run0, resumed0), (run1, resumed1) = (pickle.loads((tmp_path / f"rng{r}.pkl").read_bytes()) for r in (0, 1))
    assert resumed0 == run0 and resumed1 == run1 and run0 != run1
    saved = read_checkpoint(tmp_path / "run" / "last.pt")["trainer"]
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    with pytest.warns(CICMWarning, match="written by 2 process\\(es\\) and this run has 1: .* not bit for bit"):
        make_trainer(small_config(tmp_path, steps=4), resume=str(tmp_path / "run" / "last.pt"))


def _ddp_nan_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with _gloo(rank, world, init_file):
        trainer = make_trainer(small_config(Path(out_dir) / f"r{rank}", steps=6))
        if rank == 1:  # only this rank's data goes bad; rank 0's losses stay finite
            trainer.train_data = StopAt(trainer.train_data, at=3, error=None)
        try:
            trainer.fit(progress=False)
        except FloatingPointError as exc:
            (Path(out_dir) / f"raised{rank}").write_text(str(exc))


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_diverges(tmp_path):
    context = mp.spawn(_ddp_nan_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    try:
        finished = context.join(timeout=300)
        while not finished:  # join returns once per finished process
            finished = context.join(timeout=300)
    finally:
        for process in context.processes:
            process.kill()
    for rank in (0, 1):  # both stop at the bad step, neither waits forever on the other
        assert "non-finite values at step 3" in (tmp_path / f"raised{rank}").read_text()


def test_train_cli_end_to_end_and_config(tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"train": {"batch_size": 2, "crop": 32, "cache_side": 96, "val_every": 2,
                                            "val_images": 3, "val_fraction": 0.0, "log_every": 1}}))
    out = tmp_path / "run"
    printed = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--config", str(config), "--set",
                                       "model.memory.num_sets=3", "--steps", "2", "--print-config"])
    assert printed.exit_code == 0, printed.output
    resolved = json.loads(printed.output)
    assert resolved["model"]["memory"]["num_sets"] == 3 and resolved["train"]["crop"] == 32
    assert resolved["train"]["steps"] == 2
    nested = tmp_path / "nested.json"  # a nested group sets only the keys it names
    nested.write_text(json.dumps({"model": {"memory": {"num_sets": 5}}}))
    printed = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--config", str(nested), "--print-config"])
    memory = json.loads(printed.output)["model"]["memory"]
    tiny = json.loads(CliRunner().invoke(cli, ["train", "--preset", "tiny", "--print-config"]).output)["model"]["memory"]
    assert memory == {**tiny, "num_sets": 5}
    bad = CliRunner().invoke(cli, ["train", "--set", "model.memory.sets=3"])
    assert bad.exit_code == 2 and "unknown setting 'sets'" in bad.output
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"trian": {"steps": 5}}))
    bad = CliRunner().invoke(cli, ["train", "--config", str(typo), "--print-config"])
    assert bad.exit_code == 2 and "unknown section(s) 'trian'" in bad.output
    typo.write_text(json.dumps({"model": {"nosuch": 1}}))
    bad = CliRunner().invoke(cli, ["train", "--config", str(typo), "--print-config"])
    assert bad.exit_code == 2 and f"--config {typo}: model.nosuch: unknown setting 'nosuch'" in bad.output
    bad = CliRunner().invoke(cli, ["train", "--set", "train.weights.adversarial=abc", "--print-config"])
    assert bad.exit_code == 2 and "train.weights.adversarial = 'abc': expected a finite number >= 0" in bad.output
    nodata = CliRunner().invoke(cli, ["train", "--steps", "1"])
    assert nodata.exit_code == 2 and "no training data" in nodata.output
    missing = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "none"), "--steps", "1", "--out", str(out)])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_trained_checkpoint_loads_and_inpaints(tmp_path):
    trainer = make_trainer(small_config(tmp_path, steps=2))
    trainer.fit(progress=False)
    model, data = load_model(Path(trainer.config.out) / "last.pt")
    assert data["step"] == 2 and data["trainer"]["train_config"]["crop"] == 32
    out = model(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
    assert out.composite.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("args,message", [
    (["--set", "train.lr=abc"], "train.lr = 'abc': expected a learning rate"),
    (["--set", "train.batch_size=-2"], "train.batch_size = -2: expected an integer >= 1"),
    (["--set", "train.crop=100"], "train.crop = 100 must be a multiple of the model stride 8"),
    (["--set", "train.device=tpu"], "train.device = 'tpu': expected auto, cpu, cuda or cuda:N"),
    (["--steps", "0"], "train.steps = 0: expected an integer >= 1"),
    (["--config", "PHOTO"], "cannot read it as JSON"),
])
def test_train_cli_bad_values_are_one_line(tmp_path, args, message):
    args = [str(next(Path(PHOTOS).glob("*.jpg"))) if a == "PHOTO" else a for a in args]
    result = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--data", PHOTOS, "--out", str(tmp_path / "run"),
                                      "--set", "train.val_fraction=0.0", "--steps", "1", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_train_cli_cuda_without_gpu_and_resume_past_the_end(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so cuda is a valid device")
    common = ["train", "--preset", "tiny", "--data", PHOTOS, "--out", str(tmp_path / "run"), "--set",
              "train.batch_size=2", "--set", "train.crop=32", "--set", "train.cache_side=96", "--set",
              "train.val_fraction=0.0", "--set", "train.val_images=0"]
    result = CliRunner().invoke(cli, common + ["--steps", "1", "--set", "train.device=cuda"])
    assert result.exit_code == 2 and "sees no CUDA GPU" in result.output, result.output
    assert "train.device: device 'cuda' was asked for" in result.output and "--set train.device=cpu" in result.output
    assert CliRunner().invoke(cli, common + ["--steps", "2"]).exit_code == 0
    result = CliRunner().invoke(cli, common + ["--steps", "2", "--resume", str(tmp_path / "run" / "last.pt")])
    assert result.exit_code == 2 and "already at step 2" in result.output, result.output
