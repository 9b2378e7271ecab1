"""The registry: versions saved with their records, champion pointer, rollback, history, and a
saved stack (with its distilled student) scoring exactly as before saving."""

import numpy as np
import pytest

from coachrec.app import champion
from coachrec.coach import Registry, RegistryError
from coachrec.ranking import ItemStats, Student
from coachrec.serve import LearnedRanker, PipelineConfig, RecommendRequest, Service, Stack
from coachrec.serve.stages import BlendRanker


@pytest.fixture(scope="module")
def stacks(ml_small):
    base = Stack.fit(ml_small, ("pop",), PipelineConfig(candidates=50))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(base.feature_names)))
    student = Student(base.feature_names, strength=0.5).fit(x, rng.random(200), np.ones(200))
    return base, base.with_ranker(student, ItemStats.from_data(ml_small, base.catalog))


def _register(reg, stack, name):
    return reg.register(
        stack, description=name, dataset="ml-latest-small", data={"name": "ml-latest-small", "hash": "h"}
    )


def test_promote_rollback_and_history(tmp_path, stacks):
    reg = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="no champion"):
        reg.rollback()
    v1, v2, v3 = (
        _register(reg, s, n) for s, n in zip((*stacks, stacks[1]), ("base", "student", "student again"), strict=False)
    )
    assert [v.id for v in reg.versions()] == ["v0001", "v0002", "v0003"]
    reg.promote(v1.id, note="first")
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback()
    reg.promote(v2.id, note="gate passed")
    reg.promote(v3.id, note="gate passed again")
    assert reg.rollback(note="bad live metrics") == v2.id
    assert reg.champion == v2.id
    assert reg.rollback() == v1.id  # a second rollback walks one more champion back, it does not undo the first
    assert reg.rollback(to=v3.id, note="fixed") == v3.id
    with pytest.raises(RegistryError, match="no such version"):
        reg.rollback(to="v0042")
    actions = [(e["action"], e["version"]) for e in reg.events()]
    assert actions[-3:] == [("rollback", v2.id), ("rollback", v1.id), ("rollback", v3.id)]
    assert reg.events()[-3]["note"] == "bad live metrics" and reg.events()[-3]["from"] == v3.id
    reg.attach_gate(v2.id, {"promote": False, "reasons": ["x"]})
    assert reg.version(v2.id).gate == {"promote": False, "reasons": ["x"]}
    assert reg.version(v2.id).config["ranker"] == "distilled-student"


def test_saved_stack_scores_identically_and_serves(tmp_path, stacks, ml_small):
    _, coached = stacks
    reg = Registry(tmp_path / "registry")
    v = _register(reg, coached, "student")
    loaded = reg.load_stack(v.id)
    assert loaded.ranker is not None and loaded.ranker.student.strength == 0.5
    assert loaded.config == coached.config and loaded.dataset == "ml-latest-small"
    histories = [ml_small.sequences()[1][:20], np.zeros(0, np.int64)]
    np.testing.assert_allclose(loaded.scorer().score(histories), coached.scorer().score(histories), rtol=1e-6)
    assert champion("ml-latest-small", reg) is None  # registered, not champion
    reg.promote(v.id, note="test")
    served = champion("ml-latest-small", reg)
    assert served is not None and v.id in served.source and isinstance(served.ranker, LearnedRanker)
    assert champion("beauty", reg) is None
    service = Service.open(served, tmp_path / "t.duckdb")
    try:
        assert any(isinstance(stage, LearnedRanker) for stage in service.pipeline.stages)
        assert not any(isinstance(stage, BlendRanker) for stage in service.pipeline.stages)
        want = coached.pipeline().recommend(RecommendRequest(user_id="1", k=10)).items
        assert service.recommend(RecommendRequest(user_id="1", k=10)).items == want
    finally:
        service.close()


def test_scorer_ranks_what_the_served_pipeline_ranks(tmp_path, stacks, ml_small):
    """The gate's offline scores order the candidates exactly as the traced `rank` span did."""
    from coachrec.tracing import Tracer, TraceStore

    _, coached = stacks
    store = TraceStore(tmp_path / "t.duckdb")
    try:
        pipeline = coached.pipeline(Tracer(store))
        users = ["1", "7", "42"]
        results = [pipeline.recommend(RecommendRequest(user_id=u, k=10)) for u in users]
        store.flush()
        model = coached.models[0]
        histories = [model.user_history(model.users.index(u)) for u in users]
        scores = coached.scorer().score(histories)
        for result, row in zip(results, scores, strict=False):
            rank = next(s for s in store.trace(result.trace_id) if s.name == "rank")
            traced = rank.output_value()["items"]
            offline = [
                str(i)
                for i in np.asarray(model.items.ids, dtype=object)[np.argsort(-row, kind="stable")[: len(traced)]]
            ]
            assert offline == traced
    finally:
        store.close()
