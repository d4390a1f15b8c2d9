"""``--exit-with-parent PID``: a node process that stops when the process that started it ends.

``LocalCluster`` (``neoarray.open(path)``, ``neoarray cluster up``) owns its nodes: they
must not outlive it, however it ends (``db.close()`` forgotten, an uncaught exception,
``os._exit``, SIGTERM, SIGKILL).  A node started with this flag watches its parent:
once ``os.getppid()`` is no longer ``PID`` (the parent ended and the node was handed
to init or a subreaper), the node sends itself SIGTERM, which runs its usual clean
stop; if it is still alive ``stop_grace_s`` later, it exits at once.

Why polling ``getppid`` rather than ``prctl(PR_SET_PDEATHSIG)``: the death signal
fires when the *thread* that forked the node ends, and ``LocalCluster`` may be driven
from any thread (a test's worker, a server's request thread) that ends long before
its process; the parent pid changes only when the whole process is gone.  The check
is also the same on every POSIX system, and it sees a parent that died before the
flag was read (the first check runs at once).  A node started by hand, without the
flag, is independent of whoever started it.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

PARENT_POLL_S = 0.2         # how often the parent pid is checked
STOP_GRACE_S = 20.0         # SIGTERM's clean stop, then an immediate exit

log = logging.getLogger("neoarray.lifeline")


def add_argument(parser) -> None:
    parser.add_argument("--exit-with-parent", type=int, metavar="PID",
                        help="stop when process PID, the one that started this node, ends "
                             "(used by neoarray.open and neoarray cluster up; a node started "
                             "by hand runs on its own)")


def exit_with_parent(pid: int | None, poll_s: float = PARENT_POLL_S, stop_grace_s: float = STOP_GRACE_S) -> None:
    """Stop this process (SIGTERM to itself) once process ``pid`` is no longer its parent."""
    if not pid:
        return
    threading.Thread(target=_watch, args=(pid, poll_s, stop_grace_s), daemon=True, name="parent-watch").start()


def _watch(pid: int, poll_s: float, stop_grace_s: float) -> None:
    while os.getppid() == pid:
        time.sleep(poll_s)
    log.warning("the process that started this node (pid %d) has ended: stopping", pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(stop_grace_s)
    log.error("still running %.0f s after the parent ended: exiting now", stop_grace_s)
    os._exit(1)
