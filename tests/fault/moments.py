"""When the fault tests kill the master, and what they count.

A master killed at a moment drawn at random mostly lands while the clients are between
transactions.  These helpers aim some of the kills: at a client's commit phase (while
it waits for its vote, or for ``tpc_finish``, the window where a master that dies
leaves a transaction voted or locked on the storages), or at the cluster state of a
master that was just restarted (RECOVERING, VERIFYING: the master is killed again
before it reached RUNNING).  ``Tally`` counts the kills by kind and names the moment
of each master kill, for the report the tests print.
"""
from __future__ import annotations

import collections
import random
import time

from neoarray.admin import AdminClient

MASTER_MOMENTS = ("any", "vote", "finish", "recovery")
AIM_S_MAX = 2.0            # how long to wait for a client to reach the aimed phase
RECOVERY_S_MAX = 5.0       # how long to watch a restarted master before killing it anyway


class Tally:
    """Kills by kind (``master``, ``storage``) and the moments of the master kills."""

    def __init__(self) -> None:
        self.kills: collections.Counter = collections.Counter()
        self.moments: collections.Counter = collections.Counter()

    def killed(self, kind: str, moment: str | None = None) -> None:
        self.kills[kind] += 1
        if moment is not None:
            self.moments[moment] += 1

    def line(self, acknowledged: int) -> str:
        """The summary the tests print (and that long runs add up)."""
        moments = ", ".join(f"{k}={v}" for k, v in sorted(self.moments.items()))
        frozen = (f" frozen: master={self.kills['frozen master']} storage={self.kills['frozen storage']};"
                  if self.kills["frozen master"] or self.kills["frozen storage"] else "")
        return (f"kills: master={self.kills['master']} storage={self.kills['storage']} "
                f"(master kills at: {moments or 'none'});{frozen} commits acknowledged={acknowledged}; lost=0")


def aim_at_phase(phase_of, wanted: str, timeout_s: float = AIM_S_MAX) -> str:
    """Wait until ``phase_of()`` (a client's phase) is ``wanted`` or ``timeout_s``
    passed; the phase it was in (the kill follows at once)."""
    deadline = time.monotonic() + timeout_s
    phase = phase_of()
    while phase != wanted and time.monotonic() < deadline:
        time.sleep(0.0005)
        phase = phase_of()
    return phase


def state_of(admin: AdminClient) -> str:
    """The cluster state the master reports, ``DOWN`` when it does not answer."""
    try:
        return admin.cluster_state()
    except Exception:   # noqa: BLE001 - not listening yet, or going down
        return "DOWN"


def wait_for_state(admin: AdminClient, rng: random.Random, timeout_s: float = RECOVERY_S_MAX) -> str:
    """Watch a master that was just restarted until it reports a state drawn from
    RECOVERING and VERIFYING (VERIFYING is often too short to be seen: then until it
    reports RUNNING), at most ``timeout_s``; the state it reported last."""
    wanted = rng.choice(("RECOVERING", "RECOVERING", "VERIFYING"))
    deadline = time.monotonic() + timeout_s
    delay_s = rng.uniform(0.0, 0.3)       # not always its first moments
    time.sleep(delay_s)
    state = state_of(admin)
    while state not in (wanted, "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.002)
        state = state_of(admin)
    return state


def master_moment(rng: random.Random) -> str:
    """Which moment a master kill aims at (``any``: none, a random moment)."""
    return rng.choice(MASTER_MOMENTS)


def kill_master_at(cluster, tally: Tally, rng: random.Random, moment: str, phase_of, down_s: float,
                   again_s_max: float) -> str:
    """Kill the master at ``moment`` (``vote``, ``finish``: once ``phase_of()``, a
    client's phase, is there, or ``AIM_S_MAX`` passed; None: no client to aim at) and
    start it again after ``down_s``; at ``recovery``, kill the restarted master again
    in the state ``wait_for_state`` draws and start it after up to ``again_s_max``.
    What happened, for the test's log."""
    if moment in ("vote", "finish") and phase_of is not None:
        seen = aim_at_phase(phase_of, moment)
        moment = moment if seen == moment else f"{moment} missed"
    cluster.kill_master()
    tally.killed("master", "any" if moment == "recovery" else moment)
    time.sleep(down_s)
    cluster.start_master()
    if moment != "recovery":
        return moment
    admin = cluster.admin()
    try:
        state = wait_for_state(admin, rng)
    finally:
        admin.close()
    cluster.kill_master()
    tally.killed("master", f"restarted, {state}")
    again_s = round(rng.uniform(0.0, again_s_max), 2)
    time.sleep(again_s)
    cluster.start_master()
    return f"recovery: killed again when {state}, back after {again_s}s"
