"""Checkpoints: one .npz file holding the model, the optimizer, the RNG states and the run's
config and progress. Written atomically (temp file, fsync, rename), so a crash or Ctrl-C during
a save leaves the previous checkpoint intact.

The metadata carries a format number. Format 0 (no number) is what minivae wrote before there
was one; it reads the same as format 1. A file from a newer format is refused by name, since this
code cannot know what its new entries mean.
"""
import json
import os
import zipfile
from pathlib import Path

import numpy as np

FORMAT = 1  # the format this minivae writes, and the newest it reads
REQUIRED_META = ("config", "epoch", "step", "rng", "optimizer_scalars")


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
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **meta, "optimizer_scalars": scalars}))
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with mode 0o666 lets the umask decide, as for every other file (mkstemp makes 0600)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
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
    """-> (model_state, optimizer_state, meta); CheckpointError naming the file if it is missing,
    unreadable, incomplete or from a newer minivae."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a minivae checkpoint")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
        meta = json.loads(str(files.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a readable minivae checkpoint ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a minivae checkpoint (its metadata is not a dict)")
    number = meta.get("format", 0)
    if not isinstance(number, int) or number > FORMAT:
        raise newer_format(path, number)
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"{path} is incomplete: its metadata lacks {', '.join(missing)}")
    model_state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    optimizer_state = {}
    for k, v in meta.pop("optimizer_scalars").items():
        if isinstance(v, dict) and "list" in v:
            try:
                optimizer_state[k] = [files[f"optim/{k}/{i}"] for i in range(v["list"])]
            except KeyError as exc:
                raise CheckpointError(f"{path} is incomplete: it lacks the array {exc}") from None
        else:
            optimizer_state[k] = v
    return model_state, optimizer_state, meta


def newer_format(path, number, detail=""):
    """The error for a checkpoint from a newer minivae; `detail` says what else gave it away."""
    return CheckpointError(f"{path} was written by a newer minivae (format {number}{detail}); "
                           f"this one reads up to {FORMAT}")
