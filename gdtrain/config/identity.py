"""A resolved config's identity: its canonical JSON and the hash checkpoints record."""

from __future__ import annotations

import hashlib
import json


def canonical(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()
