"""A running dashboard over a real cluster, and HTTP requests to it (tests only)."""
from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request

import numpy as np
import transaction
import ZODB

from neoarray.cli import parse_args
from neoarray.dashboard.cli import make_server


@contextlib.contextmanager
def dashboard(cluster_dir: str, *extra: str):
    server = make_server(parse_args(["dashboard", "--dir", cluster_dir, "--bind", "127.0.0.1:0",
                                     "--refresh-s", "0.5", *extra]))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(url: str, token: str | None = None, context: ssl.SSLContext | None = None,
        headers: dict | None = None) -> tuple[int, str]:
    """``(status, body)`` of a GET (errors included: their status and message)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get_json(url: str, token: str | None = None, context=None) -> dict:
    status, body = get(url, token, context)
    assert status == 200, (status, body)
    return json.loads(body)


def commit_array(cluster, name: str, array) -> None:
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()[name] = array
        tm.commit()
        conn.close()
    finally:
        db.close()


def append(cluster, name: str, values) -> None:
    db = ZODB.DB(cluster.open_storage())
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()[name].append(np.asarray(values))
        tm.commit()
        conn.close()
    finally:
        db.close()
