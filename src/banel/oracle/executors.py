"""Where oracle calls run: in this process, a thread pool, a process pool, or a Ray cluster.

An executor runs `fn(chunk)` for every chunk of a batch, at most `workers` at a time, calls `on_send(index)` in
the calling thread just before it dispatches a chunk (the ledger charges the chunk's rows then, so a kill
charges only calls in flight) and reports each outcome to `on_result(index, value, error)` in the calling
thread as soon as it arrives (so the ledger can commit it at once). A call that runs longer than `timeout`
seconds is reported as a `TimeoutError` and abandoned: Ray cancels it and the process pool kills its worker,
but a thread cannot be killed, so a hung call in the inline or thread executor keeps its (daemon) thread
until the process exits. `async def`
oracles are accepted everywhere: inline and thread run them on one event loop with `workers` coroutines
in flight; process and Ray run each call with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from banel.config import OracleConfig
from banel.sequences import Sequences

log = logging.getLogger(__name__)

OnResult = Callable[[int, Any, BaseException | None], None]
"""on_result(chunk_index, value, error): value is fn's return when error is None."""
OnSend = Callable[[int], None]
"""on_send(chunk_index): the chunk's call is about to be dispatched (again, after a pool restart)."""

PROCESS_START_METHOD = "spawn"  # fork is unsafe once torch has started its own threads
WARM_UP_S = 0.2  # a warm-up call this long per worker makes the pool start all its processes at once


class Executor(Protocol):
    """Runs oracle calls on chunks of a batch and reports each outcome as it arrives."""

    def run(
        self, fn: Callable, chunks: Sequence[Sequences], timeout: float, on_result: OnResult, on_send: OnSend
    ) -> None:
        """Call fn on every chunk (timeout 0: none), on_send(i) before dispatching chunk i, and report every
        outcome once, in completion order."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


def call(fn: Callable, chunk: Sequences) -> Any:
    """fn(chunk), awaiting the result if fn is an `async def` oracle."""
    value = fn(chunk)
    if inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


def is_async(fn: Callable) -> bool:
    """Whether fn is an `async def` function (or a callable object whose __call__ is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def run_async(
    fn: Callable, chunks: Sequence[Sequences], workers: int, timeout: float, on_result: OnResult, on_send: OnSend
) -> None:
    """Run an async oracle on one event loop, `workers` calls in flight, each cancelled after `timeout`."""

    async def main() -> None:
        gate = asyncio.Semaphore(max(workers, 1))

        async def one(i: int) -> tuple[int, Any, BaseException | None]:
            async with gate:
                on_send(i)
                try:
                    coro = fn(chunks[i])
                    value = await (asyncio.wait_for(coro, timeout) if timeout else coro)
                    return i, value, None
                except TimeoutError:
                    return i, None, TimeoutError(f"oracle call exceeded the {timeout} s timeout")
                except Exception as err:  # noqa: BLE001 - any oracle failure is retried, then recorded
                    return i, None, err

        for done in asyncio.as_completed([one(i) for i in range(len(chunks))]):
            on_result(*(await done))

    asyncio.run(main())


class InlineExecutor:
    """Calls the oracle in this thread, one chunk after another (a timeout needs a helper thread)."""

    def __init__(self) -> None:
        self._threads = ThreadExecutor(1)

    def run(
        self, fn: Callable, chunks: Sequence[Sequences], timeout: float, on_result: OnResult, on_send: OnSend
    ) -> None:
        """Call fn on every chunk in order."""
        if is_async(fn):
            run_async(fn, chunks, 1, timeout, on_result, on_send)
        elif timeout:
            self._threads.run(fn, chunks, timeout, on_result, on_send)
        else:
            for i, chunk in enumerate(chunks):
                on_send(i)
                try:
                    value = call(fn, chunk)
                except Exception as err:  # noqa: BLE001 - KeyboardInterrupt is not caught: it stops the run
                    on_result(i, None, err)
                else:
                    on_result(i, value, None)

    def close(self) -> None:
        """Nothing to release."""


class ThreadExecutor:
    """Up to `workers` calls in flight, each on its own daemon thread (so a hung call never blocks exit)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"oracle.workers must be >= 1, got {workers}")
        self.workers = workers

    def run(
        self, fn: Callable, chunks: Sequence[Sequences], timeout: float, on_result: OnResult, on_send: OnSend
    ) -> None:
        """Call fn on every chunk with `workers` threads."""
        if is_async(fn):
            run_async(fn, chunks, self.workers, timeout, on_result, on_send)
            return
        results: queue.Queue = queue.Queue()  # one per batch: late answers of abandoned calls are ignored

        def work(i: int) -> None:
            try:
                results.put((i, call(fn, chunks[i]), None))
            except Exception as err:  # noqa: BLE001
                results.put((i, None, err))

        todo = list(range(len(chunks)))[::-1]
        running: dict[int, float] = {}
        while todo or running:
            while todo and len(running) < self.workers:
                i = todo.pop()
                on_send(i)
                running[i] = time.monotonic()
                threading.Thread(target=work, args=(i,), daemon=True, name=f"banel-oracle-{i}").start()
            wait = None if not timeout else max(0.0, min(running.values()) + timeout - time.monotonic())
            try:
                i, value, err = results.get(timeout=wait)
            except queue.Empty:
                pass
            else:
                if running.pop(i, None) is not None:
                    on_result(i, value, err)
                continue
            now = time.monotonic()
            for i, started in list(running.items()):
                if now - started >= timeout:
                    del running[i]
                    log.warning("oracle call on chunk %d exceeded the %s s timeout; abandoned", i, timeout)
                    on_result(i, None, TimeoutError(f"oracle call exceeded the {timeout} s timeout"))

    def close(self) -> None:
        """Nothing to release (abandoned threads are daemons)."""


def _touch(fn: Callable) -> None:
    """Receive fn (so its module is imported) and hold the worker long enough for the pool to start all."""
    time.sleep(WARM_UP_S)


class ProcessExecutor:
    """A pool of `workers` processes (spawned); a call past its timeout gets its pool killed and restarted.

    fn and the chunks must be picklable (a module-level function or a picklable object). Calls in flight
    on the killed pool that had not timed out are re-run without counting an attempt.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"oracle.workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get_pool(self, fn: Callable) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context(PROCESS_START_METHOD)
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx)
            # start every worker and unpickle fn there now (importing torch and fn's module), so that no
            # call's timeout is spent on start-up
            warm_up = [self._pool.submit(_touch, fn) for _ in range(self.workers)]
            cf.wait(warm_up)
            err = next((f.exception() for f in warm_up if f.exception() is not None), None)
            if err is not None:  # before any call is sent: nothing is charged
                self._kill_pool()
                raise RuntimeError(
                    f"oracle.executor='process' could not start its workers ({type(err).__name__}: {err}); the "
                    "reward function must be picklable and importable, and a script that starts a run needs "
                    "`if __name__ == '__main__':` (worker processes are spawned and import the script)"
                ) from err
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool is None:
            return
        # ProcessPoolExecutor cannot cancel a running call before Python 3.14 (terminate_workers)
        for p in list(getattr(self._pool, "_processes", {}).values()):
            p.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def run(
        self, fn: Callable, chunks: Sequence[Sequences], timeout: float, on_result: OnResult, on_send: OnSend
    ) -> None:
        """Call fn on every chunk in the pool."""
        todo = list(range(len(chunks)))[::-1]
        running: dict[cf.Future, tuple[int, float]] = {}
        while todo or running:
            pool = self._get_pool(fn)
            while todo and len(running) < self.workers:
                i = todo.pop()
                on_send(i)
                running[pool.submit(call, fn, chunks[i])] = (i, time.monotonic())
            wait = None
            if timeout:
                wait = max(0.0, min(t for _, t in running.values()) + timeout - time.monotonic())
            done, _ = cf.wait(list(running), timeout=wait, return_when=cf.FIRST_COMPLETED)
            for f in done:
                i, _ = running.pop(f)
                err = f.exception()
                on_result(i, None if err else f.result(), err)
            now = time.monotonic()
            late = [f for f, (_, t) in running.items() if timeout and now - t >= timeout]
            if late:
                for f in late:
                    i, _ = running.pop(f)
                    log.warning("oracle call on chunk %d exceeded the %s s timeout; killing the pool", i, timeout)
                    on_result(i, None, TimeoutError(f"oracle call exceeded the {timeout} s timeout"))
                self._kill_pool()
                todo.extend(i for i, _ in running.values())
                running.clear()

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Ray tasks, `workers` in flight (0: the whole batch); connects to `address` or starts a local Ray."""

    def __init__(self, workers: int, address: str = "") -> None:
        try:
            import ray
        except ImportError as err:  # the optional extra
            raise ImportError("oracle.executor='ray' needs Ray: pip install 'banel[ray]'") from err
        self._ray = ray
        self.workers = workers
        self._owns = False
        if not ray.is_initialized():
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
            self._owns = True
        self._remote = ray.remote(call)

    def run(
        self, fn: Callable, chunks: Sequence[Sequences], timeout: float, on_result: OnResult, on_send: OnSend
    ) -> None:
        """Call fn on every chunk as Ray tasks."""
        ray = self._ray
        fn_ref = ray.put(fn)
        todo = list(range(len(chunks)))[::-1]
        running: dict[Any, tuple[int, float]] = {}
        limit = self.workers or len(chunks)
        while todo or running:
            while todo and len(running) < limit:
                i = todo.pop()
                on_send(i)
                running[self._remote.remote(fn_ref, chunks[i])] = (i, time.monotonic())
            wait = None
            if timeout:
                wait = max(0.0, min(t for _, t in running.values()) + timeout - time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait)
            for ref in ready:
                i, _ = running.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a RayTaskError wraps the oracle's exception
                    on_result(i, None, getattr(err, "cause", None) or err)
                else:
                    on_result(i, value, None)
            now = time.monotonic()
            for ref, (i, t) in list(running.items()):
                if timeout and now - t >= timeout:
                    del running[ref]
                    ray.cancel(ref, force=True)
                    on_result(i, None, TimeoutError(f"oracle call exceeded the {timeout} s timeout"))

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._owns:
            self._ray.shutdown()
            self._owns = False


def make_executor(config: OracleConfig) -> Executor:
    """The executor an OracleConfig asks for."""
    if config.executor == "inline":
        return InlineExecutor()
    if config.executor == "thread":
        return ThreadExecutor(config.workers)
    if config.executor == "process":
        return ProcessExecutor(config.workers)
    if config.executor == "ray":
        return RayExecutor(config.workers, config.ray_address)
    raise ValueError(f"oracle.executor must be inline, thread, process or ray; got {config.executor!r}")


def split(n: int, chunk_size: int, workers: int) -> list[slice]:
    """Slices of a batch of n: chunk_size each, or (chunk_size 0) n split evenly over the workers."""
    if n == 0:
        return []
    size = chunk_size or -(-n // max(workers, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
