"""Training UNet-CICM (or the plain UNet) with the paper's objective; CPU, GPU, and torchrun DDP.

One step: sample a batch of crops and stroke/box masks (both from the trainer's own seeded
generator), update the discriminator, update the generator on Eq. 9, then run context
generalization on the complete regions of the batch (its statistics all-reduced across ranks,
so every rank holds the same memory). Checkpoints are atomic and carry everything ``--resume``
needs to continue bit for bit: weights, both optimizers, the step, and every RNG state.

Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m cicm_deploy.cli train ...``. Each rank
draws different crops (its seed is offset by its rank); gradients are averaged by
DistributedDataParallel and the memory update is reduced as above. Rank 0 writes logs and
checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cicm_deploy import CICMWarning
from cicm_deploy.checkpoint import read_checkpoint, save_checkpoint
from cicm_deploy.config import ConfigError, ModelConfig
from cicm_deploy.memory import GeneralizationStats
from cicm_deploy.model import UNetCICM
from cicm_deploy.predict import is_device_name, pick_device

from .losses import LossWeights, PatchDiscriminator, generator_loss, relativistic_losses
from .masks import evaluation_masks, sample_mask

TRAINER_STATE_VERSION = 2  # 2: one RNG state per rank (1: rank 0's only; still resumed)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run but the model (``ModelConfig``)."""

    data: str = ""  # folder of training photos (recursive); a deterministic split keeps val_fraction aside
    out: str = "runs/cicm"  # directory for checkpoints (last.pt, step_N.pt) and log.jsonl
    steps: int = 2000  # optimizer steps in total
    batch_size: int = 8  # crops per step (per rank under torchrun)
    crop: int = 128  # training crop side (a multiple of the model stride)
    cache_side: int = 256  # photos are kept in memory downscaled to this short side (0 = full size)
    lr: float = 2e-4  # generator Adam learning rate
    d_lr: float = 2e-4  # discriminator Adam learning rate
    beta1: float = 0.5  # Adam beta1 for both (GAN practice)
    d_width: int = 32  # discriminator width
    weights: LossWeights = field(default_factory=LossWeights)  # Eq. 9 weights
    val_fraction: float = 0.05  # share of photos (by path hash) kept for validation
    val_every: int = 200  # steps between validation PSNR measurements (0 = never)
    val_images: int = 24  # validation crops (fixed, with fixed masks of every bin)
    checkpoint_every: int = 500  # steps between step_N.pt checkpoints (last.pt is written every val too)
    log_every: int = 10  # steps between log.jsonl lines
    seed: int = 0  # seeds the model init, the crops and the masks
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        def check(name: str, kind: type, ok: Callable[[Any], bool], expected: str) -> None:
            value = getattr(self, name)
            kinds = (int, float) if kind is float else kind  # JSON writes 0.0002 and 0 alike
            if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
                raise ConfigError(f"train.{name} = {value!r}: expected {expected}")

        for name in ("steps", "batch_size", "log_every", "d_width"):
            check(name, int, lambda v: v >= 1, "an integer >= 1")
        for name in ("cache_side", "val_every", "val_images", "checkpoint_every", "seed"):
            check(name, int, lambda v: v >= 0, "an integer >= 0")
        check("crop", int, lambda v: v >= 8, "an integer >= 8 (a multiple of the model stride)")
        for name in ("lr", "d_lr"):
            check(name, float, lambda v: 0 <= v < 1, "a learning rate in [0, 1)")
        check("beta1", float, lambda v: 0 <= v < 1, "a number in [0, 1)")
        check("val_fraction", float, lambda v: 0 <= v < 1, "a share in [0, 1)")
        check("data", str, lambda v: True, "a folder path")
        check("out", str, lambda v: bool(v), "a folder path")
        if not isinstance(self.amp, bool):
            raise ConfigError(f"train.amp = {self.amp!r}: expected true or false")
        if not is_device_name(self.device):
            raise ConfigError(f"train.device = {self.device!r}: expected auto, cpu, cuda or cuda:N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        weights = LossWeights(**data.pop("weights", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"train config has unknown fields {unknown}; known: {sorted(names)}")
        return cls(weights=weights, **data)


class PhotoSampler:
    """Random crops from a folder of photos, decoded once and kept in memory (downscaled)."""

    def __init__(self, folder: str, split: str, crop: int, cache_side: int, val_fraction: float) -> None:
        from PIL import Image

        from .data import ImageFolderDataset

        dataset = ImageFolderDataset(folder, crop_size=None, split=split, val_fraction=val_fraction, flip=False)
        self.photos = []
        for index in range(len(dataset)):
            image = dataset.load(index, fallback=False)  # each readable photo once; unreadable ones are skipped
            if image is None:
                continue
            side = min(image.shape[:2])
            scale = max(cache_side / side if cache_side else 1.0, crop / side)
            if scale < 1.0 or side < crop:
                h, w = image.shape[:2]
                size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
                image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
            self.photos.append(image)
        if not self.photos:
            raise dataset.nothing_readable()
        self.skipped = dataset.skipped
        self.crop = crop

    def __len__(self) -> int:
        return len(self.photos)

    def crop_at(self, rng: np.random.Generator) -> np.ndarray:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        y = int(rng.integers(0, photo.shape[0] - self.crop + 1))
        x = int(rng.integers(0, photo.shape[1] - self.crop + 1))
        crop = photo[y:y + self.crop, x:x + self.crop]
        return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = np.stack([self.crop_at(rng) for _ in range(size)])
        masks = np.stack([sample_mask(self.crop, self.crop, rng) for _ in range(size)])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        m = torch.from_numpy(masks).unsqueeze(1).float()
        return x, m


class TrainStep(nn.Module):
    """Forward pass plus the memory losses, so DistributedDataParallel sees every gradient in one graph."""

    def __init__(self, model: UNetCICM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        inter, intra = self.model.memory_losses()
        return self.model(image, mask), inter, intra


class TrainingStopped(KeyboardInterrupt):
    """The run stopped on a signal (Ctrl-C, SIGTERM) at a step boundary, after saving last.pt there."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"stopped by {signal_name} at step {step}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_stats(stats: GeneralizationStats) -> None:
    """Sum one memory's generalization statistics over all ranks, in place."""
    for tensor in stats.tensors():
        dist.all_reduce(tensor)


def rng_state(generator: np.random.Generator) -> dict[str, Any]:
    return {"numpy": generator.bit_generator.state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(generator: np.random.Generator, state: dict[str, Any]) -> None:
    # A checkpoint read with map_location="cuda" brings the saved states onto the GPU; torch takes
    # them back only as CPU byte tensors.
    generator.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def psnr_batch(prediction: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((prediction.float() - target.float()) ** 2, dim=(1, 2, 3)).clamp(min=1e-10)
    return float(torch.mean(10 * torch.log10(1.0 / mse)))


class Trainer:
    def __init__(self, model_config: ModelConfig, config: TrainConfig, *, resume: str | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.rank, self.world = _distributed()
        self.device = self._pick_device(config.device)
        if config.crop % model_config.stride:
            raise ConfigError(f"train.crop = {config.crop} must be a multiple of the model stride "
                              f"{model_config.stride}")
        torch.manual_seed(config.seed)
        self.model = UNetCICM(model_config).to(self.device)
        self.discriminator = PatchDiscriminator(config.d_width).to(self.device)
        self.g_opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
        self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=config.d_lr, betas=(config.beta1, 0.999))
        self.rng = np.random.default_rng(config.seed + 1000 * self.rank)
        self.step = 0
        self.generalize = True  # context generalization after each step (off only to measure its cost)
        self.metrics: dict[str, Any] = {}
        self.on_log = on_log
        if resume:
            self._resume(resume)
        step_module: nn.Module = TrainStep(self.model)
        critic: nn.Module = self.discriminator
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=ids)
            critic = nn.parallel.DistributedDataParallel(critic, device_ids=ids)
        self.step_module, self.critic = step_module, critic
        self.out = Path(config.out)
        self.train_data: PhotoSampler | None = None
        self.val_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _pick_device(name: str) -> torch.device:
        if name == "auto":
            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", 0))
                return torch.device("cuda", local)
            return torch.device("cpu")
        try:
            return pick_device(name, fix="use --set train.device=cpu (or auto)")
        except ValueError as exc:
            raise ConfigError(f"train.device: {exc}") from None

    # -- data ---------------------------------------------------------------------------------
    def attach_data(self, train: PhotoSampler, val: PhotoSampler | None) -> None:
        self.train_data = train
        if val is not None and self.config.val_images > 0:
            rng = np.random.default_rng(12345)  # fixed validation crops, independent of the run
            per_bin = max(1, self.config.val_images // 3)
            masks = evaluation_masks(self.config.crop, self.config.crop, per_bin, seed=2022)
            images = np.stack([val.crop_at(rng) for _ in range(len(masks))])
            self.val_batch = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0,
                              torch.from_numpy(np.stack([m for _, m in masks])).unsqueeze(1).float())

    # -- checkpointing ------------------------------------------------------------------------
    def _trainer_state(self, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": TRAINER_STATE_VERSION, "train_config": self.config.to_dict(),
                "discriminator": self.discriminator.state_dict(), "d_optimizer": self.d_opt.state_dict(),
                "rng": rng_states, "world_size": self.world}

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG state, in rank order (a collective under torchrun: all ranks call it)."""
        mine = rng_state(self.rng)
        if self.world == 1:
            return [mine]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        return gathered

    def _non_finite_weights(self) -> list[str]:
        """Names of the model's parameters and buffers (the memory included) holding NaN or Inf."""
        tensors = list(self.model.named_parameters()) + list(self.model.named_buffers())
        return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]

    def save(self, path: Path) -> Path | None:
        """Write a checkpoint of this step (rank 0 writes; under torchrun every rank must call it)."""
        states = self._rng_states()
        if self.rank != 0:
            return None
        return save_checkpoint(path, self.model, optimizer=self.g_opt, step=self.step, metrics=self.metrics,
                               trainer=self._trainer_state(states))

    def _resume(self, path: str) -> None:
        data = read_checkpoint(path, map_location=self.device)
        trainer = data.get("trainer")
        if not trainer:
            raise ConfigError(f"{path} has no trainer state (written by `init` or exported?); resume needs a "
                              "checkpoint written by `cicm-deploy train`")
        if trainer.get("version") not in (1, TRAINER_STATE_VERSION):
            raise ConfigError(f"{path} has trainer state version {trainer.get('version')!r}; this cicm-deploy "
                             f"resumes versions 1 and {TRAINER_STATE_VERSION}")
        if ModelConfig.from_dict(data["model_config"]) != self.model.config:
            raise ConfigError(f"{path} holds a model configured otherwise than this run's; a resumed run keeps its "
                              "checkpoint's model (drop --preset, --set model.* and the config file's model part)")
        self.model.load_state_dict(data["state_dict"])
        self.g_opt.load_state_dict(data["optimizer"])
        self.discriminator.load_state_dict(trainer["discriminator"])
        self.d_opt.load_state_dict(trainer["d_optimizer"])
        # The optimizers come back with their saved settings; this run's (--set train.lr=...) apply from here.
        for optimizer, lr in ((self.g_opt, self.config.lr), (self.d_opt, self.config.d_lr)):
            for group in optimizer.param_groups:
                group["lr"], group["betas"] = lr, (self.config.beta1, group["betas"][1])
        self.step = int(data["step"])
        states = trainer["rng"] if isinstance(trainer["rng"], list) else [trainer["rng"]]  # version 1: one state
        saved_world = int(trainer.get("world_size", 1))
        if self.rank == 0 and (saved_world != self.world or len(states) != saved_world):
            why = (f"was written by {saved_world} process(es) and this run has {self.world}"
                   if saved_world != self.world else
                   f"was written by {saved_world} processes with an older cicm-deploy that kept rank 0's RNG only")
            warnings.warn(f"{path} {why}: it continues from the same weights, but not bit for bit (each process's "
                          "crops differ from the uninterrupted run's)", CICMWarning, stacklevel=2)
        if self.rank < len(states) and saved_world == self.world:
            restore_rng(self.rng, states[self.rank])
        else:
            self.rng = np.random.default_rng([self.config.seed + 1000 * self.rank, self.step])
        self.metrics = dict(data.get("metrics", {}))

    # -- the step -----------------------------------------------------------------------------
    def _autocast(self) -> Any:
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        weights = self.config.weights
        image, mask = image.to(self.device), mask.to(self.device)
        self.model.train()
        adversarial = weights.adversarial > 0
        with self._autocast():
            output, inter, intra = self.step_module(image, mask)
        d_loss = torch.zeros((), device=self.device)
        g_adv = None
        if adversarial:  # real and fake in one critic call: one forward per backward under DDP
            with self._autocast():
                real_logits, fake_logits = self.critic(torch.cat([image, output.composite.detach()])).float().chunk(2)
            d_loss, _ = relativistic_losses(real_logits, fake_logits)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
            with self._autocast():
                real_logits, fake_logits = self.critic(torch.cat([image, output.composite])).float().chunk(2)
            _, g_adv = relativistic_losses(real_logits, fake_logits)
        terms = generator_loss(output, image, mask, inter, intra, weights, g_adv)
        self.g_opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.g_opt.step()
        if self.generalize:  # summed over ranks under DDP: every rank holds the same memory
            self.model.generalize(output, mask, reduce=all_reduce_stats if self.world > 1 else None)
        self.step += 1
        values = {k: float(v.detach()) for k, v in terms.items()}
        values["discriminator"] = float(d_loss.detach())
        return values

    @torch.no_grad()
    def validate(self) -> float | None:
        if self.val_batch is None:
            return None
        self.model.eval()
        image, mask = (t.to(self.device) for t in self.val_batch)
        with self._autocast():
            out = self.model(image, mask)
        return psnr_batch(out.composite, image)

    # -- the loop -----------------------------------------------------------------------------
    def _any_rank(self, *flags: bool) -> list[bool]:
        """Whether each flag holds on any rank (a collective: every rank calls it at the same point)."""
        values = torch.tensor([int(flag) for flag in flags], device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def _catch_stop_signals(self) -> Callable[[], None]:
        """Ctrl-C and SIGTERM finish the current step, then stop the run at that step boundary (saved,
        so --resume continues bit for bit); a second Ctrl-C aborts at once without saving. Only the
        main thread can take signals: elsewhere they keep their default behaviour."""
        self._stop_signal: str | None = None
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous = {sig: handler for sig, handler in previous.items() if handler is not signal.SIG_IGN}  # kept ignored

        def handle(signum: int, frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name
            if signal.SIGINT in previous:
                signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts at once
            if self.rank == 0:
                from tqdm import tqdm

                tqdm.write(f"{self._stop_signal}: stopping at the end of this step and saving it "
                           "(Ctrl-C again aborts without saving)")

        def release() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python

        for sig in previous:
            signal.signal(sig, handle)
        return release

    def _trim_log(self, log_path: Path) -> None:
        """Drop log lines past the resumed step: a run killed after its last save logged steps it lost."""
        if self.step == 0 or not log_path.is_file():
            return
        lines = log_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= self.step]
        if len(kept) != len(lines):
            tmp = log_path.with_name(f".{log_path.name}.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, log_path)

    def fit(self, progress: bool = True) -> dict[str, Any]:
        """Train to ``config.steps``. Raises ``TrainingStopped`` after a stop on Ctrl-C or SIGTERM."""
        if self.train_data is None:
            raise RuntimeError("attach_data() first")
        from tqdm import tqdm

        config = self.config
        if self.step >= config.steps:
            raise ConfigError(f"this run is already at step {self.step} and train.steps is {config.steps}: nothing to "
                              f"do; ask for more steps (e.g. --steps {self.step + config.steps})")
        main = self.rank == 0
        log_path = self.out / "log.jsonl"
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._trim_log(log_path)
        bar = tqdm(total=config.steps, initial=self.step, disable=not (progress and main), unit="step",
                   dynamic_ncols=True)
        images_seen, started = 0, time.perf_counter()
        self.last_saved_step: int | None = None  # of this run's last.pt, for the non-finite error
        release_signals = self._catch_stop_signals()
        try:
            agreed_stop = False  # under torchrun: a rank stops when the ranks agree to, all at one step
            while self.step < config.steps and not (agreed_stop if self.world > 1 else self._stop_signal is not None):
                image, mask = self.train_data.batch(self.rng, config.batch_size)
                values = self.train_step(image, mask)
                images_seen += len(image) * self.world
                rate = images_seen / max(time.perf_counter() - started, 1e-9)
                validating = bool(config.val_every and self.step % config.val_every == 0 or self.step == config.steps)
                checkpointing = bool(config.checkpoint_every and self.step % config.checkpoint_every == 0)
                broken = [k for k, v in values.items() if not math.isfinite(v)]
                if not broken and (validating or checkpointing):  # a finite loss can hide overflowed weights
                    broken = self._non_finite_weights()  # the same on every rank: DDP keeps the weights equal
                if self.world > 1:  # one collective a step: a bad value or a signal on any rank stops them all
                    any_broken, agreed_stop = self._any_rank(bool(broken), self._stop_signal is not None)
                    if any_broken and not broken:
                        broken = ["another rank's losses"]
                    if agreed_stop and self._stop_signal is None:
                        self._stop_signal = "a signal to another rank"
                if broken:
                    kept = (f"{self.out / 'last.pt'} keeps step {self.last_saved_step}" if self.last_saved_step
                            else "no checkpoint of this run was written before it")
                    raise FloatingPointError(f"non-finite values at step {self.step} ({', '.join(broken[:4])}): "
                                             f"losses {values}; the weights were not saved ({kept}); lower the "
                                             "learning rate or check the data, then resume from the last checkpoint")
                record = {"step": self.step, **{k: round(v, 6) for k, v in values.items()},
                          "images_per_s": round(rate, 2)}
                if validating:
                    val = self.validate()
                    if val is not None:
                        record["val_psnr"] = round(val, 3)
                        self.metrics["val_psnr"] = record["val_psnr"]
                    self.metrics.update(step=self.step, images_per_s=record["images_per_s"])
                    self.save(self.out / "last.pt")
                    self.last_saved_step = self.step
                if checkpointing:
                    self.save(self.out / f"step_{self.step}.pt")
                if main and (self.step % config.log_every == 0 or "val_psnr" in record):
                    with open(log_path, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    if self.on_log:
                        self.on_log(record)
                bar.set_postfix(loss=f"{values['total']:.4f}", l2=f"{values['inpaint']:.4f}",
                                img_s=f"{rate:.1f}", **({"val": record["val_psnr"]} if "val_psnr" in record else {}))
                bar.update(1)
        finally:
            release_signals()
            bar.close()
        if self._stop_signal is not None and self.step < config.steps:  # a stop in the last step: simply done
            # at a step boundary, so the saved state resumes bit for bit; every rank holds the same
            # weights and step, so they agree on all of this without talking
            if self.step > 0 and self.last_saved_step != self.step:
                broken = self._non_finite_weights()
                if broken:
                    raise FloatingPointError(f"stopped by {self._stop_signal} at step {self.step}, whose weights hold "
                                             f"non-finite values ({', '.join(broken[:4])}): not saved; resume from "
                                             "the last checkpoint with a lower learning rate")
                self.save(self.out / "last.pt")
                self.last_saved_step = self.step
            raise TrainingStopped(self._stop_signal, self.step, self.out / "last.pt" if self.step > 0 else None)
        return self.metrics


def _logged_step(line: str) -> float:
    """The step of a log line; a line torn by a kill mid-write counts as past every step (dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
