"""cicm_deploy.train: data, masks, losses, the trainer and evaluation (needs torch)."""
