"""The README's embedding example, as a file the tests run."""
import numpy as np
from cicm_deploy import Inpainter
from cicm_deploy.cli import default_model_path

frame = np.full((120, 160, 3), 128, np.uint8)           # RGB uint8 from your camera
mask = np.zeros((120, 160), bool); mask[40:80, 60:100] = True   # True = hole
with Inpainter(default_model_path()) as inpaint:        # a checkpoint, bundle dir or engine
    clean = inpaint(frame, mask)                        # uint8, known pixels unchanged
    print(inpaint.describe()["backend"], clean.shape, (clean[~mask] == frame[~mask]).all())
