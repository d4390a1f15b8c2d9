"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

It opens the page with the admin token, sees every node of a real cluster in the nodes
table, and sees the array's plot change after an append commits.  Without Chromium
(``/usr/bin/chromium``) the test is skipped, except under CI (``CI=true``), where it
fails: ``.ci/run`` installs it.
"""
import os
import re
import shutil
import urllib.parse

import numpy as np
import pytest

import neoarray.array as na
from neoarray.states import NodeType
from tests.conftest import running_cluster

from .dashboard_helpers import append, commit_array, dashboard

CHROMIUM = os.environ.get("NEOARRAY_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


def _chromium():
    if shutil.which(CHROMIUM) is None:
        why = (f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set NEOARRAY_CHROMIUM)")
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    return sync_playwright


@pytest.fixture(scope="module")
def neo(tmp_path_factory):
    yield from running_cluster(tmp_path_factory.mktemp("browser"), storages=2, replicas=1, metrics=True)


ENVELOPE_MAX = ("() => { const d = window.Bokeh && Bokeh.documents[0]; if (!d) return null;"
                " const hi = d.get_model_by_name('envelope').data.hi;"
                " return hi.length ? Math.max(...hi.filter(v => v !== null)) : null; }")


def test_page_shows_nodes_and_the_plot_follows_appends(neo):
    sync_playwright = _chromium()
    commit_array(neo, "live", na.asarray(np.sin(np.arange(10_000) / 100.0), chunks=(1000,)))
    with dashboard(neo.path) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}login?token={urllib.parse.quote(neo.admin_token)}")
            admin = neo.admin()
            admin_nodes = {f"S{n.node_id}" for n in admin.nodes() if n.type is NodeType.STORAGE}
            admin.close()
            assert admin_nodes == {"S1", "S2"}
            for node in sorted(admin_nodes) + ["M0"]:
                cell = page.locator(".slick-cell").filter(has_text=re.compile(f"^{node}$"))
                cell.first.wait_for(state="visible", timeout=WAIT_MS)
            page.wait_for_function(f"() => ({ENVELOPE_MAX})() !== null", timeout=WAIT_MS)
            before = page.evaluate(ENVELOPE_MAX)
            assert 0.99 < before <= 1.0
            page.get_by_text(re.compile(r"live: 10,000 points")).first.wait_for(timeout=WAIT_MS)

            append(neo, "live", np.full(5_000, 42.0))
            page.wait_for_function(f"() => ({ENVELOPE_MAX})() === 42", timeout=WAIT_MS)
            page.get_by_text(re.compile(r"live: 15,000 points")).first.wait_for(timeout=WAIT_MS)
            page.evaluate("() => Bokeh.documents[0].get_model_by_name('envelope_x')"
                          ".setv({start: 2000, end: 3000})")        # a zoom asks that range
            page.get_by_text(re.compile(r"showing \[2,000, 3,000\)")).first.wait_for(timeout=WAIT_MS)
            assert page.evaluate(ENVELOPE_MAX) < 1.0
            assert not errors, errors
        finally:
            browser.close()
