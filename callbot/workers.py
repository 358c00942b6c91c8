"""Recognizer worker processes: recognition never runs on the controller's event loop.

A ``WorkerPool`` starts a few spawned processes (one per core by default), each with its own
engine (``callbot.engines``), and gives each utterance to a free one. Workers are separate
processes, not threads, because an engine holds Python's lock while it decodes, and because a
worker that dies must harm only the utterance it was working on:

- a worker found dead before it was given the utterance is replaced, and the utterance goes to
  another one (the call never notices);
- a worker that dies while recognizing fails that utterance alone with ``WorkerCrashed`` (the
  call hands over to an agent with what was heard before), and is replaced at once; the other
  workers, and the calls they serve, go on.

A worker never outlives its controller: it would keep the controller's output pipe open, and
``ivr run`` starts a new controller only once that pipe closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from callbot.engines import EngineSpec, Transcript, open_engine

log = logging.getLogger(__name__)

START_SECONDS = 120.0  # a worker that has not loaded its model by then is broken
POLL_SECONDS = 0.2  # how often a waiting request checks that its worker still lives


class WorkerError(Exception):
    """A worker could not start (its engine or model did not load)."""


class RecognitionFailed(Exception):
    """This utterance could not be recognized (the engine failed on it)."""


class WorkerCrashed(RecognitionFailed):
    """The worker died while recognizing this utterance."""


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection
    number: int

    @property
    def pid(self) -> int | None:
        return self.process.pid


class WorkerPool:
    """``count`` worker processes running the engine of ``spec``."""

    def __init__(self, spec: EngineSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self.restarts = 0
        self._context = get_context("spawn")  # not fork: the controller has threads and a loop
        self._started = 0
        self._idle: asyncio.Queue[_Worker] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: dict[int, _Worker] = {}
        # One thread per worker carries a request to it and waits for the answer.
        self._threads = ThreadPoolExecutor(count, thread_name_prefix=f"{spec.engine}-worker")
        self._closed = False

    def start(self) -> None:
        """Start every worker and wait until each has loaded its engine (blocking: at the
        controller's start, never during a call). Raises WorkerError if one cannot."""
        workers = [self._spawn() for _ in range(self.count)]
        try:
            for worker in workers:
                self._wait_ready(worker)
        except WorkerError:
            self.close()
            raise
        self._ready = workers

    def idle(self) -> int:
        """How many workers wait for an utterance now."""
        return self._queue().qsize()

    def pids(self) -> list[int]:
        return [pid for worker in self._workers.values() if (pid := worker.pid) is not None]

    async def transcribe(self, language: str, audio: bytes) -> Transcript:
        idle = self._queue()
        for _ in range(self.count + 1):
            worker = await idle.get()
            if not worker.process.is_alive():  # died while idle: nothing was lost
                self._replace(worker)
                continue
            try:
                loop = asyncio.get_running_loop()
                transcript: Transcript = await loop.run_in_executor(
                    self._threads, self._exchange, worker, language, audio)
            except WorkerCrashed:
                self._replace(worker)
                raise
            except RecognitionFailed:
                idle.put_nowait(worker)
                raise
            except BaseException:
                # The call was cancelled (hung up) mid-recognition: the worker finishes the
                # utterance and its answer is read and dropped before it serves another.
                self._threads.submit(self._drain, worker)
                raise
            idle.put_nowait(worker)
            return transcript
        raise WorkerCrashed("every recognizer worker was found dead")

    def close(self) -> None:
        self._closed = True
        for worker in list(self._workers.values()):
            try:
                worker.connection.send(None)
            except (OSError, ValueError):
                pass
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
            worker.connection.close()
        self._workers.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # --- inside the pool --------------------------------------------------------------------

    def _queue(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            self._loop = asyncio.get_running_loop()
            for worker in getattr(self, "_ready", []):
                self._idle.put_nowait(worker)
        return self._idle

    def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        self._started += 1
        process = self._context.Process(target=_serve, args=(theirs, self.spec, os.getpid()),
                                        name=f"recognizer-{self.spec.engine}-{self._started}",
                                        daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(process, ours, self._started)
        self._workers[worker.number] = worker
        return worker

    def _wait_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not worker.connection.poll(POLL_SECONDS):
            if not worker.process.is_alive() or time.monotonic() > deadline:
                raise WorkerError(f"the {self.spec.engine} worker did not start "
                                  f"(exit code {worker.process.exitcode})")
        try:
            status, detail = worker.connection.recv()
        except EOFError as exc:
            raise WorkerError(f"the {self.spec.engine} worker died while starting") from exc
        if status != "ready":
            raise WorkerError(f"{self.spec.engine}: {detail}")

    def _exchange(self, worker: _Worker, language: str, audio: bytes) -> Transcript:
        try:
            worker.connection.send((language, audio))
            while not worker.connection.poll(POLL_SECONDS):
                if not worker.process.is_alive():
                    raise WorkerCrashed(f"recognizer worker {worker.pid} died")
            status, result = worker.connection.recv()
        except (EOFError, OSError) as exc:
            raise WorkerCrashed(f"recognizer worker {worker.pid} died ({exc})") from exc
        if status != "ok":
            raise RecognitionFailed(f"recognizer worker {worker.pid}: {result}")
        assert isinstance(result, Transcript)
        return result

    def _drain(self, worker: _Worker) -> None:
        try:
            if worker.connection.poll(START_SECONDS):
                worker.connection.recv()
        except (EOFError, OSError):
            pass
        if self._loop is not None and not self._closed:
            if worker.process.is_alive():
                self._loop.call_soon_threadsafe(self._queue().put_nowait, worker)
            else:
                self._loop.call_soon_threadsafe(self._replace, worker)

    def _replace(self, dead: _Worker) -> None:
        """A new worker in place of a dead one, started on a thread of its own (loading a
        model takes a moment), free for requests once it is ready."""
        self._workers.pop(dead.number, None)
        dead.connection.close()
        if self._closed:
            return
        self.restarts += 1
        log.warning("recognizer worker %s (%s) died (exit code %s): starting another",
                    dead.pid, self.spec.engine, dead.process.exitcode)
        loop = self._loop

        def restart() -> None:
            for attempt in range(3):
                worker = self._spawn()
                try:
                    self._wait_ready(worker)
                except WorkerError as exc:
                    log.error("recognizer worker restart %d failed: %s", attempt + 1, exc)
                    self._workers.pop(worker.number, None)
                    time.sleep(1.0)
                    continue
                if loop is not None:
                    loop.call_soon_threadsafe(self._queue().put_nowait, worker)
                return

        threading.Thread(target=restart, name="recognizer-restart", daemon=True).start()


# --- Inside a worker process ---------------------------------------------------------------------

def _serve(connection: Connection, spec: EngineSpec, controller: int) -> None:
    _leave_with(controller)
    try:
        engine = open_engine(spec)
    except Exception as exc:  # whatever the engine raises, the controller gets the reason
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", None))
    while True:
        try:
            request: Any = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        language, audio = request
        try:
            connection.send(("ok", engine.transcribe(language, audio)))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


def _leave_with(controller: int) -> None:
    def watch() -> None:
        while os.getppid() == controller:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="controller-watch", daemon=True).start()
