"""Dynamic batching: the rows of concurrent requests share backbone batches.

Requests put their validated samples on a queue, with the serving state they
started on. One worker thread takes the first waiting request, then keeps
collecting until it holds ``max_batch_size`` rows or ``max_wait_ms`` have passed
since that first request, and scores the rows with
:func:`unictr_core.modeling.predict.predict_samples` (one backbone pass per batch of at
most ``max_batch_size`` rows, length-sorted, as `unictr predict` does). While it
computes, new requests queue up and form the next batch, so under load batches
fill without waiting. Requests of different serving states are never mixed: each
is scored by the model of the state it started on. Work that is not rows to merge
(ranking the candidates of one user, :meth:`DynamicBatcher.submit_call`) runs on
the same worker thread, alone, so one thread computes at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from unictr_core.data.schema import Sample
from unictr_core.modeling.predict import Predictions, predict_samples

log = logging.getLogger("unictr.serve")


@dataclass
class _Job:
    state: object  # a ServingState (anything with a ``model``)
    samples: Sequence[Sample]
    future: Future
    call: Optional[Callable[[], object]] = None  # run alone instead of scoring ``samples``


class DynamicBatcher:
    def __init__(self, max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 on_batch: Optional[Callable[[int], None]] = None):
        if max_batch_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max wait must be 0 ms or more, got {max_wait_ms}")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch  # called with the size of every backbone batch
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="unictr-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the worker."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, state, samples: Sequence[Sample]) -> "Future[Predictions]":
        future: Future = Future()
        self._queue.put(_Job(state, samples, future))
        return future

    def submit_call(self, call: Callable[[], object]) -> Future:
        """Run ``call()`` on the worker thread, between batches; its result (or exception) in the future."""
        future: Future = Future()
        self._queue.put(_Job(None, (), future, call))
        return future

    # ------------------------------------------------------------------ worker
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, rows = [first], len(first.samples)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return jobs, True
            jobs.append(job)
            rows += len(job.samples)
        return jobs, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            jobs, stopping = self._collect(first)
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # timed-out ones are skipped
            by_state: dict[int, list[_Job]] = {}
            for job in live:
                if job.call is None:
                    by_state.setdefault(id(job.state), []).append(job)
            for group in by_state.values():
                self._score(group)
            for job in live:
                if job.call is not None:
                    self._call(job)

    @staticmethod
    def _call(job: _Job) -> None:
        try:
            result = job.call()
        except Exception as exc:  # noqa: BLE001 - reported to the waiting request
            log.exception("a call on the prediction thread failed")
            job.future.set_exception(exc)
            return
        job.future.set_result(result)

    def _score(self, jobs: list[_Job]) -> None:
        samples = [s for job in jobs for s in job.samples]
        try:
            predictions = predict_samples(jobs[0].state.model, samples, self.max_batch_size)
        except Exception as exc:  # noqa: BLE001 - reported to each waiting request
            log.exception("prediction failed for a batch of %d rows", len(samples))
            for job in jobs:
                job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            full, rest = divmod(len(samples), self.max_batch_size)
            for size in [self.max_batch_size] * full + ([rest] if rest else []):
                self.on_batch(size)
        start = 0
        for job in jobs:
            end = start + len(job.samples)
            job.future.set_result(Predictions(predictions.probs[start:end], predictions.general_probs[start:end],
                                              predictions.zero_shot[start:end]))
            start = end
