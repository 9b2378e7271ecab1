"""Learning from conversations as part of a served stack: `CoMentionRecommender` fitted on the
bundled ReDial requests (linked to ml-latest-small) or on a `Conversations` (tests/data/redial),
added to a `Stack` as a retriever with the text blend re-learned, so the titles a conversation
names change the slate through what people recommended with them; saved and loaded with the stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coachrec import datasets
from coachrec.data.conversations import load_conversations
from coachrec.data.linking import link_conversations
from coachrec.models import load
from coachrec.models.conversational import CoMentionRecommender, conversation_dialogs
from coachrec.ranking import ItemStats, Student
from coachrec.serve import RecommendRequest, Stack
from coachrec.tracing import Tracer

REDIAL = Path(__file__).resolve().parent / "data" / "redial"
TITLE = "Super Troopers (2001)"


@pytest.fixture(scope="module")
def records():
    """Bundled ReDial turns of the dialogs that mention `TITLE`, and as many others (kept small)."""
    reqs = datasets.requests("redial-ml")
    with_title = {r["dialog_id"] for r in reqs if any(TITLE in t["text"] for t in r["context"])}
    others = sorted({r["dialog_id"] for r in reqs} - with_title)[:40]
    keep = with_title | set(others)
    return [r for r in reqs if r["dialog_id"] in keep]


@pytest.fixture(scope="module")
def base(ml_small):
    return Stack.fit(ml_small, learn_blend=False)


@pytest.fixture(scope="module")
def learned(base, records):
    return base.learn_conversations(records, seed=0)


def _item(ml_small, title):
    frame = ml_small.catalog.frame
    return str(frame.filter(frame["title"] == title)["item"][0])


def test_fit_conversations_counts_co_mentions_of_the_chosen_dialogs(ml_small, records):
    half, _ = conversation_dialogs(records, 2, seed=0)
    model = CoMentionRecommender().fit_conversations(records, ml_small.catalog, dialogs=half)
    assert model.fit_info["dialogs"] == len(half) and model.n_items == len(ml_small.catalog)
    # what it learned is what those dialogs recommended after a mention
    pairs = {(m, t) for r in records if r["dialog_id"] in half for m in r["mentions"] for t in r["targets"] if m != t}
    m, t = sorted(pairs)[0]
    mi, ti = ml_small.catalog.items.encode([m, t])
    assert model.matrix[mi, ti] > 0
    scores = model.score([np.asarray([mi])])[0]
    assert scores[ti] > np.median(scores)


def test_fit_on_linked_conversations(ml_small):
    conv = load_conversations(REDIAL)
    links = link_conversations(conv, ml_small.catalog, catalog_name="ml-latest-small")
    dialogs = sorted(set(conv.turns["dialog_id"].to_list()))[:10]
    model = CoMentionRecommender().fit_conversations(conv, ml_small.catalog, links=links, dialogs=dialogs)
    assert model.fit_info["dialogs"] == 10 and model.fit_info["targets"] > 0


def test_bad_fits_say_what_is_wrong(ml_small):
    with pytest.raises(TypeError, match="fit_conversations"):
        CoMentionRecommender().fit(ml_small)
    with pytest.raises(ValueError, match="no conversation turn has a target"):
        CoMentionRecommender().fit_conversations([{"dialog_id": "d", "mentions": ["1"], "targets": ["no-such"]}],
                                                 ml_small.catalog)  # fmt: skip


def test_a_conversation_naming_a_title_gets_what_people_recommended_with_it(ml_small, base, learned, tmp_path):
    assert learned.retriever_names[: len(base.models) + 1] == (*[m.name for m in base.models], "co-mention")
    w = learned.config.text_weights
    assert w is not None and w["co-mention"] > 0
    ctx = [{"speaker": "seeker", "text": f"Hi I am looking for a movie like {TITLE}"}]
    before = base.pipeline(Tracer(enabled=False)).recommend(RecommendRequest(context=ctx, k=10)).items
    after = learned.pipeline(Tracer(enabled=False)).recommend(RecommendRequest(context=ctx, k=10)).items
    co = learned.models[-1]
    title_idx = ml_small.catalog.items.encode([_item(ml_small, TITLE)])
    recommended_with = set(ml_small.catalog.items.decode(np.flatnonzero(co.matrix[title_idx[0]].toarray()[0] > 0)))
    new = [i for i in after if i not in before]
    assert new and any(i in recommended_with for i in new)
    assert sum(i in recommended_with for i in after) > sum(i in recommended_with for i in before)
    # saved and loaded with the stack, it serves the same slate
    learned.save(tmp_path / "stack")
    again = Stack.load(tmp_path / "stack", ml_small.catalog)
    assert isinstance(load(tmp_path / "stack" / "models" / "co-mention"), CoMentionRecommender)
    assert again.pipeline(Tracer(enabled=False)).recommend(RecommendRequest(context=ctx, k=10)).items == after


def test_a_request_without_text_ranks_as_before(base, learned):
    req = RecommendRequest(user_id="1", k=10)
    assert learned.pipeline(Tracer(enabled=False)).recommend(req).items == (
        base.pipeline(Tracer(enabled=False)).recommend(req).items
    )


def test_with_model_refuses_a_second_retriever_of_the_same_name(learned):
    with pytest.raises(ValueError, match="already has a retriever named 'co-mention'"):
        learned.with_model(learned.models[-1])


def test_with_model_learns_the_text_blend_on_other_dialogs(ml_small, base, records):
    fit_ids, blend_ids = conversation_dialogs(records, 2, seed=1)
    model = CoMentionRecommender().fit_conversations(records, ml_small.catalog, dialogs=fit_ids)
    stack = base.with_model(model, blend_on=[r for r in records if r["dialog_id"] in blend_ids])
    assert stack.models[-1] is model and base.models == stack.models[:-1]  # the old stack is unchanged
    assert set(stack.config.text_weights) == set(stack.retriever_names)
    assert stack.config.weights["co-mention"] == 0.0 and "conversation turns" in stack.source
    with pytest.raises(ValueError, match="needs 'context' and 'targets'"):
        base.with_model(model, blend_on=[{"dialog_id": "d", "targets": ["1"]}])


def test_a_distilled_stack_learns_from_conversations_and_keeps_its_student(ml_small, base, records, tmp_path):
    """A second coaching iteration after a promoted student: the co-mention retriever joins the
    text blend; the student keeps reading the retrievers it was distilled over, so a request
    without text ranks exactly as before, and one that names a title gets the new retriever."""
    rng = np.random.default_rng(0)
    x = rng.random((300, len(base.feature_names)))
    student = Student(base.feature_names, strength=0.5).fit(x, rng.random(300) > 0.5, np.ones(300))
    distilled = base.with_ranker(student, ItemStats.from_data(ml_small, base.catalog))
    both = distilled.learn_conversations(records, seed=0)
    assert both.ranker is not None and both.ranker.student is student
    plain = RecommendRequest(user_id="1", k=10)
    assert both.pipeline(Tracer(enabled=False)).recommend(plain).items == (
        distilled.pipeline(Tracer(enabled=False)).recommend(plain).items
    )
    ctx = [{"speaker": "seeker", "text": f"Hi I am looking for a movie like {TITLE}"}]
    talk = RecommendRequest(context=ctx, k=10)
    served = both.pipeline(Tracer(enabled=False)).recommend(talk)
    assert served.items != distilled.pipeline(Tracer(enabled=False)).recommend(talk).items
    both.save(tmp_path / "stack")
    again = Stack.load(tmp_path / "stack", ml_small.catalog)
    assert again.pipeline(Tracer(enabled=False)).recommend(talk).items == served.items
