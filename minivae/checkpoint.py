"""Checkpoints: one .npz file holding the model, the optimizer, the RNG states and the run's
config and progress. Written atomically (temp file, fsync, rename), so a crash or Ctrl-C during
a save leaves the previous checkpoint intact."""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


class CheckpointError(Exception):
    pass


def save(path, model_state, optimizer_state, meta):
    """meta: JSON-serialisable dict (config, epoch, step, rng state, ...)."""
    path = Path(path)
    arrays = {f"model/{k}": v for k, v in model_state.items()}
    scalars = {}
    for k, v in optimizer_state.items():
        if isinstance(v, list):  # per-parameter state arrays
            arrays.update({f"optim/{k}/{i}": a for i, a in enumerate(v)})
            scalars[k] = {"list": len(v)}
        else:
            scalars[k] = v
    arrays["meta"] = np.array(json.dumps({**meta, "optimizer_scalars": scalars}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path):
    """-> (model_state, optimizer_state, meta); CheckpointError naming the file if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        meta = json.loads(str(files.pop("meta")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a readable minivae checkpoint ({exc})") from None
    model_state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    optimizer_state = {}
    for k, v in meta.pop("optimizer_scalars").items():
        if isinstance(v, dict) and "list" in v:
            optimizer_state[k] = [files[f"optim/{k}/{i}"] for i in range(v["list"])]
        else:
            optimizer_state[k] = v
    return model_state, optimizer_state, meta
