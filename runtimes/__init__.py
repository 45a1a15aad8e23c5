"""cicm_deploy.runtimes: serves exported bundles without torch (onnxruntime, TensorRT).

Nothing in this package may import torch, directly or through cicm_deploy's core: a Jetson or a
vehicle box installs only the runtime side (tests/runtimes/test_no_torch.py guards it).
"""
