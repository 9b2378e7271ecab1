"""`coachrec bench report` renders results files as Markdown with the protocol on every table."""

import json

import pytest

from coachrec_bench.report import render


def test_report_groups_rows_by_dataset_and_protocol(tmp_path):
    rows = [
        {
            "name": "itemknn",
            "dataset": "beauty",
            "protocol": "loo-full",
            "metrics": {"ndcg@10": 0.0394, "users": 22363, "cfg": {"a": 1}},
            "machine": "2 cores",
            "date": "2026-11-22T08:00:00",
            "command": "coachrec bench accuracy",
        },
        {
            "name": "sasrec",
            "dataset": "beauty",
            "protocol": "loo-full",
            "metrics": {"ndcg@10": 0.05, "recall@10": 0.09},
            "machine": "2 cores",
            "date": "2026-11-22T09:00:00",
        },
        {
            "name": "sasrec",
            "dataset": "beauty",
            "protocol": "loo-sampled100",
            "metrics": {"ndcg@10": 0.33},
            "machine": "2 cores",
            "date": "2026-11-22T09:00:00",
        },
    ]
    (tmp_path / "accuracy.json").write_text(json.dumps(rows))
    md = render(tmp_path)
    assert md.count("**beauty** — loo-full") == 1 and md.count("**beauty** — loo-sampled100") == 1
    assert "| itemknn | 0.0394 | 22,363 |  |" in md  # the dict metric is left to the JSON
    assert "| sasrec | 0.0500 |  | 0.0900 |" in md
    assert "Command: `coachrec bench accuracy`" in md


def test_report_without_results_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        render(tmp_path)
