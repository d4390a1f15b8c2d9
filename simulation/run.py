"""One schedule: a whole cluster made from a seed, faults injected, the invariants
checked; and the search for the shortest failing prefix of a failing schedule."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from neoarray.errors import ClusterUnavailable
from neoarray.ids import p64
from neoarray.states import CellState, ClusterState

from .checker import Checker
from .client import PROBE_TRIES_MAX, ClientActor
from .master import PRIMARY, MasterActor
from .storage import StorageActor
from .world import Faults, StaleEpoch, World

FAULTS_END_S = 12.0           # no fault starts later
END_S = 60.0                  # the schedule fails if the cluster has not settled by then
WATCH_S = 0.25
PROBE_S = 20.0                # simulated seconds the clients have to commit once settled (``probe``)
COUNTERS = 3
STANDBYS_WEIGHTS = (0.6, 0.25, 0.15)    # schedules with 0, 1, 2 standby masters
STANDBYS_KEY = "standby masters 11:"
TWEAKS_KEY = "tweaks 1:"      # drawn apart too: with tweaks off, the schedules are those of before
TWEAKS_MAX = 4


@dataclass
class Result:
    seed: int
    violations: list[str]
    steps: int
    digest: int
    shape: str = ""
    trace: list[str] = field(default_factory=list)
    steps_max: int | None = None        # the step after which the faults stopped
    planned: int = 0                    # faults drawn
    skipped: frozenset = frozenset()    # of them, those left out


@dataclass
class Components:
    """The classes a schedule is made of (a test gives faulty ones)."""
    master: type = MasterActor
    storage: type = StorageActor
    client: type = ClientActor
    tweaks: bool = False    # an operator runs ``neoctl tweak`` during the faults (``--tweaks``)


class Schedule:
    def __init__(self, seed: int, store: str = "memory", steps_max: int | None = None,
                 parts: Components | None = None, skipped=frozenset()):
        self.seed, self.steps_max = seed, steps_max
        self.skipped = frozenset(skipped)      # indexes of the planned faults left out
        self.planned = 0
        self.world = w = World(seed)
        parts = parts or Components()
        rng = w.rng
        self.checker = Checker()
        self.checker.now = lambda: w.now
        n_storages = rng.randint(1, 3)
        replicas = rng.randint(0, min(1, n_storages - 1))
        partitions = rng.randint(1, 4)
        self.full = full = rng.random() < 0.15
        bytes_max = rng.randint(20_000, 60_000) if full else 1 << 62
        self.counters = [p64(i) for i in range(1, COUNTERS + 1)]
        self.log_oid = p64(COUNTERS + 1)
        sids = list(range(1, n_storages + 1))
        # drawn apart, so that the schedules without standbys are those of before (the
        # key: the first for which the regression seeds 205, 829, 3436, 16986, 20832 keep none)
        standbys = random.Random(f"{STANDBYS_KEY}{seed}").choices(range(3), STANDBYS_WEIGHTS)[0]
        names = ["M", *(f"M{i}" for i in range(1, standbys + 1))]
        self.masters = [parts.master(w, self.checker, partitions, replicas, sids, name=name,
                                     peers=[n for n in names if n != name]) for name in names]
        self.master = self.masters[0]
        self.master.disk["oid_reserved"] = COUNTERS + 1
        self.storages = {n: parts.storage(w, n, partitions, store, bytes_max) for n in sids}
        self.clients = [parts.client(w, i, self.checker, partitions, self.counters, self.log_oid,
                                     rng.randint(3, 12)) for i in range(1, rng.randint(1, 3) + 1)]
        for actor in [*self.masters, *self.storages.values(), *self.clients]:
            w.actors[actor.name] = actor
        for actor in [*self.storages.values(), *self.clients]:
            actor.masters = list(names)
        for s in self.storages.values():
            s.checker = self.checker
        for m in self.masters:
            m.on_step_down = lambda m: w.at(1.0, self.restart, m)     # (a supervisor)
        self.tweaks = parts.tweaks and n_storages > 1
        self.shape = (f"{n_storages} storage(s), replicas {replicas}, {partitions} partition(s), "
                      f"{len(self.clients)} client(s), {store}{', full disk' if full else ''}"
                      f"{f', {standbys} standby master(s)' if standbys else ''}{', tweaks' if self.tweaks else ''}")
        self.faulting = True

    def log(self, text: str) -> None:
        self.world.log(text)

    # -- faults -----------------------------------------------------------------------------
    def plan_faults(self) -> None:
        """Draw the faults from the seed; schedule those not ``skipped`` (every fault
        is drawn, so that skipping one changes nothing else of the schedule)."""
        w = self.world
        for i in range(w.rng.randint(0, 10)):
            when, fn, args = self._draw_fault()
            self.planned += 1
            if i not in self.skipped:
                w.at(when, fn, *args)
        if self.tweaks:     # from a generator of their own: the faults above are those without
            rng = random.Random(f"{TWEAKS_KEY}{self.seed}")
            for _ in range(rng.randint(1, TWEAKS_MAX)):
                exclude = rng.choice([None, *sorted(self.storages)])
                w.at(rng.random() * FAULTS_END_S, self.tweak, () if exclude is None else (exclude,))

    def tweak(self, exclude) -> None:
        """An operator's ``neoctl tweak`` on the primary (moving cells off ``exclude``)."""
        if not self.faulting:
            return
        try:
            self.primary().tweak(exclude)
        except (ClusterUnavailable, StaleEpoch) as exc:     # neoctl gets it: the primary stepped down
            self.log(f"tweak failed: {exc}")

    def _draw_fault(self):
        rng = self.world.rng
        when = rng.random() * FAULTS_END_S
        kinds = ["storage", "storage", "master", "network", "network", "client", "isolate"]
        if len(self.masters) > 1:
            kinds += ["master", "standby", "isolate primary"]
        kind = rng.choice(kinds)
        down_s = 0.2 + rng.random() * 3.0
        if kind == "storage":
            return when, self.crash, (self.storages[rng.choice(sorted(self.storages))], down_s)
        if kind == "master" and len(self.masters) == 1:
            return when, self.crash, (self.master, down_s)
        if kind == "master":
            return when, self.crash_primary, (down_s + rng.random() * 3.0,)
        if kind == "standby":
            return when, self.crash, (rng.choice(self.masters[1:]), down_s)
        if kind == "client":
            return when, self.crash, (rng.choice(self.clients), down_s)
        if kind == "isolate":
            name = rng.choice(sorted([m.name for m in self.masters] + [f"S{n}" for n in self.storages]))
            return when, self.network, (Faults(isolated=frozenset({name})), down_s)
        if kind == "isolate primary":
            return when, self.isolate_primary, (1.0 + rng.random() * 5.0,)
        faults = Faults(drop=rng.random() * 0.3, duplicate=rng.random() * 0.3, delay_s_max=rng.random() * 0.5)
        return when, self.network, (faults, down_s)

    def crash(self, actor, down_s: float) -> None:
        if not self.faulting or not actor.up:
            return
        self.log(f"crash {actor.name}")
        session = getattr(actor, "nid", None) if actor in self.clients else None
        master = self.world.actors[actor.master] if actor in self.clients else None
        actor.crash()
        if session is not None and master.up:      # its event stream closes
            self.world.at(0.01, self.session_closed, session, master)
        self.world.at(down_s, self.restart, actor)

    def session_closed(self, nid: int, master) -> None:
        if master.up and master.role == PRIMARY:
            master.session_ended(nid)

    def primary(self):
        """The master the cluster obeys: the primary of the newest epoch that is up
        (the first master when none is)."""
        up = [m for m in self.masters if m.up and m.role == PRIMARY]
        return max(up, key=lambda m: m.stub_epoch) if up else self.master

    def crash_primary(self, down_s: float) -> None:
        self.crash(self.primary(), down_s)

    def isolate_primary(self, lasting_s: float) -> None:
        self.network(Faults(isolated=frozenset({self.primary().name})), lasting_s)

    def restart(self, actor) -> None:
        if not actor.up:
            self.log(f"restart {actor.name}")
            actor.start()

    def network(self, faults: Faults, lasting_s: float) -> None:
        if not self.faulting:
            return
        self.log(f"network faults {faults}")
        self.world.faults = faults
        self.world.at(lasting_s, self.network_healed, faults)

    def network_healed(self, faults: Faults) -> None:
        if self.world.faults is faults:
            self.log("network healed")
            self.world.faults = Faults()

    def stop_faults(self) -> None:
        """From now on no fault: the network heals and every node restarts."""
        if not self.faulting:
            return
        self.faulting = False
        self.log("faults stop")
        self.world.faults = Faults()
        for actor in [*self.masters, *self.storages.values(), *self.clients]:
            self.restart(actor)

    # -- the run ------------------------------------------------------------------------------
    def watch(self) -> None:
        primary = self.primary()
        if primary.role == PRIMARY:     # (a standby's cores are those of an earlier run: not the cluster's)
            self.checker.readable_copies_hold(primary, self.storages)
        self.world.at(WATCH_S, self.watch)

    def settled(self) -> bool:
        m = self.primary()
        return (not self.faulting and all(c.finished for c in self.clients) and m.up and m.role == PRIMARY
                and m.cluster_state == ClusterState.RUNNING and not m.commits.queue
                and all(s.up for s in self.storages.values())
                and all(st == CellState.UP_TO_DATE for row in m.pt.rows for st in row.values()))

    def probe(self) -> None:
        """Once settled, every client must still commit (``ClientActor.probe``); not
        on a full disk, where refusing is right.  Then the cluster settles again."""
        if not self.settled() or self.full:
            return
        for client in self.clients:
            client.probe()
        self._step_until(lambda: all(c.probed is not None for c in self.clients), PROBE_S)
        for client in self.clients:
            if not client.probed:
                self.checker.violation(f"{client.name} could not commit once the faults stopped and the "
                                       f"cluster settled ({PROBE_TRIES_MAX} tries; the last: {client.outcome})")
        # what the restarts left scheduled may still move the cluster (a standby that
        # lost sight of the primary takes over): it settles again before the final checks
        self._step_until(self.settled, PROBE_S)

    def _step_until(self, done, seconds: float) -> None:
        """Run the world until ``done()`` or for ``seconds`` (simulated), or until
        nothing is left to run."""
        deadline = self.world.now + seconds
        while self.world.now < deadline and not done():
            if not self.world.step():
                break

    def run(self) -> Result:
        w = self.world
        try:
            for actor in [*self.masters, *self.storages.values(), *self.clients]:
                actor.start()
            self.plan_faults()
            w.at(WATCH_S, self.watch)
            w.at(FAULTS_END_S + 3.0, self.stop_faults)
            while w.now < END_S and not (w.now > FAULTS_END_S and self.settled()):
                if self.steps_max is not None and w.steps >= self.steps_max:
                    self.stop_faults()
                if not w.step():
                    break
            self.probe()
            self.checker.final(self.primary(), self.storages, self.counters, self.log_oid)
            for failure in w.failures[:5]:
                self.checker.violation(f"unexpected exception: {failure}")
        except Exception as exc:    # noqa: BLE001 - a failure of the code under test is a violation
            self.checker.violation(f"exception: {type(exc).__name__}: {exc}")
        finally:
            for s in self.storages.values():
                s.close()
        return Result(self.seed, self.checker.violations, w.steps, w.digest, self.shape, w.trace, self.steps_max,
                      self.planned, self.skipped)


def run_schedule(seed: int, store: str = "memory", steps_max: int | None = None,
                 parts: Components | None = None, skipped=frozenset()) -> Result:
    return Schedule(seed, store, steps_max, parts, skipped).run()


def shortest_prefix(seed: int, steps: int, store: str = "memory", parts: Components | None = None,
                    tries_max: int = 16) -> Result | None:
    """The failing run of ``seed`` whose faults stop after the fewest steps (bisection
    on the step limit), then with the fewest of its faults (each left out in turn,
    kept out when the run still fails); None when none fails."""
    best = _fewest_steps(seed, steps, store, parts, tries_max)
    if best is None:
        return None
    for i in range(best.planned):
        result = run_schedule(seed, store, best.steps_max, parts, best.skipped | {i})
        if result.violations:
            best = result
    return best


def _fewest_steps(seed: int, steps: int, store: str, parts, tries_max: int) -> Result | None:
    lo, hi, best = 0, steps, None
    for _ in range(tries_max):
        if lo >= hi:
            break
        mid = (lo + hi) // 2
        result = run_schedule(seed, store, mid, parts)
        if result.violations:
            hi, best = mid, result
        else:
            lo = mid + 1
    if best is None:
        best = run_schedule(seed, store, hi, parts)
        if not best.violations:
            return None
    return best
