"""The crasher: SIGKILL a real ingest, re-index, adapter publish and server, at named points of
each write and at random moments; every restart finds a loadable, consistent state equal to the
one before or after the operation, and recovering twice changes nothing.

Each iteration: change the files the operation reads; reopen (the state before); run the
operation in a child process that dies at its kill point; restart twice (the server's startup,
in this process: index recovery, `clean_staging`, the job table), checking each time; judge it;
re-run the operation to completion when it was cut short, so the next iteration starts from a
known state. A failed iteration is reported and the loop goes on from a fresh data directory.

`RAGTUNE_CRASHER_ITERATIONS` (default 30) and `RAGTUNE_CRASHER_SEED` reproduce a run: the
schedule of operations and kill points depends on the seed only (random-moment kills land where
the timing puts them).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.crasher_ops import OPS, classify, schedule
from tests.reliability.crasher_state import CrashCheckError, Snapshot, recover
from tests.reliability.crasher_world import World
from tests.reliability_table import Figures

ITERATIONS = int(os.environ.get("RAGTUNE_CRASHER_ITERATIONS", "30"))
SEED = int(os.environ.get("RAGTUNE_CRASHER_SEED", "6001"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path / "crasher")
    made.build(random.Random(SEED))
    yield made
    made.stop_servers()


def reopen(world: World, timings: list[float]) -> Snapshot:
    snapshot, seconds = recover(world.data, world.corpus)
    timings.append(seconds)
    return snapshot


def iteration(
    world: World, op_name: str, point: str, rng: random.Random, timings: list[float]
) -> str:
    """One kill, two recoveries and the judgement; returns where the kill left the state."""
    op = OPS[op_name]
    op.prepare(world, rng)
    before = reopen(world, timings)
    plan = op.plan(world, before, rng)
    plan.run(point)
    found = reopen(world, timings)
    again = reopen(world, timings)
    if again != found:
        raise CrashCheckError(f"recovery is not idempotent: {_changed(found, again)}")
    phase = classify(before, plan.expect, found)
    if phase == "before" or plan.rerun_when_done:
        plan.run(None)
        done = reopen(world, timings)
        if classify(before, plan.expect, done) != "after":
            raise CrashCheckError("re-running the operation did not complete it")
        if phase == "after" and done.index.version != found.index.version:
            raise CrashCheckError("re-running a completed ingest made a new index version")
    return phase


def _changed(first: Snapshot, second: Snapshot) -> str:
    parts = [
        k
        for k in ("index", "registry", "uploads", "jobs")
        if getattr(first, k) != getattr(second, k)
    ]
    files = sorted(k for k in first.files.keys() | second.files.keys()
                   if first.files.get(k) != second.files.get(k))  # fmt: skip
    return f"changed {parts}, files {files[:8]}"


@pytest.mark.slow
@pytest.mark.promise(1)
def test_crasher_loop(world: World, figures: Figures) -> None:
    failures: list[str] = []
    timings: list[float] = []
    outcomes: Counter[str] = Counter()
    for number, (op_name, point) in zip(range(ITERATIONS), schedule(SEED), strict=False):
        rng = random.Random(f"{SEED}:{number}")
        try:
            outcomes[f"{op_name}@{point}: {iteration(world, op_name, point, rng, timings)}"] += 1
        except Exception as exc:  # one broken iteration must not hide the others
            failures.append(
                f"iteration {number} (seed {SEED}), operation {op_name}, kill point {point}: "
                f"{type(exc).__name__}: {exc}\n    reproduce: RAGTUNE_CRASHER_SEED={SEED} "
                f"RAGTUNE_CRASHER_ITERATIONS={number + 1}; logs in {world.root / 'logs'}"
            )
            world.rebuild(random.Random(f"{SEED}:rebuild:{number}"))
    print("kills left the state", ", ".join(f"{k} x{n}" for k, n in sorted(outcomes.items())))
    figures.cases(tried=ITERATIONS, passed=ITERATIONS - len(failures))
    if timings:
        figures.latency_ms(max(timings) * 1000)
    assert not failures, f"{len(failures)} of {ITERATIONS} iterations failed:\n" + "\n".join(
        failures
    )
