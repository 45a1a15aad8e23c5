"""The README's Triton client example: send a frame and a mask to `cicm-deploy serve`."""
import sys

import numpy as np
import tritonclient.http as httpclient

url = sys.argv[1] if len(sys.argv) > 1 else "localhost:8000"  # `cicm-deploy serve MODEL` listens here
frame = np.full((120, 160, 3), 128, np.uint8)                       # RGB uint8, any size
mask = np.zeros((120, 160), np.uint8); mask[40:80, 60:100] = 255    # 255 = hole
inputs = [httpclient.InferInput("image", [1, 120, 160, 3], "UINT8"),
          httpclient.InferInput("mask", [1, 120, 160], "UINT8")]
inputs[0].set_data_from_numpy(frame[None]); inputs[1].set_data_from_numpy(mask[None])
client = httpclient.InferenceServerClient(url)               # or tritonclient.grpc on port 8001
clean = client.infer("cicm_inpaint", inputs).as_numpy("inpainted")[0]
print(clean.shape, clean.dtype, (clean[mask == 0] == frame[mask == 0]).all())
