"""The dashboard's decisions without I/O: rates, metrics parsing, who may see it."""
import pytest

from neoarray.dashboard import auth, model

TEXT = """# HELP neoarray_ingest_records_committed records committed
# TYPE neoarray_ingest_records_committed_total counter
neoarray_ingest_records_committed_total{input="forward"} 100.0
# HELP neoarray_ingest_lag_seconds lag
# TYPE neoarray_ingest_lag_seconds gauge
neoarray_ingest_lag_seconds 0.5
# HELP other_total other
# TYPE other counter
other_total 7.0
"""


def test_counter_rates_and_resets():
    rates = model.Rates()
    assert rates.rate("k", 100.0, 10.0) is None            # first sample
    assert rates.rate("k", 160.0, 12.0) == 30.0
    assert rates.rate("k", 5.0, 13.0) is None              # went down: the process restarted
    assert rates.rate("k", 15.0, 15.0) == 5.0


def test_rates_keep_a_bounded_number_of_series():
    rates = model.Rates(series_max=3)
    for i in range(10):
        rates.rate(i, 1.0, 1.0)
    assert len(rates._last) == 3


def test_ingestion_view_shows_matching_counters_as_rates():
    rates = model.Rates()
    samples = model.parse_metrics(TEXT)
    first = model.ingestion_view("e", samples, rates, 1.0)
    assert {r["metric"] for r in first} == {"neoarray_ingest_records_committed_total",
                                            "neoarray_ingest_lag_seconds"}
    later = model.parse_metrics(TEXT.replace("100.0", "300.0"))
    rows = {r["metric"]: r for r in model.ingestion_view("e", later, rates, 3.0)}
    assert rows["neoarray_ingest_records_committed_total"]["per_s"] == 100.0
    assert rows["neoarray_ingest_records_committed_total"]["labels"] == "input=forward"
    assert "per_s" not in rows["neoarray_ingest_lag_seconds"]


def test_bad_metrics_text_is_refused():
    with pytest.raises(ValueError, match="not Prometheus metrics text"):
        model.parse_metrics("this is { not metrics\n")


@pytest.mark.parametrize("policy,token,roles,expected", [
    (auth.Policy(None, False), None, None, None),                       # not secured
    (auth.Policy("s3cret", False), None, None, 401),
    (auth.Policy("s3cret", False), "wrong", None, 403),
    (auth.Policy("s3cret", False), "s3cret", None, None),
    (auth.Policy(None, True), None, frozenset({"admin"}), None),
    (auth.Policy(None, True), None, frozenset({"client"}), 403),
    (auth.Policy(None, True), None, frozenset(), 403),
    (auth.Policy(None, True), "any", None, 403),                        # TLS without a token
    (auth.Policy("s3cret", True), "s3cret", frozenset({"reader"}), None),
])
def test_who_may_see_the_dashboard(policy, token, roles, expected):
    refusal = auth.decide(policy, token, roles)
    assert (refusal and refusal[0]) == expected
    if refusal:
        assert "admin token" in refusal[1]


def test_bearer_header():
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("Basic abc") is None
    assert auth.bearer(None) is None


def test_the_command_line_names_what_is_wrong(tmp_path):
    from neoarray.cli import parse_args
    from neoarray.dashboard.cli import make_server
    from neoarray.errors import NeoError
    for argv, message in [(["--dir", str(tmp_path)], "is not a cluster directory"),
                          (["-a", "127.0.0.1:1", "-c", "x", "--bind", "nope"], "give HOST:PORT"),
                          (["-a", "127.0.0.1:1", "-c", "x", "--ingest-pattern", "("],
                           "not a regular expression"),
                          (["-a", "127.0.0.1:1"], "give the master address and cluster name"),
                          (["-a", "127.0.0.1:1", "-c", "x", "--refresh-s", "0"], "0.1 to 3600")]:
        with pytest.raises(NeoError, match=message):
            make_server(parse_args(["dashboard", *argv]))
