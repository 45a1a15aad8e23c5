"""cicm_deploy.export: freezes the memory into an ONNX bundle (needs torch and onnx)."""
