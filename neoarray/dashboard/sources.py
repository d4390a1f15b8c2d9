"""The dashboard's I/O: ask the master, scrape metrics, read job directories and arrays.

:class:`Gatherer` does each read with a timeout and a bounded size, and turns what it
read into the page's JSON with :mod:`.model`; a part that fails (a node's metrics
endpoint down, a job directory unreadable) becomes an error line, the rest is shown.
"""
from __future__ import annotations

import glob
import json
import os
import threading
import time
import urllib.error
import urllib.request

import transaction
import ZODB
from ZODB.POSException import ReadOnlyError

from .. import security
from ..admin import AdminClient
from ..array.core import ndarray
from ..array.envelope import envelope
from ..client.storage import NeoStorage
from ..errors import NeoError
from . import model

SCRAPE_BYTES_MAX = 4 << 20      # one metrics page
JOB_DIRS_MAX = 64               # job state directories listed
ARRAYS_LISTED_MAX = 64          # 1-d arrays found at the root
ROOT_KEYS_SCANNED_MAX = 1000
SNAPSHOT_REUSE_S = 0.25         # a cluster reading serves the requests within this time
PLOTTED_KINDS = "biuf"          # dtype kinds of the arrays plotted


def metrics_url(endpoint: str) -> str:
    """``http://HOST:PORT/metrics`` for ``HOST:PORT``; a URL is kept as given."""
    if "://" in endpoint:
        return endpoint
    return f"http://{endpoint}/metrics"


def scrape(url: str, timeout_s: float) -> str:
    """The text of a metrics page; OSError (with the URL) when it cannot be read."""
    if not url.startswith(("http://", "https://")):
        raise OSError(f"cannot scrape {url}: only http:// and https:// endpoints are read")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            data = reply.read(SCRAPE_BYTES_MAX + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OSError(f"cannot scrape {url}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > SCRAPE_BYTES_MAX:
        raise OSError(f"{url} sent more than {SCRAPE_BYTES_MAX} bytes of metrics")
    return data.decode("utf-8", "replace")


def read_job_dir(path: str) -> dict:
    """The progress of the job whose state directory is ``path`` (see neoarray.jobs)."""
    try:
        with open(os.path.join(path, "job.json")) as f:
            data = json.load(f)
        done = sum(1 for name in os.listdir(os.path.join(path, "done")) if name.isdigit())
        return model.job_progress(path, data.get("spec"), len(data.get("pieces", ())), done)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        return model.job_progress(path, None, 0, 0, error=str(exc))


def job_dirs(paths) -> list[str]:
    """Job state directories: each path that is one (holds job.json), and the
    directories just under each path that are."""
    found: list[str] = []
    for path in paths:
        candidates = [path] if os.path.exists(os.path.join(path, "job.json")) else sorted(
            os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(path), "*", "job.json")))
        found.extend(c for c in candidates if c not in found)
    return found[:JOB_DIRS_MAX]


class Gatherer:
    """Everything the page shows, read from a cluster.

    ``master``/``cluster`` and the admin credential (``tls``, ``token``) as neoctl
    takes them; ``cluster_dir`` (optional) to find the nodes' metrics endpoints
    (``DIR/*.metrics``); ``scrape`` more metrics endpoints (the ingestion service);
    ``jobs`` job state directories; ``arrays`` the root names of the arrays to plot
    (None: every 1-d array at the root, up to :data:`ARRAYS_LISTED_MAX`).
    """

    def __init__(self, master: str, cluster: str, *, tls=None, token=None, cluster_dir=None,
                 scrape=(), jobs=(), arrays=None, rpc_timeout_s: float = 5.0,
                 ingest_pattern: str = model.INGEST_PATTERN):
        self.master, self.cluster, self.tls, self.token = master, cluster, tls, token
        self.cluster_dir = cluster_dir
        self.scrape_urls = [metrics_url(u) for u in scrape]
        self.jobs = list(jobs)
        self.arrays = list(arrays) if arrays else None
        self.rpc_timeout_s = rpc_timeout_s
        self.ingest_pattern = ingest_pattern
        self.admin = AdminClient(master, cluster, rpc_timeout_s, tls=tls, admin_token=token)
        self.rates = model.Rates()
        self._lock = threading.Lock()        # Rates and the admin client: one snapshot at a time
        self._db = None
        self._cached: tuple[float, dict] | None = None
        self._db_lock = threading.Lock()

    # -- the cluster -----------------------------------------------------------------
    def node_endpoints(self) -> list[str]:
        if not self.cluster_dir:
            return []
        out = []
        for path in sorted(glob.glob(os.path.join(glob.escape(self.cluster_dir), "*.metrics"))):
            with open(path) as f:
                out.append(metrics_url(f.read(256).strip()))
        return out

    def snapshot(self) -> dict:
        """The page's JSON: cluster, node metrics, ingestion, jobs, arrays, errors.  Pages
        open in several browsers share one reading per :data:`SNAPSHOT_REUSE_S`."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= SNAPSHOT_REUSE_S:
                self._cached = (now, self._snapshot())
            return self._cached[1]

    def _snapshot(self) -> dict:
        errors: list[str] = []
        doc: dict = {"time_s": time.time(), "cluster_name": self.cluster}
        try:
            a = self.admin
            doc["cluster"] = model.cluster_view(a.cluster_state(), a.nodes(),
                                                a.partition_table(), a.ids(), a.master)
        except (NeoError, OSError) as exc:
            errors.append(f"master {self.master}: {exc}")
        nodes, ingestion = [], []
        for url in dict.fromkeys(self.node_endpoints() + self.scrape_urls):
            try:
                samples = model.parse_metrics(scrape(url, self.rpc_timeout_s))
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
                continue
            now = time.monotonic()
            if any(s.name == "neoarray_node_info" for s in samples):
                nodes.append(model.node_metrics(url, samples, self.rates, now))
            ingestion.extend(model.ingestion_view(url, samples, self.rates, now, self.ingest_pattern))
        doc["commits_per_s"] = next((n.get("commits_per_s") for n in nodes if "commits_total" in n), None)
        doc.update(node_metrics=nodes, ingestion=ingestion,
                   jobs=[read_job_dir(p) for p in job_dirs(self.jobs)])
        try:
            doc["arrays"] = self.list_arrays()
        except (NeoError, OSError) as exc:
            errors.append(f"arrays: {exc}")
            doc["arrays"] = []
        doc["errors"] = errors
        return doc

    # -- arrays ----------------------------------------------------------------------
    def db(self):
        with self._db_lock:
            if self._db is None:
                options = self.tls.options() if self.tls else {}
                storage = NeoStorage(self.master, self.cluster, read_only=True,
                                     rpc_timeout_s=max(self.rpc_timeout_s, 10.0),
                                     connect_timeout_s=self.rpc_timeout_s, **options)
                try:
                    self._db = ZODB.DB(storage)
                except ReadOnlyError:       # a new database: no root object yet
                    storage.close()
                    return None
            return self._db

    def _read(self, func):
        db = self.db()
        if db is None:
            return func({})
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        try:
            tm.begin()      # synced: the appends committed before this read are shown
            return func(conn.root())
        finally:
            tm.abort()
            conn.close()

    def list_arrays(self) -> list[dict]:
        """``[{name, length, dtype}]`` of the 1-d arrays shown."""
        def listing(root):
            names = self.arrays or [k for _, k in zip(range(ROOT_KEYS_SCANNED_MAX), root.keys())
                                    if isinstance(k, str)]
            out = []
            for name in names:
                value = root.get(name)
                if isinstance(value, ndarray) and value.ndim == 1 and value.dtype.kind in PLOTTED_KINDS:
                    out.append({"name": name, "length": int(value.shape[0]), "dtype": str(value.dtype)})
                elif self.arrays:
                    out.append({"name": name, "length": 0, "dtype": "",
                                "error": f"no 1-d array of numbers named {name!r} at the root"})
                if len(out) >= ARRAYS_LISTED_MAX:
                    break
            return out
        return self._read(listing)

    def envelope(self, name: str, start: int | None, stop: int | None, buckets: int) -> dict:
        """The envelope JSON of the root array ``name`` over ``[start, stop)`` (clipped to
        its length; the whole array when None); KeyError when there is no such array."""
        if self.arrays is not None and name not in self.arrays:
            raise KeyError(f"the dashboard shows only the arrays {self.arrays}, not {name!r}")

        def compute(root):
            array = root.get(name)
            if not isinstance(array, ndarray) or array.ndim != 1:
                raise KeyError(f"no 1-d array named {name!r} at the root")
            if array.dtype.kind not in PLOTTED_KINDS:
                raise KeyError(f"the array {name!r} holds {array.dtype} items: the dashboard "
                               f"plots bool, integer and float ones")
            length = int(array.shape[0])
            if length == 0:
                return {"array": name, "length": 0, "x": [], "min": [], "max": [], "start": 0, "stop": 0}
            lo = 0 if start is None else min(max(0, int(start)), length - 1)
            hi = length if stop is None else min(max(lo + 1, int(stop)), length)
            starts, mins, maxs = envelope(array, lo, hi, buckets, align=True)
            return model.envelope_doc(name, length, starts, mins, maxs)
        return self._read(compute)

    def close(self) -> None:
        self.admin.close()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def credentials_of_dir(cluster_dir: str) -> tuple:
    """``(master, cluster, tls, token)`` of a local cluster directory (as neoctl --dir)."""
    def text(name):
        with open(os.path.join(cluster_dir, name)) as f:
            return f.read().strip()
    masters = os.path.join(cluster_dir, "masters.address")
    master = text("masters.address" if os.path.exists(masters) else "master.address")
    return (master, text("cluster.name"), security.cluster_tls(cluster_dir, "admin"),
            security.cluster_token(cluster_dir))
