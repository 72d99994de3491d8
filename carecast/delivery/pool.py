"""A pool of sending connections: one thread per connection, each owning its transport.

Composing and signing (CPU) stay in the worker's main thread; the pool's threads spend their time
in TLS writes and waiting for replies, which release the GIL, so several connections keep the
server busy while the next messages are built. Every send first takes a token from the shared rate
limiter, immediately before the SMTP transaction, so the ceiling holds at the server.

A deferred reply (4xx, throttling, no connection) is retried here with exponential backoff, up to
the stream's tries per run; what is still deferred after them goes back to the caller as deferred,
to be tried by a later run. Nothing is skipped. A connection lost in the middle of a transaction is
not retried: the server may have accepted the message, so it is in doubt, like a crash.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from carecast.delivery.transports import Transport
from carecast.mail import SendOutcome
from carecast.mail.rate_limit import RateLimiter
from carecast.streams import Retry

CONNECTION_LOST = "4.4.2"
"""The connection went away mid-transaction: the server may have accepted the message before it did."""


def in_doubt(outcome: SendOutcome) -> bool:
    """Whether the message may have reached the server anyway: never retried, held for an operator."""
    return outcome.status == "deferred" and outcome.enhanced_status == CONNECTION_LOST


@dataclass(frozen=True)
class Attempted:
    outcome: SendOutcome
    tries: int


@dataclass(frozen=True)
class _Job:
    raw_message: bytes
    mail_from: str
    recipient: str
    future: Future


class ConnectionPool:
    def __init__(
        self,
        open_transport: Callable[[], Transport],
        connections: int,
        limiter: RateLimiter | None,
        retry: Retry,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=connections * 4)
        self._limiter = limiter
        self._retry = retry
        self._sleep = sleep
        self._fatal: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, args=(open_transport,), name=f"smtp-{n}", daemon=True)
            for n in range(connections)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, raw_message: bytes, mail_from: str, recipient: str) -> Future:
        """Queue one message; the future gives an ``Attempted`` or the transport's configuration error."""
        future: Future = Future()
        job = _Job(raw_message, mail_from, recipient, future)
        while True:
            if self._fatal is not None:
                raise self._fatal
            try:
                self._jobs.put(job, timeout=0.2)
                return future
            except queue.Full:
                continue

    def close(self, abandon: bool = False) -> None:
        """Stop the threads after the queued messages (or, with ``abandon``, without sending them:
        their futures are cancelled, and they stay reserved, hence in doubt, for the next run)."""
        if abandon:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.future.cancel()
        for thread in self._threads:
            if thread.is_alive():
                self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        self.close(abandon=exc_type is not None)

    def _run(self, open_transport: Callable[[], Transport]) -> None:
        transport: Transport | None = None
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    if transport is None:
                        transport = open_transport()
                    job.future.set_result(self._send(transport, job))
                except Exception as error:  # a misconfigured transport (no TLS, wrong pin): the caller decides
                    job.future.set_exception(error)
                except BaseException as error:  # the process is going down: tell the caller, then stop
                    self._fatal = error
                    job.future.set_exception(error)
                    raise
        finally:
            if transport is not None:
                transport.close()

    def _send(self, transport: Transport, job: _Job) -> Attempted:
        backoff = self._retry.first_backoff_seconds
        for tries in range(1, self._retry.attempts_per_run + 1):
            if self._limiter is not None:
                self._limiter.acquire(job.recipient)
            outcome = transport.send(job.raw_message, job.mail_from, job.recipient)
            if outcome.status != "deferred" or in_doubt(outcome) or tries == self._retry.attempts_per_run:
                return Attempted(outcome, tries)
            self._sleep(backoff)
            backoff *= 2
        raise AssertionError("unreachable: the loop returns on its last try")
