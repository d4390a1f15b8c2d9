"""The simulated world: a clock, a seeded scheduler, a network with faults, and
processes written as generators.

One event runs per step, the earliest first (ties in the order they were scheduled).
A process is a generator owned by an actor; it yields what it waits for:

- ``Call(dst, kind, payload, timeout_s)``: a request; resumed with a ``Reply``, or
  None when no reply came within ``timeout_s`` (dropped, or the node is down);
- a list of ``Call``: sent together, resumed with the list of their results;
- ``Sleep(seconds)``.

An actor's ``handle(kind, payload, src)`` answers a request with a value, or with a
generator (a process whose return value is the reply); an exception it raises is
the reply's ``error``, as a refusal on the wire.  A crashed actor's processes end
(its ``epoch`` changes) and messages to it are lost.

Faults of the network (``Faults``): each message may be dropped, delayed (which
reorders it with the others) or, for the kinds that ``IDEMPOTENT`` names (a retry
at the wire), delivered twice; an actor may be isolated (every message to or from
it lost) for a while.  A master's requests carry its epoch (``stub_epoch``), given to
the receiver's ``handle`` as a fourth argument; a ``StaleEpoch`` refusal calls the
master's ``fenced`` (it steps down).  At most ``MESSAGES_MAX`` messages are in flight;
beyond, a message is dropped.
"""
from __future__ import annotations

import heapq
import random
import zlib
from dataclasses import dataclass, field

from neoarray.errors import NeoError, RequestRefused
from neoarray.records import NoObject, NoRevision

MESSAGES_MAX = 2_000          # messages in flight at once (the network's bound)
DELAY_S = 0.001               # the delay of a message without faults
EXPECTED = (NeoError, NoObject, NoRevision)
IDEMPOTENT = frozenset({"lock", "abort", "unlock", "final_status", "load", "heartbeat", "view",
                        "recovery_info", "replica_keys", "replica_records", "abort_node"})


class StaleEpoch(RequestRefused):
    """A storage node refused a master's order of an older epoch (the FAILED_PRECONDITION
    of ``storage_node/fencing.py``)."""


@dataclass(frozen=True)
class Call:
    dst: str
    kind: str
    payload: tuple = ()
    timeout_s: float = 1.0


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Reply:
    value: object = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Faults:
    """Probabilities of the network's faults (0: none) and the delay bound."""
    drop: float = 0.0
    duplicate: float = 0.0
    delay_s_max: float = 0.0
    isolated: frozenset = frozenset()     # actors cut off from every other (a partition)


@dataclass
class _Proc:
    owner: str
    epoch: int
    gen: object
    waiting: dict = field(default_factory=dict)      # call id -> index in results
    results: list | None = None
    single: bool = False
    token: int = 0                                   # which wait a timer belongs to
    on_return: object = None


class World:
    """The scheduler, the clock and the network of one schedule."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.now = 0.0
        self.steps = 0
        self.events: list = []
        self._seq = 0
        self.actors: dict[str, object] = {}
        self.calls: dict[int, _Proc] = {}
        self.faults = Faults()
        self.in_flight = 0
        self.dropped = 0
        self.digest = 0            # a running hash of what happened (replay check)
        self.failures: list[str] = []   # unexpected exceptions of the code under test
        self.refusals: dict[str, int] = {}      # exceptions answered, by type (statistics)
        self.trace: list[str] = []
        self.trace_max = 5_000

    def log(self, text: str) -> None:
        """A line of the trace (the first ``trace_max`` are kept)."""
        self.digest = zlib.crc32(text.encode(), self.digest)
        if len(self.trace) < self.trace_max:
            self.trace.append(f"{self.steps:6d} t={self.now:8.3f} {text}")

    # -- scheduler --------------------------------------------------------------------
    def at(self, delay_s: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self.events, (self.now + delay_s, self._seq, fn, args))

    def step(self) -> bool:
        """Run the earliest event; False when there is none."""
        if not self.events:
            return False
        when, _, fn, args = heapq.heappop(self.events)
        self.now = when
        self.steps += 1
        self.digest = zlib.crc32(f"{when:.6f} {fn.__name__}".encode(), self.digest)
        fn(*args)
        return True

    # -- processes --------------------------------------------------------------------
    def spawn(self, owner: str, gen, on_return=None) -> None:
        actor = self.actors[owner]
        proc = _Proc(owner, actor.epoch, gen, on_return=on_return)
        self._resume(proc, None)

    def _alive(self, proc: _Proc) -> bool:
        actor = self.actors[proc.owner]
        return actor.up and actor.epoch == proc.epoch

    def _resume(self, proc: _Proc, value) -> None:
        if not self._alive(proc):
            return
        try:
            wanted = proc.gen.send(value)
        except StopIteration as stop:
            if proc.on_return is not None:
                proc.on_return(stop.value)
            return
        except Exception as exc:     # a process that fails answers with it
            if not self._alive(proc) and proc.on_return is None:
                return              # its actor stepped down meanwhile (``StaleEpoch``): it ends
            self._check_expected(exc, f"process of {proc.owner}")
            if proc.on_return is not None:
                proc.on_return(exc)
                return
            raise
        self._wait(proc, wanted)

    def _wait(self, proc: _Proc, wanted) -> None:
        proc.token += 1
        if isinstance(wanted, Sleep):
            self.at(wanted.seconds, self._timer, proc, proc.token)
            return
        calls = wanted if isinstance(wanted, list) else [wanted]
        proc.single = not isinstance(wanted, list)
        proc.results = [None] * len(calls)
        proc.waiting = {}
        if not calls:
            self.at(0, self._timer, proc, proc.token)
            return
        for i, call in enumerate(calls):
            self._seq += 1
            cid = self._seq
            proc.waiting[cid] = i
            self.calls[cid] = proc
            self.send(proc.owner, call.dst, call.kind, call.payload, cid)
        self.at(max(c.timeout_s for c in calls), self._timer, proc, proc.token)

    def _timer(self, proc: _Proc, token: int) -> None:
        if token != proc.token:
            return
        for cid in proc.waiting:
            self.calls.pop(cid, None)
        proc.waiting = {}
        self._resume(proc, proc.results[0] if proc.single else proc.results)

    # -- network ----------------------------------------------------------------------
    def send(self, src: str, dst: str, kind: str, payload, cid: int, reply: Reply | None = None) -> None:
        f = self.faults
        copies = 1
        if src in f.isolated or dst in f.isolated or (f.drop and self.rng.random() < f.drop):
            copies = 0
        elif f.duplicate and kind in IDEMPOTENT and self.rng.random() < f.duplicate:
            copies = 2
        # a master's request carries its epoch (``master/fencing.py``'s ``EpochStub``)
        epoch = getattr(self.actors.get(src), "stub_epoch", None) if reply is None else None
        for _ in range(copies):
            if self.in_flight >= MESSAGES_MAX:
                self.dropped += 1
                continue
            self.in_flight += 1
            delay = DELAY_S + (self.rng.random() * f.delay_s_max if f.delay_s_max else 0.0)
            self.at(delay, self._deliver, src, dst, kind, payload, cid, reply, epoch)

    def _deliver(self, src, dst, kind, payload, cid, reply, epoch=None) -> None:
        self.in_flight -= 1
        if reply is not None:
            if isinstance(reply.error, StaleEpoch):     # ``EpochStub``: a refused master steps down
                actor = self.actors.get(dst)    # (a storage or client that got it from a master
                fenced = getattr(actor, "fenced", None)     # stepping down has no stub: an error)
                if fenced is not None and actor.up:
                    fenced(str(reply.error))
            proc = self.calls.get(cid)
            if proc is None or proc.owner != dst or cid not in proc.waiting:
                return
            proc.results[proc.waiting.pop(cid)] = reply
            del self.calls[cid]
            if not proc.waiting:
                proc.token += 1
                self._resume(proc, proc.results[0] if proc.single else proc.results)
            return
        actor = self.actors.get(dst)
        if actor is None or not actor.up:
            return
        try:
            answer = actor.handle(kind, payload, src, epoch) if epoch is not None else actor.handle(kind, payload, src)
        except Exception as exc:     # noqa: BLE001 - a refusal travels back as the reply
            self._check_expected(exc, f"{dst} handling {kind}")
            self.send(dst, src, kind, (), cid, Reply(error=exc))
            return
        if hasattr(answer, "send") and hasattr(answer, "throw"):
            self.spawn(dst, answer, lambda value: self._answer(dst, src, kind, cid, value))
        else:
            self.send(dst, src, kind, (), cid, Reply(answer))

    def _check_expected(self, exc: Exception, where: str) -> None:
        """Refusals (``NeoError``, a missing object) are answers; anything else is a
        failure of the code under test, reported as a violation."""
        name = type(exc).__name__
        self.refusals[name] = self.refusals.get(name, 0) + 1
        if not isinstance(exc, EXPECTED):
            self.failures.append(f"{where}: {type(exc).__name__}: {exc}")

    def _answer(self, dst, src, kind, cid, value) -> None:
        reply = Reply(error=value) if isinstance(value, Exception) else Reply(value)
        self.send(dst, src, kind, (), cid, reply)
