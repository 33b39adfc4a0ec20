"""Which parameters and which config sections a part of the step applies to.

Plain data in, plain data out: glob patterns over parameter names (train.trainable, a
penalty's params), and the penalties of a resolved config in the order a step adds
their gradients. The config package checks configs with these; the trainer and the
chain build from them, so a pattern means the same thing at both times.
"""

from __future__ import annotations

import fnmatch


def match_patterns(patterns: list[str], names: list[str]) -> tuple[list[str], list[str]]:
    """(names matched by any pattern, in model order; patterns that matched nothing)."""
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return matched, unmatched


def penalty_sections(config: dict) -> list[tuple[str, dict]]:
    """(config path, {name, options}) of every penalty, in the order a step adds their
    gradients: the l2 section (the spelling of old configs), then `penalties` in list order."""
    out = []
    if isinstance(config.get("l2"), dict):
        out.append(("l2", {"name": "l2", **config["l2"]}))
    penalties = config.get("penalties")
    for i, item in enumerate(penalties if isinstance(penalties, list) else []):
        if isinstance(item, dict):
            out.append((f"penalties.{i}", item))
    return out
