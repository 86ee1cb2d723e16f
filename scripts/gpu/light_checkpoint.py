"""Copy a run folder's small files plus bf16 weights (no optimizer moments) into DEST, for carrying back."""

import shutil
import sys
from pathlib import Path

import torch

run, dest = Path(sys.argv[1]), Path(sys.argv[2])
shutil.rmtree(dest, ignore_errors=True)
for sub in ("autoencoder", "diffusion"):
    src = run / sub
    if not src.is_dir():
        continue
    (dest / sub).mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "checkpoint.pt":
            state = torch.load(f, map_location="cpu", weights_only=False)
            state.pop("optimizer", None)
            state = {k: v for k, v in state.items() if sub == "autoencoder" or k != "lr_scheduler"}
            half = lambda sd: {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
            for key in ("model", "unet", "map_encoder"):
                if key in state:
                    state[key] = half(state[key])
            if "ema" in state:
                state["ema"]["shadow_params"] = [p.to(torch.bfloat16) for p in state["ema"]["shadow_params"]]
            state["light"] = True
            torch.save(state, dest / sub / "checkpoint.pt")
        elif f.is_dir():
            shutil.copytree(f, dest / sub / f.name)
        else:
            shutil.copy2(f, dest / sub / f.name)
