"""Successive halving: every setting trains to a budget, the best 1/rate go on to a
budget rate times larger, until one is left, which trains to its end.

A rung stops each trial at the budget with the run's own `stop_at` (saved, status
"stopped"); the next rung resumes the survivors from that checkpoint, and since resume
is exact a survivor ends exactly as an uninterrupted run would. The decisions are a
function of the trials' results alone, so a sweep run again takes the same ones, reading
the results at each budget from the run directories.
"""

from __future__ import annotations

from .results import rank_key


def keep(count: int, rate: int) -> int:
    """Settings that go on from a rung of `count`: the best 1/rate, at least one."""
    return max(1, count // rate)


def survivors(values: dict[str, list[float | None]], rate: int, goal: str) -> list[str]:
    """The settings (keys of `values`, in their order) that go on to the next rung.

    `values[setting]` are the metric values of its trials at the budget (None where a trial
    diverged or failed: such a setting ranks below every complete one). Ties keep the
    sweep file's order.
    """
    order = list(values)
    ranked = sorted(order, key=lambda s: (rank_key(values[s], goal), order.index(s)))
    chosen = set(ranked[: keep(len(order), rate)])
    return [s for s in order if s in chosen]
