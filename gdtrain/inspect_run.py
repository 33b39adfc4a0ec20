"""Questions asked of a finished (or running) run: its config, its weights, its scores."""

from __future__ import annotations

from pathlib import Path

from . import checkpoint
from .config import resolve
from .data import load_dataset
from .errors import CheckpointError, ConfigError
from .evaluate import evaluate
from .train import Trainer


def load_trainer(target: str | Path):
    """(trainer with the checkpoint's state, checkpoint path, meta) for a run or checkpoint."""
    path = checkpoint.resolve_path(target)
    # read the metadata first: the config inside says which shapes to expect
    _, meta = checkpoint.load(path)
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: metadata holds no config")
    try:
        config = resolve(saved, str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the config stored in it is invalid: {exc}") from None
    dataset = load_dataset(config["data"], config["run"]["dtype"])
    trainer = Trainer(config, dataset)
    arrays, meta = checkpoint.load(path, trainer.state_shapes())
    trainer.load_state(arrays, int(meta["step"]))
    return trainer, path, meta


def evaluate_checkpoint(target: str | Path, split: str = "test", weights: str = "ema") -> dict:
    trainer, path, meta = load_trainer(target)
    ds = trainer.dataset
    chosen = ds.split(split)
    note = None
    if chosen is None:
        if split == "validation":
            raise ConfigError(f"--split validation: {ds.name} has no validation split "
                              "(set data.validation: N to hold some out)")
        note = f"dataset {ds.name} has no {split} split; evaluated on the training set"
        split, chosen = "train", ds.train
    used = "ema" if weights == "ema" and trainer.ema is not None else "raw"
    result = evaluate(trainer.model, trainer.loss, trainer.eval_params(used), chosen, ds.num_classes)
    out = {"checkpoint": str(path), "step": int(meta["step"]), "split": split, "weights": used,
           **result}
    if trainer.l2_params:
        out["l2"] = trainer.l2_term(trainer.eval_params(used))
    if note:
        out["note"] = note
    return out
