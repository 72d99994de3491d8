"""A send-rate limit shared by every delivery worker process and every SMTP connection in them.

The guarantee
-------------
A configured limit of R per second is a hard ceiling: no 1-second window, starting anywhere, ever
holds more than R messages. A token bucket configured with rate r and burst b does not give that on
its own (it lets b + r through in one second), so the bucket is *derived* from the ceiling:

    emission interval   T = (1 s + jitter_margin) / (R + 1 - b), plus up to 1 ns (strictly above)
    burst tolerance     (b - 1) * T

This is GCRA, the "virtual scheduling" form of a token bucket: one integer per bucket, its
theoretical arrival time (TAT). A grant accounted at time s needs s >= TAT - tolerance and moves
TAT to max(TAT, s) + T. Take any n grants accounted inside a window of length 1 s + jitter_margin
and, of those, the first (i) and last (j) in the order the lock granted them: TAT only ever grows by
at least T per grant, so s_j >= s_i + (n - b) * T, and (n - b) * T <= 1 s + jitter_margin < (R + 1 - b) * T
gives n <= R. The argument does not need grants to be accounted in time order, which is what lets
``acquire`` reserve a future instant (below).

Where the ceiling holds
-----------------------
Exactly, at the accounted instants (``time.monotonic_ns``, which is system-wide on Linux, so all
processes share one clock). A caller returns from ``acquire`` at or after its accounted instant;
the server counts the message some time d later. A constant d shifts every window alike and does
not matter; only its *spread* does. If d varies by at most ``jitter_margin`` across messages
(oversleeping, the GIL, network round trips before the server counts), every 1-second window *at
the server* holds at most R. The default margin is 50 ms, which costs 5 % of throughput: the
sustained rate is (R + 1 - b) / (1 + jitter_margin) per second, R / 1.05 with the default burst of
1. Call ``acquire`` immediately before the SMTP transaction, not before building the message, so
the spread stays small; raise the margin if the server is far away or reply times vary a lot.

Why the burst defaults to 1: it paces messages evenly (one every T), which keeps bunching at window
edges, and so the server-side excess under jitter, as small as possible. A burst of b lets b go out
back to back after an idle spell but lowers the sustained rate to (R + 1 - b) / (1 + margin).

Two buckets, one decision
-------------------------
Each message needs the global bucket and its recipient domain's bucket. Under one lock,
``acquire`` computes when each would allow it. If the domain is free by the time the global bucket
is, it reserves that instant in *both* and sleeps until it (connections queue up in order, no
thundering herd). If the domain is the bottleneck, it takes nothing, sleeps until the domain would
allow, and tries again: a slow domain never holds global capacity that other domains could use.
The global bucket therefore never idles while some connection could send; the price is fairness
under global saturation, where a domain-limited connection competes for global slots again after
its domain frees and may get less than its domain's rate (the total stays at the global rate).

Domains
-------
The domain is the part after the last "@" (so an address or a bare domain both work), lower-cased
with a trailing dot removed; pass the ASCII (punycode) form as in the envelope. Named domains get
their own bucket. All others share ``domain_slots`` hashed buckets under the default limit, keyed by
a stable CRC-32 (not Python's per-process salted ``hash``, which would give every worker a
different slot). Two domains that collide share one budget: stricter than configured, never looser.

Sharing across processes
------------------------
``RateLimiter.create`` allocates the state in an anonymous shared-memory arena
(``multiprocessing.RawArray``) guarded by a process-shared ``Lock``, both from a non-fork context,
so one limiter works with workers started by "spawn", "forkserver" and "fork". Hand it to workers
when they start: as a ``Process`` argument or in a ``Pool``'s ``initargs`` (multiprocessing only
pickles its shared objects while starting a process, not through queues or ``Pool.map``). The arena
has no name, so nothing can leak and there is nothing to unlink: the memory goes away when the last
process holding it exits or drops it. ``close`` just detaches this process's handle.

A process killed (SIGKILL, the OOM killer) during the few microseconds it holds the lock leaves the
lock taken for good; rather than hang every worker, ``acquire`` then raises ``RateLimiterBroken``
after ``LOCK_TIMEOUT_S``, and the delivery run should stop and start over with a fresh limiter.
"""

from __future__ import annotations

import multiprocessing
import time
import zlib
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NS_PER_S = 1_000_000_000
LOCK_TIMEOUT_S = 5.0
"""The lock is held for microseconds; one held this long belonged to a process that died in there."""


class RateLimiterBroken(RuntimeError):
    """A worker died holding the shared lock (e.g. SIGKILL): create a new limiter for new workers."""


class Limit(BaseModel):
    """At most ``per_second`` messages in any 1-second window; a bare integer is accepted too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: int = Field(ge=1)
    burst: int = Field(default=1, ge=1)
    """How many may go out back to back after an idle spell; 1 paces evenly (see the module doc)."""

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"per_second": value}
        return value

    @model_validator(mode="after")
    def _burst_within_ceiling(self) -> Self:
        if self.burst > self.per_second:
            raise ValueError("burst cannot exceed per_second (the 1-second ceiling)")
        return self


def normalise_domain(domain_or_address: str) -> str:
    """The part after the last "@", lower-cased, without surrounding space or a trailing dot."""
    return domain_or_address.rpartition("@")[2].strip().rstrip(".").lower()


class RateLimitConfig(BaseModel):
    """The whole limit: global, per named domain, and a default for every other domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    global_limit: Limit
    domains: dict[str, Limit] = Field(default_factory=dict)
    """Named recipient domains with a budget of their own, e.g. ``{"gmail.com": 100}``."""
    default_domain: Limit | None = None
    """The budget of every other domain; None leaves other domains under the global limit only."""
    domain_slots: int = Field(default=1024, ge=1, le=1 << 20)
    """Hashed buckets for the default limit; more slots mean fewer domains sharing a budget."""
    jitter_margin: float = Field(default=0.05, ge=0.0, le=1.0)
    """Seconds of spread in acquire-to-server delay the ceiling must survive (see the module doc)."""

    @field_validator("domains")
    @classmethod
    def _normalised_names(cls, value: dict[str, Limit]) -> dict[str, Limit]:
        named: dict[str, Limit] = {}
        for name, limit in value.items():
            key = normalise_domain(name)
            if not key or "@" in name:
                raise ValueError("domain keys must be bare domain names")
            if key in named:
                raise ValueError(f"domain {key!r} is configured twice (names are case-insensitive)")
            named[key] = limit
        return named


@dataclass(frozen=True, slots=True)
class Bucket:
    """GCRA parameters in integer nanoseconds, derived from a ceiling (see the module doc)."""

    interval_ns: int
    tolerance_ns: int

    @classmethod
    def for_limit(cls, limit: Limit, jitter_margin: float) -> Bucket:
        window_ns = NS_PER_S + round(jitter_margin * NS_PER_S)
        # Strictly greater than window / (R + 1 - b): the ceiling then also holds for closed windows.
        interval = window_ns // (limit.per_second + 1 - limit.burst) + 1
        return cls(interval_ns=interval, tolerance_ns=(limit.burst - 1) * interval)

    @property
    def sustained_per_second(self) -> float:
        return NS_PER_S / self.interval_ns


class Decision(NamedTuple):
    """``granted``: consume at ``at`` (new TATs given); otherwise retry at ``at``, nothing consumed."""

    granted: bool
    at: int
    global_tat: int
    domain_tat: int


def decide(
    now: int,
    global_tat: int,
    global_bucket: Bucket,
    domain_tat: int,
    domain_bucket: Bucket | None,
    reserve: bool = True,
) -> Decision:
    """The pure arithmetic of one attempt; the caller holds the lock and stores the new TATs.

    With ``reserve`` the grant may lie in the future (the caller sleeps until ``at``), but only when
    the global bucket is the later of the two; without it only an immediate grant is made.
    """
    global_at = max(now, global_tat - global_bucket.tolerance_ns)
    domain_at = now if domain_bucket is None else max(now, domain_tat - domain_bucket.tolerance_ns)
    if domain_at > global_at or (not reserve and global_at > now):
        return Decision(False, max(domain_at, global_at), global_tat, domain_tat)
    at = global_at
    new_domain_tat = domain_tat if domain_bucket is None else max(domain_tat, at) + domain_bucket.interval_ns
    return Decision(True, at, max(global_tat, at) + global_bucket.interval_ns, new_domain_tat)


def _sleep_until(deadline_ns: int) -> None:
    while (remaining := deadline_ns - time.monotonic_ns()) > 0:
        time.sleep(remaining / NS_PER_S)


class RateLimiter:
    """A handle on the shared buckets; pickle it into worker processes as they start.

    Thread-safe: every connection thread of a worker may share one handle.
    """

    def __init__(self, config: RateLimitConfig, state: Any, lock: Any) -> None:
        """Use ``create``; this attaches to state that already exists."""
        self.config = config
        self._state = state
        self._lock = lock
        self._global = Bucket.for_limit(config.global_limit, config.jitter_margin)
        self._named = {
            name: (1 + i, Bucket.for_limit(limit, config.jitter_margin))
            for i, (name, limit) in enumerate(config.domains.items())
        }
        self._default = Bucket.for_limit(config.default_domain, config.jitter_margin) if config.default_domain else None
        self._first_slot = 1 + len(config.domains)

    @classmethod
    def create(cls, config: RateLimitConfig, mp_context: BaseContext | None = None) -> RateLimiter:
        """Allocate fresh shared state.

        ``mp_context`` must not be the "fork" context (its lock could not be handed to spawned
        workers); the default, "spawn", makes a limiter that any start method can use.
        """
        context = mp_context or multiprocessing.get_context("spawn")
        if context.get_start_method() == "fork":
            raise ValueError("create the limiter from a spawn or forkserver context; it then works with fork too")
        size = 1 + len(config.domains) + (config.domain_slots if config.default_domain else 0)
        return cls(config, context.RawArray("q", size), context.Lock())

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "state": self._state, "lock": self._lock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["state"], state["lock"])

    def slot_for(self, domain: str) -> tuple[int, Bucket] | None:
        """The shared-state index and bucket for a domain (None: only the global limit applies)."""
        name = normalise_domain(domain)
        named = self._named.get(name)
        if named is not None:
            return named
        if self._default is None:
            return None
        slot = zlib.crc32(name.encode("utf-8", "surrogatepass")) % self.config.domain_slots
        return self._first_slot + slot, self._default

    def _attempt(self, target: tuple[int, Bucket] | None, reserve: bool) -> Decision:
        state = self._state
        if state is None:
            raise RuntimeError("this rate limiter handle is closed")
        index, bucket = target if target is not None else (0, None)
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise RateLimiterBroken(f"the shared lock was held for over {LOCK_TIMEOUT_S} s")
        try:
            decision = decide(time.monotonic_ns(), state[0], self._global, state[index], bucket, reserve)
            if decision.granted:
                state[0] = decision.global_tat
                if bucket is not None:
                    state[index] = decision.domain_tat
        finally:
            self._lock.release()
        return decision

    def acquire(self, domain: str) -> int:
        """Block until one message to ``domain`` (a domain or an address) may be sent, and count it.

        Sleeps until the computed instant rather than polling. Returns at or after the instant
        the message was counted at, never before, and returns that instant (``time.monotonic_ns``)
        so a caller can see how late it got there.
        """
        target = self.slot_for(domain)
        while True:
            decision = self._attempt(target, reserve=True)
            _sleep_until(decision.at)
            if decision.granted:
                return decision.at

    def try_acquire(self, domain: str) -> bool:
        """Count one message now if both buckets allow it now; never blocks, never reserves."""
        return self._attempt(self.slot_for(domain), reserve=False).granted

    def close(self) -> None:
        """Detach this handle (idempotent); the shared arena is freed with its last holder."""
        self._state = None
        self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
