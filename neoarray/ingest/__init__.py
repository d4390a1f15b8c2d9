"""``neoarray ingest``: streamed records (fluentd Forward, MQTT, HTTP) appended to arrays.

Layers: ``mapping`` (the mapping file) and ``core`` (records to rows, deduplication,
when to commit) decide without I/O; ``committer`` writes group commits to the
database; ``forward``, ``mqtt`` and ``http`` are the inputs; ``service`` puts them
together for the command line; ``stats`` holds the figures and their Prometheus
collector.  Durable state (dedup keys, rejects) is in ``state``.
"""
