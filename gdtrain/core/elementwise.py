"""The element-wise end of a training step, run block by block over cache-sized views.

After the backward pass, every part of the step (chain.py: the penalties' gradients, the
clip, the optimizer's update, applying it, the moving average) reads and writes every
trainable value a few times. Run one part after the other over whole arrays, each part
streams the parameters, gradients, slots and shadows through the caches again: the MNIST
MLP's W1 alone is 392,000 values, 1.5 MB in each of its five arrays. Here all the parts
can run on one block of every array (views of some 16K-64K values) before the next
block begins, so that a block and the parts' temporaries stay in L1/L2 for all of them.
Whether that pays depends on the CPU's caches (see CANDIDATES): by default the pass
times whole arrays and two block sizes over the first steps and keeps the fastest.

The bits are those of running each part over the whole arrays in turn: every part is
element-wise (each entry it writes comes from the same entry of its inputs, by the same
operations in the same order: penalties.py, clipping.py and optimizers.py ask it of their
entries), so the block an entry is computed in cannot change it. What is not element-wise
runs once per step, on whole arrays: a clip's `measure` (a norm over the whole gradients,
after the penalties: the pass is split in two there, penalties first) and the EMA's
decay. The optimizer's update is written for whole arrays and called once per block on
the block's views; the entries of its state that are not per-parameter slots (Adam's beta
powers, which the update reads and advances) are given to every block but the last as
copies of their values at the start of the step, and to the last as themselves: every
block computes from the same powers, and they advance once per step.

Blocks: the parameters are taken in the gradients' order; small ones share a block (the
MLP's b1, W2 and b2), a large one is cut into near-equal blocks of its flat C-order array.
An array that is not C-contiguous (a flat view of it would be a copy) stays whole, in a
block of its own. The views of the parameters, slots and shadows are cut once and kept
while those arrays stay the same objects; the gradients' are cut each step.

`threads=2` hands the first half of the blocks to a worker thread (NumPy releases the GIL
inside each ufunc loop). Not used by default: on the 2-core machine of docs/performance.md
it made whole steps slower (benchmarks/split_update.py).
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from . import fpenv

# The block sizes a pass tries, in values (None: whole arrays), when it is not given one.
# Which is fastest depends on the CPU: on the Intel Xeon of issue 13, 16K-64K-value blocks
# halved the MLP's update (its L3 is slow next to L2); on the AMD EPYC of
# docs/performance.md, whose L3 streams whole arrays as fast as L2 serves a block, every
# cut only adds its calls (~5-8 µs a block: 289 µs whole, 332 in 64K blocks, 401 in 16K,
# in the MLP's real steps). The bits are the same whichever runs, so the pass measures.
CANDIDATES: tuple[int | None, ...] = (None, 64 * 1024, 16 * 1024)
TURNS, RUNS = 3, 3  # each candidate runs RUNS steps in a row, TURNS times; the first of a turn is not timed

Cuts = list[tuple[str, slice | None]]  # (name, slice of its flat array), or (name, None): whole


class Block:
    """One block: views of the parameters, of the optimizer's per-parameter slots and of the
    EMA's shadows, by parameter name; `cuts` says which part of each parameter it holds."""

    __slots__ = ("cuts", "params", "slots", "shadows")

    def __init__(self, cuts: Cuts, params: dict, slots: dict, shadows: dict | None):
        self.cuts = cuts
        self.params = params
        self.slots = slots
        self.shadows = shadows


def plan_blocks(sizes: dict[str, int], whole: set[str], block_elements: int) -> list[Cuts]:
    """The blocks of a step: parameters in order, small ones together up to block_elements
    values, large ones cut into near-equal slices; names in `whole` are never cut."""
    blocks: list[Cuts] = []
    current: Cuts = []
    filled = 0
    for name, n in sizes.items():
        if n <= block_elements or name in whole:
            if current and filled + n > block_elements:
                blocks.append(current)
                current, filled = [], 0
            current.append((name, None))
            filled += n
            continue
        pieces = math.ceil(n / block_elements)
        edges = [n * i // pieces for i in range(pieces + 1)]
        blocks.extend([(name, slice(a, b))] for a, b in zip(edges, edges[1:], strict=False))
    if current:
        blocks.append(current)
    return blocks


def _sweep_range(stages, views, blocks, first, end) -> None:
    last = len(blocks) - 1
    for i in range(first, end):
        g, block, at_end = views[i], blocks[i], i == last
        for stage in stages:
            stage(g, block, at_end)


def _copies(entries: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    return {s: {k: v.copy() for k, v in per.items()} for s, per in entries.items()}


def _halfway(blocks: list[Block]) -> int:
    """Where to split the blocks in two of about equal size (0: not worth a second thread)."""
    sizes = [sum(b.params[k].size for k, _ in b.cuts) for b in blocks]
    total, done = sum(sizes), 0
    for i, n in enumerate(sizes):
        if done + n / 2 >= total / 2:
            return i if i > 0 else 0
        done += n
    return 0


def _cut(array: np.ndarray, part: slice | None) -> np.ndarray:
    return array if part is None else array.reshape(-1)[part]


class ElementwisePass:
    """Penalties, clip, optimizer update, apply and EMA of one step, over blocks of views.

    `run(grads, lr, updates_done, ...)` does what, on whole arrays, is

        for penalty in penalties: penalty.add_gradient(grads, params)
        clip.apply(grads)
        updates, _ = optimizer.update(grads, opt_state, lr, params); params += updates
        average.update(params, updates_done)

    with the same bits. `block_elements` None runs every part over the whole arrays in turn
    (the reference the blocked form is tested against); "auto" tries each of CANDIDATES over
    the first steps and keeps the fastest (`timings` then holds what it measured).
    """

    def __init__(self, block_elements: int | None | str = "auto", threads: int = 1):
        self._tuner = _Tuner() if block_elements == "auto" else None
        self.block_elements = None if block_elements == "auto" else block_elements
        self.timings: dict[int | None, float] = {}  # the tuner's best seconds per candidate
        self.threads = threads
        self._thread: _Worker | None = None
        self._plans: dict[int | None, _Plan] = {}  # by block size: the views cut for it

    # ------------------------------------------------------------ the blocks

    def _slot_names(self, opt_state: dict, params: dict, names: tuple[str, ...]) -> list[str]:
        """The optimizer's slots kept per parameter (not Adam's beta powers)."""
        out = []
        for slot, per_param in opt_state.items():
            if all(k in per_param and np.shape(per_param[k]) == params[k].shape for k in names):
                out.append(slot)
        return out

    def blocks(self, grads: dict, params: dict, opt_state: dict, shadows: dict | None) -> list[Block]:
        """The blocks for these arrays at the current block size."""
        return self._plan(grads, params, opt_state, shadows).blocks

    def _plan(self, grads: dict, params: dict, opt_state: dict, shadows: dict | None) -> _Plan:
        """The views for these arrays: kept from step to step while they are the same objects."""
        plan = self._plans.get(self.block_elements)
        if plan is not None and plan.fits(grads, params, opt_state, shadows):
            return plan
        names = tuple(grads)
        slot_names = self._slot_names(opt_state, params, names)
        watch = [(params, k, params[k]) for k in names]
        watch += [(opt_state, slot, opt_state[slot]) for slot in slot_names]
        watch += [(opt_state[slot], k, opt_state[slot][k]) for slot in slot_names for k in names]
        if shadows is not None:
            watch += [(shadows, k, shadows[k]) for k in names]
        # a parameter any of whose arrays is not C-contiguous has no flat view: it stays whole
        whole = {container_key for _, container_key, a in watch
                 if isinstance(a, np.ndarray) and not a.flags.c_contiguous}
        sizes = {k: params[k].size for k in names}
        if self.block_elements is None:
            whole, limit = set(names), max(sum(sizes.values()), 1)
        else:
            limit = self.block_elements
        blocks = []
        for cuts in plan_blocks(sizes, whole, limit):
            blocks.append(Block(
                cuts,
                {k: _cut(params[k], part) for k, part in cuts},
                {s: {k: _cut(opt_state[s][k], part) for k, part in cuts} for s in slot_names},
                {k: _cut(shadows[k], part) for k, part in cuts} if shadows is not None else None,
            ))
        plan = _Plan(names, (params, opt_state, shadows), watch, blocks,
                     [s for s in opt_state if s not in slot_names])
        self._plans[self.block_elements] = plan
        return plan

    @staticmethod
    def grad_views(grads: dict, blocks: list[Block]) -> list[dict]:
        """This step's gradients, cut as the blocks are (made C-contiguous where they were not:
        the gradients are the step's own scratch)."""
        flat = {}
        out = []
        for block in blocks:
            views = {}
            for k, part in block.cuts:
                if part is None:
                    views[k] = grads[k]
                    continue
                f = flat.get(k)
                if f is None:
                    g = grads[k]
                    if not g.flags.c_contiguous:
                        g = grads[k] = np.ascontiguousarray(g)
                    f = flat[k] = g.reshape(-1)
                views[k] = f[part]
            out.append(views)
        return out

    # ------------------------------------------------------------ one step

    def run(self, grads: dict, lr: float, updates_done: int, params: dict, opt_state: dict,
            optimizer, penalties=(), clip=None, average=None) -> None:
        """One step's penalties, clip (a ClipPart), optimizer update and its application, and
        moving average (a MovingAverage) over `grads`, the data loss's gradients."""
        if self._tuner is not None:
            self._tuning_run(grads, lr, updates_done, params, opt_state, optimizer, penalties, clip, average)
            return
        shadows = average.shadows if average is not None else None
        plan = self._plans.get(self.block_elements)
        if plan is None or not plan.fits(grads, params, opt_state, shadows):
            plan = self._plan(grads, params, opt_state, shadows)
        if plan.whole:  # one block of whole arrays (the softmax model's W and b): the parts in turn
            for penalty in penalties:
                penalty.add_gradient(grads, params)
            if clip is not None:
                clip.apply(grads)
            for k, u in optimizer.update(grads, opt_state, lr, params)[0].items():
                params[k] += u
            if average is not None:
                average.update(params, updates_done)
            return
        self._blocked(plan, grads, lr, updates_done, opt_state, optimizer, penalties, clip, average)

    def _tuning_run(self, grads, lr, updates_done, params, opt_state, optimizer, penalties, clip, average):
        tuner = self._tuner
        self.block_elements = tuner.next({k: params[k].size for k in grads})
        if tuner.settled:  # one way to cut these arrays: nothing to compare
            self._tuner = None
            self.run(grads, lr, updates_done, params, opt_state, optimizer, penalties, clip, average)
            return
        self._tuner = None  # run() below runs the candidate
        t0 = time.perf_counter()
        self.run(grads, lr, updates_done, params, opt_state, optimizer, penalties, clip, average)
        seconds = time.perf_counter() - t0
        self._tuner = tuner
        if tuner.record(seconds):
            self.block_elements, self.timings, self._tuner = tuner.best, tuner.timings(), None
            self._plans = {tuner.best: self._plans[tuner.best]} if tuner.best in self._plans else {}

    def _blocked(self, plan: _Plan, grads, lr, updates_done, opt_state, optimizer, penalties, clip,
                 average) -> None:
        """The parts block by block: one pass over the blocks, or two around a clip's measure."""
        blocks = plan.blocks
        views = self.grad_views(grads, blocks)
        stages: list[Callable[[dict, Block, bool], None]] = []  # waiting for a pass over the blocks
        for penalty in penalties:
            stages.append(lambda g, b, at_end, add=penalty.add_gradient: add(g, b.params))
        if clip is not None:
            if clip.clip.measure is not None:
                self._sweep(stages, views, plan)  # the norm is of the gradients the penalties made
                stages = []
            measured = clip.measure(grads)
            apply_clip = clip.clip.apply
            stages.append(lambda g, b, at_end: apply_clip(g, measured))
        update = optimizer.update
        scalars = {s: opt_state[s] for s in plan.scalar_names}
        if scalars:
            at_start = _copies(scalars)

            def apply_update(g, b, at_end):
                # the per-step scalars: every block computes from their values at the start of
                # the step; the real ones advance once, with the last block
                state = {**b.slots, **(scalars if at_end else _copies(at_start))}
                params_b = b.params
                for k, u in update(g, state, lr, params_b)[0].items():
                    params_b[k] += u
        else:
            def apply_update(g, b, at_end):
                params_b = b.params
                for k, u in update(g, b.slots, lr, params_b)[0].items():
                    params_b[k] += u

        stages.append(apply_update)
        if average is not None:
            one_minus_decay = average.one_minus_decay(updates_done)
            update_views = average.update_views
            stages.append(lambda g, b, at_end: update_views(b.shadows, b.params, one_minus_decay))
        self._sweep(stages, views, plan)

    def _sweep(self, stages, views, plan: _Plan) -> None:
        """Every stage on the first block, then on the next, ...; with threads, the first
        blocks up to the halfway point on the worker thread meanwhile."""
        blocks = plan.blocks
        split = plan.split if self.threads > 1 else 0
        if split:
            worker = self._worker()
            # the worker computes as this thread does: NumPy's error state (a context
            # variable) and FTZ/DAZ (a per-thread register, run.flush_subnormals)
            worker.submit(fpenv.flushing(), contextvars.copy_context().run, _sweep_range, stages, views,
                          blocks, 0, split)
            try:
                _sweep_range(stages, views, blocks, split, len(blocks))
            finally:
                worker.wait()
        else:
            _sweep_range(stages, views, blocks, 0, len(blocks))

    def _worker(self) -> _Worker:
        if self._thread is None:
            self._thread = _Worker()
        return self._thread


class _Plan:
    """The blocks cut for one block size, and what they were cut from."""

    def __init__(self, names, containers, watch, blocks: list[Block], scalar_names: list[str]):
        self.names = names  # the gradients' names, in order
        self.containers = containers  # (params, opt_state, shadows): the dicts given
        self.watch = watch  # (dict, key, value) of every array and slot dict the views came from
        self.blocks = blocks
        self.scalar_names = scalar_names  # the optimizer's other state entries (Adam's powers)
        self.split = _halfway(blocks)  # blocks [0, split) go to a worker thread
        # one block of whole arrays (or nothing to train): each part runs over them in turn, no
        # views; with nothing to train the optimizer's scalars still advance, as they always did
        self.whole = not blocks or (len(blocks) == 1 and all(part is None for _, part in blocks[0].cuts))

    def fits(self, grads, params, opt_state, shadows) -> bool:
        """Whether these are the arrays the views were cut from (checked every step: loops,
        not generators, because it is on the softmax step's critical few µs)."""
        kept = self.containers
        if params is not kept[0] or opt_state is not kept[1] or shadows is not kept[2]:
            return False
        if len(grads) != len(self.names):
            return False
        for name, kept_name in zip(grads, self.names):  # noqa: B905 - lengths checked above
            if name != kept_name:
                return False
        for container, key, value in self.watch:
            if container.get(key) is not value:
                return False
        return True


class _Tuner:
    """Picks the fastest of CANDIDATES over the first steps: they take TURNS turns of RUNS
    steps each (a burst of someone else's load then falls on all of them); the first step of
    a turn is not counted (it cuts the views, or follows another candidate's temporaries),
    and the least time wins. Candidates that cut these parameters alike (the softmax model's
    7,850 values fit any block) are one, and nothing is tried."""

    def __init__(self):
        self._queue: list[int | None] | None = None
        self._times: dict[int | None, list[float]] = {}
        self._previous: object = object()  # the candidate of the last step (none yet)
        self._current: int | None = None
        self._counted = False
        self.best: int | None = None
        self.settled = False  # only one candidate: chosen without timing

    def next(self, sizes: dict[str, int]) -> int | None:
        if self._queue is None:
            plans: dict[str, int | None] = {}
            total = max(sum(sizes.values()), 1)
            for c in CANDIDATES:
                plans.setdefault(repr(plan_blocks(sizes, set(sizes) if c is None else set(), c or total)), c)
            chosen = list(plans.values())
            self._times = {c: [] for c in chosen}
            if len(chosen) == 1:
                self.best, self.settled, self._queue = chosen[0], True, []
                return self.best
            self._queue = [c for _ in range(TURNS) for c in chosen for _ in range(RUNS)]
        self._current = self._queue.pop(0)
        self._counted = self._current == self._previous
        self._previous = self._current
        return self._current

    def record(self, seconds: float) -> bool:
        """Count one timed run; True once the choice is made (in `best`)."""
        if self._counted:
            self._times[self._current].append(seconds)
        if self._queue:
            return False
        self.best = min(self._times, key=lambda c: min(self._times[c], default=math.inf))
        return True

    def timings(self) -> dict[int | None, float]:
        return {c: min(v) for c, v in self._times.items() if v}


class _Worker:
    """A thread that runs one job at a time for the pass (NumPy releases the GIL in its loops)."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="gdtrain-elementwise", daemon=True).start()

    def _serve(self):
        while True:
            flush, fn, args = self._jobs.get()
            try:
                if fpenv.flushing() != flush:
                    fpenv.set_flush(flush)
                fn(*args)
            except BaseException as exc:  # handed to the waiting step
                self._done.put(exc)
            else:
                self._done.put(None)

    def submit(self, flush: bool, fn, *args) -> None:
        self._jobs.put((flush, fn, args))

    def wait(self) -> None:
        exc = self._done.get()
        if exc is not None:
            raise exc
