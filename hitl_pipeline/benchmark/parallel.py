"""``--jobs N``: the replays of a benchmark in N worker processes, with the same records.

Each replay depends only on its own strategy, budget and repeat, except a baseline's,
which labels as many items per batch as the ``default`` replay of its budget and repeat
did. So the replays no baseline waits for start first, and each baseline starts once its
default has finished. Every worker keeps its replays in the ``ReplayStore`` as soon as
they end, as one process does, and the parent puts the records back in the order of one
replay after another, so the outputs do not depend on N or on which replay ends first.

The workers come from a fork server: a clean process that imported this module once and
forks a worker per slot. A plain fork of the benchmark would copy the parent's threads;
a worker forked after the parent ran a gradient-boosting fit with two OpenMP threads hung
on its first fit (GNU OpenMP's thread pool does not survive a fork), and a spawned worker
would import scikit-learn and ``core`` anew (4 s each on a 2-core machine).

Each worker checks the drift alarms of its own replays and keeps them for its next ones
(``DriftAlarms``). A check is deterministic, so the alarms are those of one process; a
check that replays in different workers share (against the first champion's seed rows,
until a promotion) runs once per worker instead of once: CPU time, but no wall time when
each worker has a core. Checking those in the parent first would run them one after
another before any replay starts, and the checks after a promotion depend on the replay.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING

from hitl_pipeline.benchmark.checkpoint import ReplayStore
from hitl_pipeline.benchmark.replay import (
    Records,
    Replayer,
    Run,
    baseline_picks,
    default_for,
    replay_and_keep,
)

if TYPE_CHECKING:
    from tqdm import tqdm

# what every replay in this worker process shares, set when the worker starts
_worker: dict[str, tuple[Replayer, ReplayStore]] = {}


class ReplayFailed(RuntimeError):
    """A replay raised in a worker; the message names it, the cause is the worker's error
    (with its traceback)."""


def replay_in_pool(
    runs: list[Run], replayer: Replayer, store: ReplayStore, bar: tqdm
) -> dict[Run, Records]:
    """The records of every run: loaded when already finished, else replayed in
    ``replayer.config.jobs`` worker processes; ``bar`` advances per finished replay.

    Raises:
        ReplayFailed: A replay raised; the running ones are stopped, the finished ones
            stay kept in ``store``.
    """
    done = {run: records for run in runs if (records := store.load(*run)) is not None}
    bar.update(len(done) * len(replayer.batches))
    waiting = [run for run in runs if run not in done]
    if not waiting:
        return done
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(
        max_workers=min(replayer.config.jobs, len(waiting)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(replayer, store),
    ) as pool:
        try:
            _replay_waiting(pool, waiting, done, bar, batches_per_replay=len(replayer.batches))
        except BaseException:
            _stop(pool)
            raise
    return done


def _replay_waiting(
    pool: ProcessPoolExecutor,
    waiting: list[Run],
    done: dict[Run, Records],
    bar: tqdm,
    *,
    batches_per_replay: int,
) -> None:
    """Submit each waiting replay once it can start, until all have finished in ``done``.

    The pool starts the replays in the order they are submitted: first those no baseline
    waits for (in the order of ``waiting``), then each baseline after its default.
    """
    running: dict[Future[Records], Run] = {}
    while waiting or running:
        for run in _ready(waiting, running.values()):
            waiting.remove(run)
            running[pool.submit(_replay_in_worker, run, baseline_picks(run, done))] = run
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            run = running.pop(future)
            done[run] = _records(future, run)
            strategy, budget, repeat = run
            bar.set_postfix_str(f"{strategy} {budget:g} #{repeat} done")
            bar.update(batches_per_replay)


def _ready(waiting: list[Run], running: Collection[Run]) -> list[Run]:
    """The waiting replays that can start: all but the baselines whose default is still
    to finish."""
    unfinished = {*waiting, *running}
    return [run for run in waiting if default_for(run) not in unfinished]


def _records(future: Future[Records], run: Run) -> Records:
    """The finished replay's records; its worker's error names it, as the traceback
    from another process does not."""
    try:
        return future.result()
    except Exception as exc:
        strategy, budget, repeat = run
        raise ReplayFailed(
            f"the replay of {strategy} at budget {budget:g}, repeat {repeat} failed in its "
            f"worker process: {exc!r}"
        ) from exc


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the replays not started and end the running ones now, as one process loses
    the replay it was in: ``shutdown`` alone would wait for the running replays and then
    start those already queued to the workers (minutes after Ctrl-C). Python 3.14 has
    ``ProcessPoolExecutor.terminate_workers`` for this; 3.11 reaches the processes."""
    workers = list(pool._processes.values())
    for worker in workers:
        worker.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for worker in workers:
        worker.join()


def _start_worker(replayer: Replayer, store: ReplayStore) -> None:
    """Keep what the replays share for the worker's life, and leave Ctrl-C to the parent:
    a worker interrupted mid-replay would report it and go on to its next replay, so the
    parent stops the workers itself (``_stop``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["shared"] = (replayer, store)


def _replay_in_worker(run: Run, picks_per_batch: list[int] | None) -> Records:
    """One replay in a worker, kept as soon as it ends, with at most ``--threads``
    threads per fit as in one process."""
    from threadpoolctl import threadpool_limits

    replayer, store = _worker["shared"]
    with threadpool_limits(limits=replayer.config.threads):
        return replay_and_keep(replayer, store, run, picks_per_batch)
