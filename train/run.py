"""Entry point of ``cicm-deploy train``: distributed set-up, data, the trainer, tear-down."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from cicm_deploy.config import ModelConfig

from .trainer import PhotoSampler, TrainConfig, Trainer


def init_distributed() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def run_training(model_config: ModelConfig, config: TrainConfig, resume: str | None = None,
                 progress: bool = True) -> dict[str, Any]:
    started_group = init_distributed()
    if not torch.cuda.is_available():
        # Denormal floats in small gradients slow CPU convolutions several-fold (measured on the
        # tiny preset); flushing them to zero changes nothing a model can learn.
        torch.set_flush_denormal(True)
    try:
        train = PhotoSampler(config.data, "train", config.crop, config.cache_side, config.val_fraction)
        val = None
        if config.val_fraction > 0 and config.val_images > 0:
            val = PhotoSampler(config.data, "val", config.crop, config.cache_side, config.val_fraction)
        trainer = Trainer(model_config, config, resume=resume)
        trainer.attach_data(train, val)
        return trainer.fit(progress=progress)
    finally:
        if started_group:
            dist.destroy_process_group()
