"""A deterministic simulation of the cluster's commit and recovery logic.

``python scripts/simulate.py --schedules N [--seed S]`` runs N schedules (seeds S,
S+1, ...); each is a whole cluster in one process, without threads or sockets: a
master and 0, 1 or 2 standby masters (``run.STANDBYS_WEIGHTS``), 1 to 3 storage nodes (replicas 0 or 1, 1 to 4 partitions) and 1 to 3
clients, driven by a seeded scheduler over a simulated clock
(``simulation/world.py``).  The same seed replays exactly the same schedule.

What is real (the project's code, called as the servers call it):

- master: ``ClusterCore`` (``master/cluster.py``: registration, liveness and loss
  of storage nodes, RECOVERING -> VERIFYING -> RUNNING, the verification and
  reconciliation of what the storage nodes hold, heartbeat verdicts),
  ``CommitCore`` (``master/commit.py``) and ``CommitFlow`` (``master/flow.py``),
  called as ``master/node.py`` and ``master/committing.py`` call them, with the
  simulated clock, their actions carried out as simulated messages;
  ``IdAllocator`` (given the simulated time), ``PartitionTable``, ``CatchUp``,
  ``neoctl tweak``'s table changes and the end of its FEEDING cells
  (``master/table_core.py``, with ``--tweaks``); the
  master's durable state is a dict written by the cores' ``persist`` and reloaded
  on a restart as ``Master._load_state`` reloads it from LMDB;
- standby masters (``master/standby.py``, ``master/__main__.py``): how a master starts
  (``start_role``), which master's ``Role`` answer to follow or step down for
  (``newer_primary``), whose state to keep (``follows_state``, ``state_stamp``), when
  to take over (``must_take_over``, ``may_take_over``) and with which values
  (``take_over``: a new epoch, raised reservations, the copy's stamp); the storages as
  witnesses (rules A and B of ``master/cluster.py``): when the primary has every
  storage record its state's stamp (``must_witness``, with the durable ``version`` of
  every write), a take-over's wait for every member and its check of the stamps the
  storages report at identify and ``recovery_info`` (``ClusterCore.check_stamp``:
  stale, it steps down, marked stale, and restarts as a standby); the storages'
  ``EpochFence`` (``storage_node/fencing.py``) on every order of a master (lock,
  unlock, abort, abort_node, recovery_info), ``record`` for the stamps, and
  ``obeys`` on a heartbeat reply's epoch (verdicts of an older master are ignored and
  the storage moves on to the next master);
- storage: ``TransactionManager`` (``storage_node/manager.py``) over ``Backend``
  on ``MemoryStore``, or on ``LMDBStore`` in a temporary directory (``--store
  lmdb``); catch-up with the functions of ``storage_node/replication.py``
  (``replica_keys``, ``replica_records``, ``missing_keys``, ``apply_records``).

What is simulated about standbys (``simulation/master.py``): the FollowState long poll
(the whole state, as ``StatePublisher``), and the primary's wait for its followers'
acknowledgement of a new reservation or table taken as instantaneous (a follower up,
following or looking for a primary, and not isolated holds it at once; any other is no
longer waited for, as after ``ack_timeout_s``), and so are the ``RecordStamp`` orders
that follow (a storage up and not isolated records the stamp, any other is lost); the primary's ``watch_peers``; a master
that steps down (fenced, or a newer primary seen) is restarted a second later (a
supervisor); storages and clients switch to the next master of the list as the real
ones do (a client also after two unanswered calls: its event stream is taken for
broken); standbys are not shown as MASTER nodes (every node knows the list).

What is simulated: the network (requests and replies as events), the processes
around the cores (``simulation/storage.py``: identify, heartbeats, verdicts,
catch-up passes; ``simulation/master.py``: the requests, the Finish and its Lock
orders, the monitor and the unlocker; ``simulation/cluster.py``: the processes of
``Master.try_start``, ``_verify``, ``_reconcile`` and ``_settle_storage``, with
simulated calls; it holds no decision); the clients (``simulation/client.py``):
counters (read-modify-write) and appends, committed by the rules of
``neoarray/client/commit.py``.  Storage nodes without cells are PENDING, as in the
cluster (no ``neoctl add`` here).  With ``--tweaks`` an operator runs ``neoctl
tweak`` 1 to 4 times during the faults, on the primary, moving cells off a drawn node
or spreading them back (drawn from a generator of their own: the other faults are
those of the same seed without it), with 2 storage nodes or more.

Faults, drawn from the seed during the first ``FAULTS_END_S`` seconds: messages
dropped, delayed (hence reordered) and duplicated (idempotent requests); a node
isolated from all others for a while (a network partition); a client crashed (its
session ends, as when its event stream closes) and restarted with a new one; a storage
node crashed and restarted with its durable state (on the memory store: what was
synced at its last ``sync``, so what was written but not fsynced is lost; on LMDB
what it committed, as ``kill -9``); the master crashed and restarted from its
persisted state (storage nodes, id reservations, partition table, next node id); with
standbys, the primary killed (and restarted later: it asks the other masters and follows
the new primary, or takes a new epoch), a standby killed, the primary isolated for up to
6 s (a standby takes over; the old primary is fenced by the storages that saw the newer
epoch and steps down when it sees the new primary); full disks
(a small ``MemoryStore.bytes_max``) in some schedules.  Every queue is bounded
(``MESSAGES_MAX`` messages in flight).  Then faults stop, every node restarts,
and the schedule runs until the cluster settles (or ``END_S``).  Then each client
commits once more (``ClientActor.probe``: an increment, tried up to
``PROBE_TRIES_MAX`` times; not on a full disk), and the cluster settles again (a
standby that lost sight of the primary during the faults may still take over).

Invariants (``simulation/checker.py``): no OID or TID handed out twice (across
restarts and take-overs); on each storage node the master epoch only grows, no order
of an older epoch than it saw is obeyed, and one master's orders only per epoch;
commits published in strictly increasing tid order; on every tick while the
cluster is RUNNING, every readable cell of a running node holds every commit
published so far that wrote its partition; at the end the cluster is
RUNNING with every cell UP_TO_DATE, replicas are identical by checksum, no
acknowledged commit is lost (readable at its tid), no commit refused to its client
was committed, and the history is serializable (each counter's revisions are 1, 2,
3, ..., the log grows by one entry per revision); and liveness: every client's probe
was acknowledged (locks that outlive their transactions, or a commit queue that
never moves, lose nothing and are caught only there).  The clients that send
stores inside votes (``--stores-in-vote``) also work a while between a read and
their stores, so that increments of one counter overlap and a vote's conflict
check is exercised (a storage that never finds a conflict is caught); they abort as
the real client does (an Abort without an answer is sent again while the session
lives).  With ``--tweaks``, a master that served a tweak's new cells before they
caught up is caught by the check of readable cells.

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
With standby masters (``tests/master/test_cluster_core.py``): two standbys that took
over from one copy got the same epoch and storages obeyed both (seed 33: ``take_over``
now adds a token to an epoch of the next round); a master that had followed the new
primary, restarted while no primary answered, started as primary with the copied epoch
(seed 187: ``start_role`` makes it take a new epoch); a standby that was no longer
waited for (cut off longer than ``ack_timeout_s``) took over with a copy that lacked
what the primary then did: a table without the cell it had marked OUT_OF_DATE (an
acknowledged commit lost, replicas differ: seeds 2775, 3076, 4472, 8164, 9385, 9609),
or an OID reservation more than one block behind (an oid handed out twice: seeds 2814,
3076, 7921, 8328); fixed by the storages as witnesses (rules A and B).  Building them,
it found that a master holding the newer state followed a primary that had taken over
from an older copy (not confirmed yet) and lost that state for good (seed 3076:
``follows_state`` keeps it, a master shown stale waits as a standby), and that the
check of readable cells looked at a standby's cores of an earlier run when no primary
was up (seed 9385: a checker fix).  With stores inside votes: a primary cut off from
every storage acknowledged a commit on a state no storage recorded (seed 201117: rule
A's ``unwitnessed``); a Finish refused while the cluster was RECOVERING left its
transaction undecided, its votes holding their locks while the session lived (seed
401504: ``CommitFlow.refuse_finish``); masters shown stale followed each other's
take-overs from the same old copy, which cleared their marks, and deposed in turn the
primary that held the newest state (seed 401555: ``known_stamp``).
"""
