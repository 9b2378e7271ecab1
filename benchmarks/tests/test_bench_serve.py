"""`coachrec bench serve --wrk`: reading wrk's report (the run itself needs Debian's wrk and a server)."""

from __future__ import annotations

import pytest

from coachrec_bench.serve import parse_wrk

# wrk 4.1 `--latency` output as printed on this machine (one run of the bench, trimmed)
WRK_OUT = """Running 8s test @ http://127.0.0.1:35009
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   260.17ms  120.33ms   1.02s    70.21%
    Req/Sec    57.89     20.11   101.00     65.00%
  Latency Distribution
     50%  260.17ms
     75%  340.02ms
     90%  428.22ms
     99%  577.34ms
  450 requests in 8.01s, 0.85MB read
  Socket errors: connect 0, read 0, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:     56.19
Transfer/sec:    108.67KB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    m = parse_wrk(WRK_OUT)
    assert m["throughput_rps"] == 56.19 and m["requests"] == 450
    assert (m["p50_ms"], m["p90_ms"], m["p99_ms"]) == (260.17, 428.22, 577.34)
    assert m["non_2xx"] == 3 and m["socket_errors"] == 2


def test_parse_wrk_converts_units() -> None:
    m = parse_wrk(WRK_OUT.replace("260.17ms", "870.00us").replace("577.34ms", "1.20s"))
    assert m["p50_ms"] == 0.87 and m["p99_ms"] == 1200.0
    with pytest.raises(ValueError, match="wrk latency"):
        parse_wrk(WRK_OUT.replace("577.34ms", "577.34min"))
