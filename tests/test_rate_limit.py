"""The shared send-rate limit: the ceiling holds in every 1-second window, across processes too."""

from __future__ import annotations

import heapq
import multiprocessing
import pickle
import queue
import time
from bisect import bisect_left, bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from carecast.mail import rate_limit
from carecast.mail.rate_limit import (
    NS_PER_S,
    Bucket,
    Limit,
    RateLimitConfig,
    RateLimiter,
    RateLimiterBroken,
    decide,
    normalise_domain,
)


def max_in_window(times_ns: list[int], window_ns: int = NS_PER_S, closed: bool = False) -> int:
    """The most events in any window of that length (half-open unless ``closed``), any start."""
    times = sorted(times_ns)
    count_end = bisect_right if closed else bisect_left
    return max((count_end(times, t + window_ns) - i for i, t in enumerate(times)), default=0)


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0, NS_PER_S]) == 1
    assert max_in_window([0, NS_PER_S], closed=True) == 2
    assert max_in_window([5, 0, 3, NS_PER_S - 1, 2 * NS_PER_S]) == 4


# --- configuration --------------------------------------------------------------------------------


def test_config_accepts_bare_integers_and_normalises_domain_names() -> None:
    config = RateLimitConfig(global_limit=200, domains={"GMail.com.": 100, "yahoo.com": {"per_second": 50, "burst": 5}})
    assert config.global_limit == Limit(per_second=200, burst=1)
    assert config.domains == {"gmail.com": Limit(per_second=100), "yahoo.com": Limit(per_second=50, burst=5)}


@pytest.mark.parametrize(
    "raw",
    [
        {"global_limit": 0},
        {"global_limit": {"per_second": 5, "burst": 6}},
        {"global_limit": 10, "domains": {"gmail.com": 5, "GMAIL.COM": 5}},
        {"global_limit": 10, "domains": {"someone@gmail.com": 5}},
        {"global_limit": 10, "jitter_margin": -0.1},
    ],
)
def test_config_rejects(raw: dict) -> None:
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(raw)


def test_normalise_domain() -> None:
    assert normalise_domain("Some.One@Example.ORG.") == "example.org"
    assert normalise_domain(" example.org ") == "example.org"
    assert normalise_domain('"a@b"@example.org') == "example.org"


def test_bucket_is_derived_from_the_ceiling() -> None:
    bucket = Bucket.for_limit(Limit(per_second=200), jitter_margin=0.05)
    assert bucket.tolerance_ns == 0
    assert 190 < bucket.sustained_per_second < 190.5  # 200 / 1.05
    assert Bucket.for_limit(Limit(per_second=200), 0.0).sustained_per_second < 200
    wide = Bucket.for_limit(Limit(per_second=10, burst=4), 0.0)
    assert wide.tolerance_ns == 3 * wide.interval_ns
    assert 6.99 < wide.sustained_per_second < 7  # R + 1 - b


# --- the pure arithmetic, under a fake clock --------------------------------------------------------


def _saturate(bucket: Bucket, seconds: int) -> list[int]:
    """Grant times for one client that asks again the instant it is allowed to."""
    now, tat, grants = 0, 0, []
    while now < seconds * NS_PER_S:
        decision = decide(now, tat, bucket, 0, None)
        assert decision.granted
        grants.append(decision.at)
        now, tat = decision.at, decision.global_tat
    return grants


@pytest.mark.parametrize(("per_second", "burst"), [(1, 1), (7, 1), (200, 1), (50, 10), (10, 10)])
def test_a_saturated_bucket_reaches_its_ceiling_and_no_more(per_second: int, burst: int) -> None:
    limit = Limit(per_second=per_second, burst=burst)
    exact = _saturate(Bucket.for_limit(limit, jitter_margin=0.0), seconds=10)
    assert max_in_window(exact, closed=True) == per_second  # reached, never exceeded
    assert exact[:burst] == [0] * burst and exact[burst] > 0  # the burst goes out at once

    bucket = Bucket.for_limit(limit, jitter_margin=0.05)
    with_margin = _saturate(bucket, seconds=10)
    assert max_in_window(with_margin, closed=True) <= per_second
    assert len(with_margin) >= int(10 * bucket.sustained_per_second)


def test_a_busy_domain_takes_nothing_from_the_global_bucket() -> None:
    global_bucket = Bucket.for_limit(Limit(per_second=100), 0.0)
    domain_bucket = Bucket.for_limit(Limit(per_second=1), 0.0)
    decision = decide(10, 0, global_bucket, 10 + 5 * NS_PER_S, domain_bucket)
    assert not decision.granted
    assert decision.at == 10 + 5 * NS_PER_S
    assert (decision.global_tat, decision.domain_tat) == (0, 10 + 5 * NS_PER_S)


def test_a_busy_global_bucket_is_reserved_in_both() -> None:
    global_bucket = Bucket.for_limit(Limit(per_second=100), 0.0)
    domain_bucket = Bucket.for_limit(Limit(per_second=10), 0.0)
    decision = decide(0, 7_000_000, global_bucket, 0, domain_bucket)
    assert decision.granted and decision.at == 7_000_000
    assert decision.global_tat == 7_000_000 + global_bucket.interval_ns
    assert decision.domain_tat == 7_000_000 + domain_bucket.interval_ns
    assert not decide(0, 7_000_000, global_bucket, 0, domain_bucket, reserve=False).granted


limits = st.builds(
    lambda per_second, burst_fraction: Limit(per_second=per_second, burst=max(1, round(per_second * burst_fraction))),
    st.integers(1, 40),
    st.sampled_from([0.0, 0.0, 0.2, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(
    global_limit=limits,
    domain_limits=st.lists(st.one_of(st.none(), limits), min_size=1, max_size=4),
    jitter_margin=st.sampled_from([0.0, 0.01, 0.05, 0.25]),
    clients=st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400_000_000)), min_size=1, max_size=30),
        min_size=1,
        max_size=8,
    ),
    rng=st.randoms(use_true_random=False),
)
def test_no_window_ever_exceeds_a_limit(global_limit, domain_limits, jitter_margin, clients, rng) -> None:
    """Concurrent clients (a discrete-event simulation) asking for random domains at random times.

    Each client sleeps until the instant ``decide`` names and oversleeps by up to the jitter margin,
    as a real thread would; its "server" timestamp is its wake-up time. Domains may share a bucket
    (a hash collision). Every window holds at most the limit, both at the accounted instants and at
    the wake-up times, and every request is eventually granted.
    """
    global_bucket = Bucket.for_limit(global_limit, jitter_margin)
    buckets = [None if limit is None else Bucket.for_limit(limit, jitter_margin) for limit in domain_limits]
    domain_to_bucket = [rng.randrange(len(buckets)) for _ in range(4)]
    tats = [0] * (len(buckets) + 1)  # index 0: global
    accounted: dict[int, list[int]] = {-1: []}
    observed: dict[int, list[int]] = {-1: []}
    margin_ns = round(jitter_margin * NS_PER_S)

    pending = [(think, n, n, 0) for n, ((_domain, think), *_rest) in enumerate(clients)]
    heapq.heapify(pending)
    steps = 0
    while pending:
        now, _tie, client, position = heapq.heappop(pending)
        domain, _think = clients[client][position]
        b = domain_to_bucket[domain]
        bucket = buckets[b]
        decision = decide(now, tats[0], global_bucket, tats[b + 1], bucket)
        woke = decision.at + rng.randint(0, margin_ns)
        steps += 1
        assert steps < 100_000, "requests starve"
        if not decision.granted:
            heapq.heappush(pending, (woke, steps, client, position))
            continue
        tats[0], tats[b + 1] = decision.global_tat, decision.domain_tat
        for key in (-1, b) if bucket is not None else (-1,):
            accounted.setdefault(key, []).append(decision.at)
            observed.setdefault(key, []).append(woke)
        if position + 1 < len(clients[client]):
            think = clients[client][position + 1][1]
            heapq.heappush(pending, (woke + think, steps, client, position + 1))

    assert len(accounted[-1]) == sum(len(requests) for requests in clients)
    for key, times in accounted.items():
        ceiling = global_limit.per_second if key == -1 else domain_limits[key].per_second
        assert max_in_window(times, closed=True) <= ceiling
        assert max_in_window(observed[key]) <= ceiling


# --- the shared limiter, in one process ---------------------------------------------------------------


def test_domains_match_case_insensitively_on_the_part_after_the_last_at() -> None:
    config = RateLimitConfig(global_limit={"per_second": 1000, "burst": 10}, domains={"gmail.com": 1})
    limiter = RateLimiter.create(config)
    assert limiter.try_acquire("Someone@GMail.Com")
    assert not limiter.try_acquire("gmail.com.")
    assert limiter.try_acquire("yahoo.com")  # no default limit: only the global one applies
    assert limiter.try_acquire("yahoo.com")


def test_hashed_domains_that_collide_share_one_budget() -> None:
    limiter = RateLimiter.create(RateLimitConfig(global_limit=1000, default_domain=1, domain_slots=1))
    assert limiter.slot_for("a.example") == limiter.slot_for("b.example")
    assert limiter.try_acquire("a.example")
    assert not limiter.try_acquire("b.example")


def test_hashed_slots_are_stable_across_processes() -> None:
    limiter = RateLimiter.create(RateLimitConfig(global_limit=1000, default_domain=5, domain_slots=4096))
    # crc32("example.org") % 4096: fixed, unlike the salted built-in hash().
    assert limiter.slot_for("X@Example.org") == (1 + 0x2DF, limiter.slot_for("example.org")[1])


def test_a_throttled_domain_leaves_the_global_budget_to_others() -> None:
    config = RateLimitConfig(global_limit={"per_second": 5, "burst": 5}, domains={"slow.example": 1})
    limiter = RateLimiter.create(config)
    assert limiter.try_acquire("slow.example")
    assert not limiter.try_acquire("slow.example")
    assert [limiter.try_acquire("fast.example") for _ in range(5)] == [True] * 4 + [False]


def test_acquire_blocks_until_allowed() -> None:
    limiter = RateLimiter.create(RateLimitConfig(global_limit=1000, domains={"slow.example": 20}, jitter_margin=0))
    started = time.monotonic()
    for _ in range(4):
        limiter.acquire("slow.example")
    assert time.monotonic() - started >= 3 * Bucket.for_limit(Limit(per_second=20), 0).interval_ns / NS_PER_S


def test_a_closed_handle_refuses_and_plain_pickle_is_refused() -> None:
    limiter = RateLimiter.create(RateLimitConfig(global_limit=10))
    with pytest.raises((RuntimeError, pickle.PicklingError)):
        pickle.dumps(limiter)  # only while starting a worker process
    limiter.close()
    limiter.close()
    with pytest.raises(RuntimeError, match="closed"):
        limiter.acquire("example.org")


def test_a_lock_left_taken_by_a_dead_worker_raises_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "LOCK_TIMEOUT_S", 0.05)
    limiter = RateLimiter.create(RateLimitConfig(global_limit=10))
    limiter._lock.acquire()  # as a worker SIGKILLed inside the critical section would leave it
    with pytest.raises(RateLimiterBroken):
        limiter.acquire("example.org")


def test_create_refuses_the_fork_context() -> None:
    with pytest.raises(ValueError, match="spawn or forkserver"):
        RateLimiter.create(RateLimitConfig(global_limit=10), multiprocessing.get_context("fork"))


# --- the shared limiter, across processes -----------------------------------------------------------

# Worker code runs from source (``exec`` is the process target) so that a spawned child imports
# carecast only, not this module with pytest and hypothesis: on a busy machine that import alone
# takes seconds per child.
_TAKE_ONE = "results.put(limiter.try_acquire('example.org'))"

_SEND_FOR = """
import threading
import time

from carecast.mail.rate_limit import normalise_domain


def send_loop(limiter, domain, deadline, stamps):
    while time.monotonic_ns() < deadline:
        counted_at = limiter.acquire(domain)
        stamps.append((counted_at, time.monotonic_ns()))


barrier.wait()
deadline = time.monotonic_ns() + run_ns
stamps = {(name, normalise_domain(domain)): [] for name, _limiter, domain in jobs}
threads = [
    threading.Thread(target=send_loop, args=(limiter, domain, deadline, stamps[name, normalise_domain(domain)]))
    for name, limiter, domain in jobs
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
results.put(stamps)
"""


def _collect(workers: list, results) -> list:
    """One result per worker, failing fast (not at the timeout) when a worker dies."""
    collected = []
    deadline = time.monotonic() + 60
    while len(collected) < len(workers):
        try:
            collected.append(results.get(timeout=0.2))
        except queue.Empty:
            dead = [worker.exitcode for worker in workers if worker.exitcode not in (None, 0)]
            assert not dead, f"a worker failed with exit code {dead}"
            assert time.monotonic() < deadline, "workers did not report"
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    return collected


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_of_every_start_method_share_the_buckets(method: str) -> None:
    context = multiprocessing.get_context(method)
    limiter = RateLimiter.create(RateLimitConfig(global_limit=1, jitter_margin=0))
    results = context.Queue()
    worker = context.Process(target=exec, args=(_TAKE_ONE, {"limiter": limiter, "results": results}))
    worker.start()
    assert _collect([worker], results) == [True]
    assert not limiter.try_acquire("example.org")  # the child's message used this second's budget


def test_spawned_workers_never_exceed_a_limit_and_reach_it() -> None:
    """2 spawned processes with 5 connection threads each, on two limiters, for 1.6 s.

    ``saturated``: 2 threads per process on one global limit of 200/s. ``domains``: a loose global
    limit and three domains (one named, two under the hashed default), each with one thread in
    each process, spelled differently. Windows are checked at the instants ``acquire`` counted
    (exact) and at the timestamps taken when it returned (what a server would see, up to the
    jitter margin).
    """
    context = multiprocessing.get_context("spawn")
    saturated = RateLimiter.create(RateLimitConfig(global_limit=200), context)
    domain_config = RateLimitConfig(global_limit=1000, domains={"a.example": 60}, default_domain=40, domain_slots=64)
    domains = RateLimiter.create(domain_config, context)
    assert domains.slot_for("b.example") != domains.slot_for("c.example")
    spellings = [["a.example", "Someone@B.Example", "c.example."], ["x@A.EXAMPLE", "b.example", "Other@c.example"]]

    barrier = context.Barrier(2)
    results = context.Queue()
    workers = []
    for p in range(2):
        jobs = [("saturated", saturated, f"d{p}-{t}.example") for t in range(2)]
        jobs += [("domains", domains, spelling) for spelling in spellings[p]]
        env = {"jobs": jobs, "barrier": barrier, "results": results, "run_ns": 1_600_000_000}
        workers.append(context.Process(target=exec, args=(_SEND_FOR, env)))
    for worker in workers:
        worker.start()
    merged: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for stamps in _collect(workers, results):
        for key, pairs in stamps.items():
            merged.setdefault(key, []).extend(pairs)

    def pairs_of(name: str, domain: str | None = None) -> list[tuple[int, int]]:
        return [pair for key, pairs in merged.items() if key[0] == name and domain in (None, key[1]) for pair in pairs]

    ceilings = {("saturated", None): 200, ("domains", "a.example"): 60}
    ceilings |= {("domains", "b.example"): 40, ("domains", "c.example"): 40, ("domains", None): 1000}
    for (name, domain), ceiling in ceilings.items():
        counted, returned = zip(*pairs_of(name, domain), strict=True)
        late_ms = max(r - c for c, r in zip(counted, returned, strict=True)) / 1e6
        assert max_in_window(list(counted)) <= ceiling
        busiest = max_in_window(list(returned))
        assert busiest <= ceiling, f"{name}/{domain}: {busiest} in 1 s; returned up to {late_ms:.1f} ms late"
        if domain is not None or name == "saturated":
            assert busiest >= 0.8 * ceiling, f"{name}/{domain}: only {busiest} in the busiest second"
