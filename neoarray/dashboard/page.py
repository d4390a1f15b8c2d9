"""The dashboard's page: a Bokeh document (tables, plots) that polls two JSON endpoints.

Built once, with Bokeh's JavaScript inline (the page needs no network but its server):
``/api/state`` every ``refresh_s`` fills the tables (nodes, cells, jobs, ingestion),
the header and the commits/s and ingestion-rate plots; ``/api/envelope`` draws the
chosen array's min/max envelope over the visible range, asked again when the view is
zoomed or panned and at every refresh (a view that shows the array's end follows it
as appends arrive).
"""
from __future__ import annotations

from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.events import DocumentReady
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataTable,
    Div,
    NumberFormatter,
    Range1d,
    Select,
    TableColumn,
)
from bokeh.plotting import figure
from bokeh.resources import INLINE

HISTORY_POINTS = 600      # points kept in the rate plots
CELLS_TITLE = "cells (U up to date, O out of date, F feeding, C corrupted)"
BUCKETS = 1200            # envelope buckets asked for the plot's width


def _table(name: str, columns: list[tuple[str, str]], height: int = 180, **formats) -> tuple:
    source = ColumnDataSource({key: [] for key, _ in columns}, name=f"{name}_source")
    cols = [TableColumn(field=key, title=title, formatter=formats[key]) if key in formats
            else TableColumn(field=key, title=title) for key, title in columns]
    return source, DataTable(source=source, columns=cols, height=height, sizing_mode="stretch_width",
                             index_position=None, reorderable=False, name=f"{name}_table")


_JS = """
const S = {buckets: %(buckets)d, refresh: %(refresh_ms)d, history: %(history)d,
           busy: false, array: null, length: 0, muted: false, timer: null, seq: 0};
function fmt(v, d) { return (v === null || v === undefined) ? '-' : Number(v).toFixed(d); }
function bytes(v) {
  if (v === null || v === undefined) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return v.toFixed(1) + ' ' + u[i];
}
async function getJSON(url) {
  const r = await fetch(url, {credentials: 'same-origin'});
  if (!r.ok) throw new Error(url + ': ' + r.status + ' ' + (await r.text()));
  return await r.json();
}
async function drawEnvelope(start, stop) {
  if (!S.array) return;
  let url = 'api/envelope?array=' + encodeURIComponent(S.array) + '&buckets=' + S.buckets;
  if (start !== null) url += '&start=' + Math.max(0, Math.floor(start)) + '&stop=' + Math.ceil(stop);
  const seq = ++S.seq;
  const e = await getJSON(url);
  if (seq !== S.seq) return;      // a newer view (a zoom, another array) was asked meanwhile
  if (start !== null && (xr.start !== start || xr.end !== stop)) return;   // the view moved: asked again
  const following = start === null || stop >= S.length;
  S.length = e.length;
  env.data = {x: e.x, lo: e.min, hi: e.max};
  env_info.text = '<b>' + e.array + '</b>: ' + e.length.toLocaleString() + ' points; showing ['
      + e.start.toLocaleString() + ', ' + e.stop.toLocaleString() + ') in ' + e.x.length + ' buckets';
  if (following && e.length > 0) {
    S.muted = true;
    const lo = start === null ? 0 : Math.max(0, Math.floor(start));
    xr.setv({start: lo, end: e.length});
    S.muted = false;
  }
}
function onRange() {
  if (S.muted) return;
  clearTimeout(S.timer);
  S.timer = setTimeout(() => drawEnvelope(xr.start, xr.end).catch(showError), 150);
}
function showError(err) { errors.text = '<pre style="color:#b00">' + String(err) + '</pre>'; }
async function refresh() {
  if (S.busy) return;
  S.busy = true;
  try {
    const s = await getJSON('api/state');
    const c = s.cluster || {};
    header.text = '<h2>neoarray cluster ' + s.cluster_name + ': ' + (c.state || '?') + '</h2>'
      + '<p>commits/s: <b>' + fmt(s.commits_per_s, 1) + '</b> &middot; replication: <b>'
      + fmt(100 * (c.replication_progress === undefined ? 0 : c.replication_progress), 0)
      + '%%</b> of cells up to date (' + (c.cells_up_to_date || 0) + '/' + (c.cells_total || 0)
      + ') &middot; partitions: ' + (c.partitions || 0) + ', replicas: ' + (c.replicas || 0)
      + ' &middot; last tid: ' + (c.last_tid || '-')
      + (c.attention ? ' &middot; <b style="color:#b00">attention needed</b>' : '') + '</p>';
    const met = {};
    for (const m of s.node_metrics) met[m.node] = m;
    const nodes = (c.nodes || []).map(n => Object.assign({m: met[n.type === 'MASTER' ? 'M' : n.id]}, n));
    nodes_source.data = {
      id: nodes.map(n => n.id), type: nodes.map(n => n.type), address: nodes.map(n => n.address),
      state: nodes.map(n => n.state),
      used: nodes.map(n => n.m && n.m.used_bytes != null ? bytes(n.m.used_bytes) : '-'),
      used_pct: nodes.map(n => n.m && n.m.used_fraction != null ? fmt(100 * n.m.used_fraction, 1) + '%%' : '-'),
      pending: nodes.map(n => n.m && n.m.replication_cells_pending != null ? String(n.m.replication_cells_pending) : '-'),
      repl: nodes.map(n => n.m && n.m.replication_bytes_per_s != null ? bytes(n.m.replication_bytes_per_s) + '/s' : '-'),
    };
    const cells = c.cells || [];
    const st = c.storages || [];
    cells_source.data = {partition: cells.map(r => r.partition),
                         cells: cells.map(r => st.map(k => k + ':' + r[k]).join('  '))};
    jobs_source.data = {job: s.jobs.map(j => j.job || '-'), path: s.jobs.map(j => j.path),
                        state: s.jobs.map(j => j.state),
                        progress: s.jobs.map(j => fmt(100 * j.progress, 1) + '%% (' + j.pieces_done + '/' + j.pieces_total + ')')};
    ingest_source.data = {endpoint: s.ingestion.map(i => i.endpoint), metric: s.ingestion.map(i => i.metric),
                          labels: s.ingestion.map(i => i.labels), value: s.ingestion.map(i => i.value),
                          per_s: s.ingestion.map(i => fmt(i.per_s, 1))};
    const t = s.time_s * 1000;
    if (s.commits_per_s !== null) commits.stream({t: [t], v: [s.commits_per_s]}, S.history);
    let ingested = null;
    for (const i of s.ingestion) if (i.per_s != null && /commit/.test(i.metric)) ingested = (ingested || 0) + i.per_s;
    if (ingested !== null) ingest_rate.stream({t: [t], v: [ingested]}, S.history);
    const names = s.arrays.filter(a => !a.error).map(a => a.name);
    if (JSON.stringify(names) !== JSON.stringify(select.options)) select.options = names;
    if (!S.array && names.length) { S.array = names[0]; select.value = names[0]; }
    errors.text = s.errors.length ? '<pre style="color:#b00">' + s.errors.join('\\n') + '</pre>' : '';
    if (S.array) {
      if (S.length === 0) await drawEnvelope(null, null);
      else await drawEnvelope(xr.start, xr.end);
    }
  } catch (err) { showError(err); }
  finally { S.busy = false; }
}
window.neoarrayDashboard = {refresh: refresh, state: S,
  choose: (name) => { S.array = name; S.length = 0; return drawEnvelope(null, null); },
  zoom: (start, stop) => drawEnvelope(start, stop), onRange: onRange};
refresh();
setInterval(refresh, S.refresh);
"""

_ON_RANGE = "if (window.neoarrayDashboard) window.neoarrayDashboard.onRange();"
_ON_SELECT = "if (window.neoarrayDashboard) window.neoarrayDashboard.choose(cb_obj.value);"


def build(title: str, refresh_s: float) -> str:
    """The page's HTML (self-contained: Bokeh's JavaScript inline)."""
    header = Div(text=f"<h2>{title}</h2>", name="header", sizing_mode="stretch_width")
    errors = Div(text="", name="errors", sizing_mode="stretch_width")
    nodes_source, nodes_table = _table("nodes", [
        ("id", "node"), ("type", "type"), ("address", "address"), ("state", "state"),
        ("used", "storage used"), ("used_pct", "of map"), ("pending", "cells catching up"),
        ("repl", "replication")])
    cells_source, cells_table = _table("cells", [("partition", "partition"), ("cells", CELLS_TITLE)])
    jobs_source, jobs_table = _table("jobs", [("job", "job"), ("path", "state directory"),
                                              ("state", "state"), ("progress", "progress")], height=120)
    ingest_source, ingest_table = _table("ingest", [
        ("endpoint", "endpoint"), ("metric", "metric"), ("labels", "labels"), ("value", "value"),
        ("per_s", "per second")], height=160, value=NumberFormatter(format="0,0.[00]"))

    commits = ColumnDataSource({"t": [], "v": []}, name="commits_source")
    ingest_rate = ColumnDataSource({"t": [], "v": []}, name="ingest_rate_source")
    rates = figure(height=200, x_axis_type="datetime", title="commits/s (master) and ingested records/s",
                   sizing_mode="stretch_width", name="rates", toolbar_location=None)
    rates.line("t", "v", source=commits, legend_label="commits/s", line_width=2)
    rates.line("t", "v", source=ingest_rate, legend_label="records committed/s (ingestion)",
               line_width=2, color="darkorange")
    rates.legend.location = "top_left"

    env = ColumnDataSource({"x": [], "lo": [], "hi": []}, name="envelope")
    xr = Range1d(0, 1, name="envelope_x")
    plot = figure(height=320, x_range=xr, title="array: min/max envelope (drag to pan, wheel to zoom)",
                  sizing_mode="stretch_width", tools="xpan,xwheel_zoom,xbox_zoom,reset",
                  active_scroll="xwheel_zoom", name="envelope_plot")
    plot.varea("x", "lo", "hi", source=env, fill_alpha=0.35)
    plot.line("x", "hi", source=env, line_width=1)
    plot.line("x", "lo", source=env, line_width=1)
    env_info = Div(text="no 1-d array to plot yet", name="envelope_info")
    select = Select(title="array", options=[], name="array_select")
    on_range = CustomJS(code=_ON_RANGE)
    xr.js_on_change("start", on_range)
    xr.js_on_change("end", on_range)
    select.js_on_change("value", CustomJS(code=_ON_SELECT))

    layout = column(header, errors,
                    Div(text="<h3>nodes</h3>"), nodes_table,
                    row(column(Div(text="<h3>partition table</h3>"), cells_table, sizing_mode="stretch_width"),
                        column(Div(text="<h3>jobs</h3>"), jobs_table, sizing_mode="stretch_width"),
                        sizing_mode="stretch_width"),
                    rates, Div(text="<h3>ingestion</h3>"), ingest_table,
                    Div(text="<h3>arrays</h3>"), row(select, env_info), plot,
                    sizing_mode="stretch_width")
    code = _JS % {"buckets": BUCKETS, "refresh_ms": int(refresh_s * 1000), "history": HISTORY_POINTS}
    doc = Document()
    doc.add_root(layout)
    doc.js_on_event(DocumentReady, CustomJS(args={
        "header": header, "errors": errors, "nodes_source": nodes_source, "cells_source": cells_source,
        "jobs_source": jobs_source, "ingest_source": ingest_source, "commits": commits,
        "ingest_rate": ingest_rate, "env": env, "xr": xr, "env_info": env_info, "select": select},
        code=code))
    return file_html(doc, INLINE, title)
