"""The PyTorch backend behind the same ``Runtime`` base as onnxruntime and TensorRT.

Lives in the core package, not in ``cicm_deploy.runtimes``: it needs torch, which the runtime
side never imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .predict import pick_device
from .runtimes.base import Runtime

INPUT_SPECS = [{"name": "image", "dtype": "float32", "shape": ["batch", 3, "height", "width"]},
               {"name": "mask", "dtype": "float32", "shape": ["batch", 1, "height", "width"]}]


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto") -> None:
        super().__init__(None)
        self.checkpoint = Path(checkpoint)
        self.device = pick_device(device)
        self.model: Any = None
        self.step: int | None = None

    @property
    def input_specs(self) -> list[dict[str, Any]]:
        return INPUT_SPECS

    @property
    def stride(self) -> int:
        self.load()
        return self.model.config.stride

    def _load(self) -> None:
        self.model, data = load_model(self.checkpoint, map_location=self.device)
        self.step = data.get("step")

    def _close(self) -> None:
        self.model = None

    @torch.inference_mode()
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = torch.from_numpy(feeds["image"]).to(self.device)
        mask = torch.from_numpy(feeds["mask"]).to(self.device)
        out = self.model(image, mask)
        outputs = {"inpainted": out.composite.float().cpu().numpy()}
        if out.routes:
            level = str(max(self.model.config.cicm_levels))
            outputs["route"] = out.routes[level].to(torch.int32).cpu().numpy()
        return outputs

    def describe(self) -> dict[str, Any]:
        self.load()
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return {"backend": self.backend, "device": device, "precision": "fp32", "routing": "pytorch",
                "checkpoint": str(self.checkpoint), "step": self.step, "versions": {"torch": torch.__version__}}
