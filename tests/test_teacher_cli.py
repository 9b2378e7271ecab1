"""`coachrec judge`, `report failures`, `review` and `golden` from the command line."""

from typer.testing import CliRunner

from coachrec.cli import app
from coachrec.models import create
from coachrec.policy import Constraints
from coachrec.serve.pipeline import Pipeline, RecommendRequest
from coachrec.tracing import Tracer, TraceStore


def test_judge_report_review_and_golden_commands(ml_small, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich tables unwrapped
    db, review_db = tmp_path / "traces.duckdb", tmp_path / "review.duckdb"
    store = TraceStore(db)
    pipeline = Pipeline.from_models([create("pop").fit(ml_small)], ml_small.catalog, tracer=Tracer(store))
    users = ml_small.users.ids[:6].tolist()
    for u in users:
        pipeline.recommend(RecommendRequest(user_id=u, k=5))
    pipeline.recommend(
        RecommendRequest(
            user_id=users[0],
            k=5,
            constraints=Constraints(
                require_genres=("Film-Noir",), exclude_genres=("Crime", "Drama", "Thriller", "Mystery")
            ),
        )
    )
    store.close()

    runner = CliRunner()
    args = ["--db", str(db), "--review-db", str(review_db), "--llm", "none", "--no-relevance"]
    out = runner.invoke(app, ["judge", "--sample", "all", *args])
    assert out.exit_code == 0, out.output
    assert "7 of 7 traces sampled" in out.output and "short_slate" in out.output
    again = runner.invoke(app, ["judge", "--sample", "all", *args])
    assert "0 of 7 traces sampled" in again.output  # this judge version already judged them
    bad = runner.invoke(app, ["judge", "--sample", "sometimes", *args])
    assert bad.exit_code != 0 and "unknown sampling policy" in bad.output

    report = runner.invoke(app, ["report", "failures", "--db", str(db), "--over-time", "1h"])
    assert report.exit_code == 0 and "short_slate" in report.output and "RETRIEVER:retrieve" in report.output
    assert "1/7" in report.output  # one of seven judged traces failed in its hour

    answers = "c\nfail\n" + "a\n" * 20
    reviewed = runner.invoke(app, ["review", "--review-db", str(review_db), "--reviewer", "tester"], input=answers)
    assert reviewed.exit_code == 0, reviewed.output
    published = runner.invoke(app, ["golden", "publish", "main", "--review-db", str(review_db)])
    assert "golden set main v1" in published.output
    shown = runner.invoke(app, ["golden", "show", "main", "--review-db", str(review_db)])
    assert "tester" in shown.output
    quality = runner.invoke(app, ["golden", "quality", "main", "--review-db", str(review_db)])
    assert quality.exit_code == 0 and "slate_complete" in quality.output
