"""Text keys for the served co-mention retriever: what a conversation's words ask for (genres,
moods, catalog tags, eras, read by the served intent parser) learned as co-mention sources
beside the titles, so "people who asked for something scary were then recommended Y" is
learned from conversations and served from a request's text alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coachrec import datasets
from coachrec.models import load
from coachrec.models.conversational import (
    CoMentionRecommender,
    CoMentionRecommenderConfig,
    records_recall,
    tune_co_mention_recommender,
)
from coachrec.serve import RecommendRequest, Stack
from coachrec.serve.candidates import Turn, as_turns
from coachrec.serve.understanding import IntentParser, KeyedRetriever, record_keys, text_keys
from coachrec.tracing import Tracer


@pytest.fixture(scope="module")
def parser(ml_small):
    return IntentParser(ml_small.catalog)


def _item(ml_small, title):
    frame = ml_small.catalog.frame
    return str(frame.filter(frame["title"] == title)["item"][0])


def test_text_keys_read_both_speakers_in_order_and_skip_what_is_negated(parser):
    turns = [
        Turn("seeker", "Hi! I want something scary, no comedy please."),
        Turn("recommender", "Do you like thrillers from the 80s?"),
        Turn("seeker", ""),
    ]
    keys = text_keys(parser, turns)
    assert keys.index("genre:horror") < keys.index("genre:thriller")
    assert "year:1980-1989" in keys
    assert "genre:comedy" not in keys  # "no comedy" is not asked for
    assert text_keys(parser, []) == []
    # a title is a mention, not a key
    assert not [k for k in text_keys(parser, [Turn("seeker", "I loved Super Troopers (2001)")]) if "troopers" in k]


def test_record_keys_are_what_the_context_says(parser):
    recs = [{"dialog_id": "d", "context": [{"speaker": "seeker", "text": "a romance please"}], "targets": ["1"]},
            {"dialog_id": "e", "targets": ["1"]}]  # fmt: skip
    keyed = record_keys(parser, recs)
    assert keyed[0]["keys"] == ["genre:romance"] and keyed[1]["keys"] == []
    assert "keys" not in recs[0]  # the records given are not changed


def _rare(ml_small) -> str:
    """A film one person rated, no horror: nothing but the learned words can bring it up."""
    frame = ml_small.catalog.frame
    genres = dict(zip(frame["item"].cast(str).to_list(), frame["genres"].to_list(), strict=True))
    for i in np.flatnonzero(ml_small.item_popularity() == 1).tolist():
        raw = str(ml_small.items.ids[i])
        if "Horror" not in (genres.get(raw) or []):
            return raw
    raise AssertionError("no rare film")


AIRPLANE = "Airplane! (1980)"


def _keyed_records(ml_small, target: str, n: int = 12) -> list[dict]:
    """`n` dialogs asking for something scary whose human recommender suggested `target` (a
    film no genre table calls horror), beside twice as many asking for a comedy (Airplane!)."""
    out = []
    for i in range(n):
        out.append({"dialog_id": f"scary-{i}", "mentions": [], "targets": [target], "keys": ["genre:horror"],
                    "context": [{"speaker": "seeker", "text": "I want something scary tonight"}]})  # fmt: skip
    for i in range(2 * n):
        out.append({"dialog_id": f"funny-{i}", "mentions": [], "targets": [_item(ml_small, AIRPLANE)],
                    "keys": ["genre:comedy"],
                    "context": [{"speaker": "seeker", "text": "I want something funny tonight"}]})  # fmt: skip
    return out


def test_keys_are_learned_only_with_a_key_weight(ml_small):
    target = _item(ml_small, "Toy Story (1995)")
    recs = _keyed_records(ml_small, target)
    plain = CoMentionRecommender(key_weight=0.0).fit_conversations(recs, ml_small.catalog)
    keyed = CoMentionRecommender().fit_conversations(recs, ml_small.catalog)  # the default reads keys
    assert plain.n_keys == 0 and keyed.n_keys == 2 and keyed.fit_info["keys"] == 2
    no_keys = [{k: v for k, v in r.items() if k != "keys"} for r in recs]
    assert CoMentionRecommender().fit_conversations(no_keys, ml_small.catalog).n_keys == 0
    t = int(ml_small.catalog.items.encode([target])[0])
    # without key rows, keys change nothing; with them, item scores are as before
    h = [np.zeros(0, np.int64)]
    assert np.array_equal(plain.score_keyed(h, [["genre:horror"]]), plain.score(h))
    assert np.allclose(keyed.score(h), plain.score(h))
    scary = keyed.score_keyed(h, [["genre:horror"]])[0]
    funny = keyed.score_keyed(h, [["genre:comedy"]])[0]
    assert scary[t] > funny[t] and int(np.argmax(scary)) == t
    assert np.allclose(keyed.score_keyed(h, [["genre:no-such-key"]]), keyed.score(h))  # unknown keys are ignored
    with pytest.raises(ValueError, match="keys: 2 lists for 1 histories"):
        keyed.score_keyed(h, [[], []])


def test_a_keyed_model_saves_and_loads_and_an_old_save_still_loads(ml_small, tmp_path):
    recs = _keyed_records(ml_small, _item(ml_small, "Toy Story (1995)"))
    keyed = CoMentionRecommender(key_weight=1.0).fit_conversations(recs, ml_small.catalog)
    keyed.save(tmp_path / "keyed")
    again = load(tmp_path / "keyed")
    h = [np.zeros(0, np.int64)]
    assert isinstance(again, CoMentionRecommender) and again.n_keys == 2
    assert np.array_equal(again.score_keyed(h, [["genre:horror"]]), keyed.score_keyed(h, [["genre:horror"]]))
    plain = CoMentionRecommender(key_weight=0.0).fit_conversations(recs, ml_small.catalog)
    state = plain._state()
    del state["keys"]  # saved before the keys existed
    old = CoMentionRecommender()
    old._set_state(state)
    assert old.n_keys == 0 and old.matrix.shape == plain.matrix.shape


def test_a_served_request_gets_what_people_recommended_after_the_same_words(ml_small):
    """Learned from conversations through Stack.learn_conversations, served from the text alone:
    after "something scary", the film people recommended after those words ranks above the
    more often recommended comedy, with the key weight; without it, below."""
    target = _rare(ml_small)
    recs = _keyed_records(ml_small, target)
    base = Stack.fit(ml_small, learn_blend=False)
    keyed = base.learn_conversations(recs, seed=0, config=CoMentionRecommenderConfig(key_weight=1.0))
    plain = base.learn_conversations(recs, seed=0, config=CoMentionRecommenderConfig(key_weight=0.0))
    pipe = keyed.pipeline(Tracer(enabled=False))
    retrieve = next(s for s in pipe.stages if s.name == "retrieve")
    assert any(isinstance(r, KeyedRetriever) for r in retrieve.retrievers)
    req = RecommendRequest(context="Hi, I'd love something scary tonight", k=20)
    airplane = _item(ml_small, AIRPLANE)

    def rank(items: tuple[str, ...] | list[str], item: str) -> int:
        return list(items).index(item) if item in items else len(items)

    served = pipe.recommend(req).items
    assert rank(served, target) < rank(served, airplane)
    before = plain.pipeline(Tracer(enabled=False)).recommend(req).items
    assert rank(before, target) > rank(before, airplane)
    # offline scoring (what learn_blend and the benches use) reads the same keys
    (c,) = keyed.candidates([np.zeros(0, np.int64)], through="rank", contexts=[req.context])
    order = [str(x) for x in ml_small.catalog.items.decode(c.idx[np.argsort(-c.score, kind="stable")])]
    assert rank(order, target) < rank(order, airplane)
    # a request without text ranks as the stack without keys
    plain_req = RecommendRequest(user_id="1", k=10)
    assert pipe.recommend(plain_req).items == plain.pipeline(Tracer(enabled=False)).recommend(plain_req).items


def test_the_bundled_records_carry_the_keys_the_served_parser_reads(parser):
    """The bundled redial-ml keys are what the intent parser reads in each record's context
    now (a parser change that alters them must rebuild the file: scripts/build_redial_requests.py)."""
    reqs = datasets.requests("redial-ml")
    assert all(isinstance(r["keys"], list) for r in reqs)
    assert sum(bool(r["keys"]) for r in reqs) > len(reqs) // 2
    for r in reqs[::97]:
        assert r["keys"] == text_keys(parser, as_turns(r["context"])), r["turn"]


def _misleading_records(ml_small, n: int = 12) -> list[dict]:
    """Dialogs where the titles tell the next suggestion and the words do not: every one asks
    for "genre:comedy"; `n` mention Toy Story then get Jumanji, `n` mention Heat then get
    Casino, and `4n` mention nothing and get Airplane! (so the comedy key's row points there)."""
    toy, jumanji = _item(ml_small, "Toy Story (1995)"), _item(ml_small, "Jumanji (1995)")
    heat, casino = _item(ml_small, "Heat (1995)"), _item(ml_small, "Casino (1995)")
    context = [{"speaker": "seeker", "text": "something funny please"}]
    out = []
    for i in range(n):
        out.append({"dialog_id": f"toy-{i}", "mentions": [toy], "targets": [jumanji], "keys": ["genre:comedy"],
                    "context": context})  # fmt: skip
        out.append({"dialog_id": f"heat-{i}", "mentions": [heat], "targets": [casino], "keys": ["genre:comedy"],
                    "context": context})  # fmt: skip
    for i in range(4 * n):
        out.append({"dialog_id": f"air-{i}", "mentions": [], "targets": [_item(ml_small, AIRPLANE)],
                    "keys": ["genre:comedy"], "context": context})  # fmt: skip
    return out


def test_the_key_weight_is_chosen_on_the_records_given(ml_small):
    """`tune_co_mention_recommender` picks the key weight by recall on an inner split of the
    records it is given: where the words tell the suggestion it reads them, where they mislead
    (beside titles that tell it) it leaves them out."""
    grid = {"key_weight": (0.0, 1.0, 4.0)}
    helpful = _keyed_records(ml_small, _rare(ml_small))
    cfg, log = tune_co_mention_recommender(helpful, ml_small.catalog, grid=grid, k=1,
                                           base=CoMentionRecommenderConfig(key_weight=0.0))  # fmt: skip
    assert cfg.key_weight > 0 and len(log) == 3 and all("recall@1" in row for row in log)
    by_weight = {row["key_weight"]: row["recall@1"] for row in log}
    assert by_weight[cfg.key_weight] > by_weight[0.0]
    misleading = _misleading_records(ml_small)
    cfg, log = tune_co_mention_recommender(misleading, ml_small.catalog, grid=grid, k=1)
    by_weight = {row["key_weight"]: row["recall@1"] for row in log}
    assert cfg.key_weight == 0.0 and by_weight[0.0] > by_weight[4.0]
    # recall of the model alone: the titles' targets, items mentioned before left out
    plain = CoMentionRecommender(key_weight=0.0).fit_conversations(misleading, ml_small.catalog)
    recall, n = records_recall(plain, misleading, ml_small.catalog, k=1)
    assert n == len(misleading) and recall == 1.0
    with pytest.raises(ValueError, match="at least two dialogs"):
        tune_co_mention_recommender(misleading[:1], ml_small.catalog)


def test_learn_conversations_tunes_the_co_mention_unless_given_a_config(ml_small):
    recs = _misleading_records(ml_small)
    base = Stack.fit(ml_small, learn_blend=False)
    tuned = base.learn_conversations(recs, seed=3)
    co = next(m for m in tuned.models if m.name == "co-mention")
    expected, log = tune_co_mention_recommender(recs, ml_small.catalog, seed=3)  # same records, same inner split
    assert co.config == expected and co.fit_info["tuned"] == dataclasses.asdict(expected)
    assert co.fit_info["tuned_on"] == f"inner split of {len(recs)} turns, {len(log)} settings tried"
    fixed = base.learn_conversations(recs, seed=0, tune=False)
    co = next(m for m in fixed.models if m.name == "co-mention")
    assert co.config == CoMentionRecommenderConfig() and "tuned" not in co.fit_info
    given = base.learn_conversations(recs, seed=0, config=CoMentionRecommenderConfig(key_weight=2.0))
    assert next(m for m in given.models if m.name == "co-mention").config.key_weight == 2.0


def test_the_learned_co_mention_scores_every_candidate_the_others_found(ml_small, tmp_path):
    """`learn_conversations` fills the co-mention's scores (`PipelineConfig.fill`): an item
    another retriever found gets the co-mention's real score, not "missing"; `fill=False`
    leaves it missing, as before. Requests are served either way."""
    recs = _keyed_records(ml_small, _rare(ml_small))
    base = Stack.fit(ml_small, learn_blend=False)
    base = dataclasses.replace(base, config=dataclasses.replace(base.config, candidates=5))
    cfg = CoMentionRecommenderConfig(key_weight=1.0)
    filled = base.learn_conversations(recs, seed=0, config=cfg)
    unfilled = base.learn_conversations(recs, seed=0, config=cfg, fill=False)
    assert filled.config.fill == ("co-mention",) and unfilled.config.fill == ()
    ctx = "Hi, I'd love something scary tonight, like Heat (1995)"
    h = [np.zeros(0, np.int64)]
    (a,) = filled.candidates(h, through="retrieve", contexts=[ctx])
    (b,) = unfilled.candidates(h, through="retrieve", contexts=[ctx])
    col = a.source_names.index("co-mention")
    assert len(a) > 5 and not np.isnan(a.sources[:, col]).any()
    assert np.isnan(b.sources[:, col]).sum() == len(b) - 5  # only its own top 5
    co = next(m for m in filled.models if m.name == "co-mention")
    keep: list = []
    filled.candidates(h, through="retrieve", contexts=[ctx], keep=keep)
    row = co.score_keyed([keep[0].history], [keep[0].attributes["text.keys"]])[0]
    assert np.allclose(a.sources[:, col], row[a.idx], atol=1e-6)
    pipe = filled.pipeline(Tracer(enabled=False))
    retrieve = next(s for s in pipe.stages if s.name == "retrieve")
    assert next(r for r in retrieve.retrievers if r.name == "co-mention").fill
    assert len(pipe.recommend(RecommendRequest(context=ctx, k=5)).items) == 5
    again = Stack.load(filled.save(tmp_path / "stack"), ml_small.catalog)
    assert again.config.fill == ("co-mention",)  # saved with the stack


def test_the_blend_can_be_learned_on_more_parts_of_the_dialogs(ml_small):
    """`blend_folds`: the text blend is learned on every turn, each scored by a co-mention
    fitted on the other parts (never its own dialog); fewer than two parts is refused."""
    recs = _keyed_records(ml_small, _rare(ml_small))
    base = Stack.fit(ml_small, learn_blend=False)
    cfg = CoMentionRecommenderConfig(key_weight=1.0)
    two = base.learn_conversations(recs, seed=0, config=cfg)
    three = base.learn_conversations(recs, seed=0, config=cfg, blend_folds=3)
    assert set(three.config.text_weights) == set(two.config.text_weights)
    assert f"text blend learned on {len(recs)} conversation turns" in three.source
    with pytest.raises(ValueError, match="blend_folds must be at least 2"):
        base.learn_conversations(recs, seed=0, config=cfg, blend_folds=1)
