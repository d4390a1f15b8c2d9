"""A deterministic simulation of the cluster's commit and recovery logic.

``python scripts/simulate.py --schedules N [--seed S]`` runs N schedules (seeds S,
S+1, ...); each is a whole cluster in one process, without threads or sockets: a
master, 1 to 3 storage nodes (replicas 0 or 1, 1 to 4 partitions) and 1 to 3
clients, driven by a seeded scheduler over a simulated clock
(``simulation/world.py``).  The same seed replays exactly the same schedule.

What is real (the project's code, called as the servers call it):

- master: ``ClusterCore`` (``master/cluster.py``: registration, liveness and loss
  of storage nodes, RECOVERING -> VERIFYING -> RUNNING, the verification and
  reconciliation of what the storage nodes hold, heartbeat verdicts),
  ``CommitCore`` (``master/commit.py``) and ``CommitFlow`` (``master/flow.py``),
  called as ``master/node.py`` and ``master/committing.py`` call them, with the
  simulated clock, their actions carried out as simulated messages;
  ``IdAllocator`` (given the simulated time), ``PartitionTable``, ``CatchUp``; the
  master's durable state is a dict written by the cores' ``persist`` and reloaded
  on a restart as ``Master._load_state`` reloads it from LMDB;
- storage: ``TransactionManager`` (``storage_node/manager.py``) over ``Backend``
  on ``MemoryStore``, or on ``LMDBStore`` in a temporary directory (``--store
  lmdb``); catch-up with the functions of ``storage_node/replication.py``
  (``replica_keys``, ``replica_records``, ``missing_keys``, ``apply_records``).

What is simulated: the network (requests and replies as events), the processes
around the cores (``simulation/storage.py``: identify, heartbeats, verdicts,
catch-up passes; ``simulation/master.py``: the requests, the Finish and its Lock
orders, the monitor and the unlocker; ``simulation/cluster.py``: the processes of
``Master.try_start``, ``_verify``, ``_reconcile`` and ``_settle_storage``, with
simulated calls; it holds no decision); the clients (``simulation/client.py``):
counters (read-modify-write) and appends, committed by the rules of
``neoarray/client/commit.py``.  Storage nodes without cells are PENDING, as in the
cluster (no ``neoctl add`` here).

Faults, drawn from the seed during the first ``FAULTS_END_S`` seconds: messages
dropped, delayed (hence reordered) and duplicated (idempotent requests); a node
isolated from all others for a while (a network partition); a client crashed (its
session ends, as when its event stream closes) and restarted with a new one; a storage
node crashed and restarted with its durable state (on the memory store: what was
synced at its last ``sync``, so what was written but not fsynced is lost; on LMDB
what it committed, as ``kill -9``); the master crashed and restarted from its
persisted state (storage nodes, id reservations, partition table, next node id); full disks
(a small ``MemoryStore.bytes_max``) in some schedules.  Every queue is bounded
(``MESSAGES_MAX`` messages in flight).  Then faults stop, every node restarts,
and the schedule runs until the cluster settles (or ``END_S``).

Invariants (``simulation/checker.py``): no OID or TID handed out twice;
commits published in strictly increasing tid order; on every tick while the
cluster is RUNNING, every readable cell of a running node holds every commit
published so far that wrote its partition; at the end the cluster is
RUNNING with every cell UP_TO_DATE, replicas are identical by checksum, no
acknowledged commit is lost (readable at its tid), no commit refused to its client
was committed, and the history is serializable (each counter's revisions are 1, 2,
3, ..., the log grows by one entry per revision).

A failing seed is printed with its violations and the shortest failing prefix the
script finds (``run.shortest_prefix``): the schedule replayed with its faults
stopped after a number of steps, bisected on that number, then with each drawn
fault left out in turn (kept out while it still fails); ``--seed S --steps N
--skip-faults 1,3 --trace`` replays it and prints what happened, step by step.
Replays are exact: one seeded ``random.Random`` draws everything, events run in
time order (ties in scheduling order), and the script runs with
``PYTHONHASHSEED=0`` so that sets iterate alike in every run.

Bugs it found in the cores (regression seeds in ``tests/simulation``, unit tests
in ``tests/master/test_flow.py``): a cell that caught up while a commit it missed
was unpublished, or up to the tid of such a commit taken for the last committed
tid at a verification, became UP_TO_DATE without it (an acknowledged commit lost
when its other copies went away); ``final_status`` answered "not committed" for
an earlier master's transaction that was committed and unlocked; a storage node
that joined while a verification was under way was never asked what it held (the
commit queue blocked behind a transaction it had locked); a voter that told its
vote before another voter told it had locked the transaction was never ordered to
lock it (its readable cells missed a published commit).  Once it drove
``ClusterCore``: a vote left on a voter whose Lock failed, of a transaction an
earlier master committed and unlocked, made the new master record it dead, and
``final_status`` called the commit "not committed" (seed 3436; unit test in
``tests/master/test_cluster_core.py``).
"""
