"""``neoarray dashboard``: a live web page of a cluster and of its arrays.

Layers: :mod:`.model` decides what to show from plain values (no I/O), :mod:`.auth`
who may see it, :mod:`.sources` reads the cluster (the master's Admin service as
neoctl does, the nodes' and other Prometheus endpoints, job state directories, arrays
through :func:`neoarray.array.envelope.envelope`), :mod:`.page` is the Bokeh page and
:mod:`.web` the Tornado server; :mod:`.cli` the command.  Needs the ``dashboard``
extra (``pip install 'neoarray[dashboard]'``: Bokeh).
"""
