"""`coachrec quickstart --fast` end to end, with the real smallest LLM (SmolLM2-135M) judging
the LLM criteria: serve, trace, judge, distil, gate, decide, report, registry.

CI runs `coachrec models pull small` first; the test skips (saying why) when the model or
llama-cpp-python is not installed.
"""

import json

import pytest
from typer.testing import CliRunner

from coachrec.cli import app


@pytest.mark.slow
def test_quickstart_fast_runs_the_whole_loop(tmp_path):
    from coachrec.llm import LLMError, load_backend

    try:
        load_backend("small").close()
    except LLMError as exc:
        pytest.skip(f"small model unavailable: {exc}")
    out, registry = tmp_path / "qs", tmp_path / "registry"
    result = CliRunner().invoke(app, ["quickstart", "--fast", "--out", str(out), "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["dataset"] == "ml-latest-small"
    assert summary["decision"].startswith(("PROMOTE", "REFUSE"))
    llm_rows = [t for t in summary["tiers"] if t["tier"].startswith("teacher: LLM criteria")]
    assert llm_rows and "smollm2" in llm_rows[0]["tier"].lower()  # the real small model judged
    trust = {t["criterion"]: t for t in summary["trust"]}
    assert trust["constraint_adherence"]["may_gate"]
    # request_match is judged by the committee calibrated on ReDial selection dialogs, measured on unused ones
    assert "co-mention" in trust["request_match"]["why"] and trust["request_match"]["kappa"] is not None
    report = (out / "report.md").read_text()
    for section in ("Top failure modes", "Remedies tried", "Gate", "Latency and cost per tier"):
        assert section in report
    if summary["target_mode"] is not None:
        assert summary["remedies"] and all(r["remedy"] for r in summary["remedies"])
        if summary["gate"] is not None:
            assert summary["gate"]["rows"] and (out / "metric_deltas.png").stat().st_size > 0
            assert summary["candidate"] == "v0002"
    assert "Top failure modes" in result.output
    history = CliRunner().invoke(app, ["models", "history", "--registry", str(registry)])
    assert history.exit_code == 0 and "v0001" in history.output
