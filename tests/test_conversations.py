"""Conversational data (ReDial sample), entity linking, mentions in text, the conv-full
protocol, reference aggregation against the published GPT-4 figures, paired comparison, and
the scorers learned from conversations."""

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from coachrec.data import Catalog, DataError, IdMap
from coachrec.data.conversations import load_conversations, match_name, speaker_of
from coachrec.data.linking import MentionFinder, TitleIndex, link_conversations, normalize_title, parse_title
from coachrec.metrics.conversational import (
    aggregate,
    compare_paired,
    conv_full,
    load_reference,
    reference_path,
    summary,
)

REDIAL = Path(__file__).parent / "data" / "redial"
REFERENCE = REDIAL / "reference"


@pytest.fixture(scope="module")
def conv():
    return load_conversations(REDIAL)


# ---------------------------------------------------------------------- loader
def test_sample_loads_with_speakers_mentions_and_targets(conv):
    import hashlib

    # the first 147 lines of the full test.jsonl (tests/data/redial/README.md)
    digest = hashlib.sha256((REDIAL / "test.jsonl").read_bytes()).hexdigest()
    assert digest == "54d2dd34976eadc069196077541fe8829eb16fd975aec67098e564f3039853e9"
    assert (conv.n_turns, conv.n_targets, conv.n_dialogs, conv.n_candidates) == (147, 202, 50, 6281)
    assert conv.turns["turn"].to_list() == list(range(147))  # line numbers = the reference files' idx
    first = conv.context(0)
    assert first == [("seeker", "Hi I am looking for a movie like Super Troopers (2001)")]
    assert [s for s, _ in conv.context(2)] == [
        "seeker",
        "recommender",
        "seeker",
        "recommender",
        "seeker",
        "recommender",
        "seeker",
    ]
    assert speaker_of(0) == "recommender" and speaker_of(1) == "seeker"
    # earlier mentions oldest first, with their age in utterances (0 = the last utterance)
    prev, ages = conv.mentions([1])
    names = conv.entity_names(prev[0])
    assert names[0] == "Super Troopers" and names[-1] == "American Pie (film)"
    assert ages[0][0] == 2 and ages[0][-1] == 0 and ages[0] == sorted(ages[0], reverse=True)
    tg = conv.targets.filter(pl.col("turn") == 1)
    assert conv.entity_names(tg["target"].to_list()) == [
        "Police Academy (film)",
        "Police Academy 2: Their First Assignment",
    ]
    assert tg["condition"].to_list() == ["dis", "rec"]  # Police Academy was recommended in turn 0
    ents = conv.entities.filter(pl.col("id") == 29891)
    assert ents["uri"][0] == "<http://dbpedia.org/resource/Police_Academy_(film)>" and ents["is_movie"][0]


def test_mentioned_before_by_name_as_published(conv):
    counts = dict(conv.targets.group_by("condition").len().iter_rows())
    assert counts == {"rec": 167, "dis": 35}
    diff = conv.condition_mismatches()
    # the 1990 "It" after the 2017 one, "Click (2010)" after "Click (2006)": same name, other id
    assert diff["turn"].to_list() == [19, 35, 58, 70]
    assert diff["name"].to_list() == ["It (miniseries)", "Click (2010 film)", "It (miniseries)", "It (2017 film)"]
    assert match_name("<http://dbpedia.org/resource/Water_(1985_film)>") == "Water"


def test_folds_hold_whole_dialogs_and_are_seeded(conv):
    f = conv.folds(2, seed=0)
    per_dialog = pl.DataFrame({"d": conv.turns["dialog_id"], "f": f}).group_by("d").agg(pl.col("f").n_unique())
    assert per_dialog["f"].max() == 1
    assert set(f.tolist()) == {0, 1}
    assert np.array_equal(f, conv.folds(2, seed=0)) and not np.array_equal(f, conv.folds(2, seed=1))


def _write(folder: Path, turns: list, entities: dict | None = None, items: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entities = entities or {
        "<http://dbpedia.org/resource/A_(film)>": 1,
        "<http://dbpedia.org/resource/B>": 2,
        "<http://dbpedia.org/resource/C>": 3,
        "<http://dbpedia.org/resource/D>": 4,
        "<http://dbpedia.org/resource/E>": 5,
        "<http://dbpedia.org/resource/It_(2017_film)>": 6,
        "<http://dbpedia.org/resource/It_(miniseries)>": 7,
        "<http://dbpedia.org/resource/Comedy>": 9,
    }
    (folder / "entity2id.json").write_text(json.dumps(entities))
    (folder / "item_ids.json").write_text(json.dumps(items if items is not None else [1, 2, 3, 4, 5, 6, 7]))
    (folder / "test.jsonl").write_text("".join((t if isinstance(t, str) else json.dumps(t)) + "\n" for t in turns))
    return folder


def _turn(dialog="d1", turn_id=1, rec=(2,), prev=(1,), context=("", "hi, I liked A (1990)")):
    return {
        "context": list(context),
        "resp": "try B",
        "rec": list(rec),
        "prev_entity": list(prev),
        "entity": list(rec),
        "dialog_id": dialog,
        "turn_id": turn_id,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "test.jsonl:2: not valid JSON"),
        (
            json.dumps({"context": [""], "resp": "x", "rec": [2]}),
            "test.jsonl:2: missing key(s) ['prev_entity', 'dialog_id', 'turn_id']",
        ),
        (json.dumps(_turn(rec=(99,))), "test.jsonl:2: 'rec' has entity id(s) [99] not in entity2id.json"),
        (json.dumps(_turn(prev=("x",))), "test.jsonl:2: 'prev_entity' must be a list of integer entity ids"),
        (json.dumps(_turn(context=("", 3))), "test.jsonl:2: 'context' must be a list of utterance strings"),
    ],
)
def test_bad_turns_name_file_and_line(tmp_path, line, message):
    folder = _write(tmp_path / "crs", [_turn(), line])
    with pytest.raises(
        DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        load_conversations(folder)


def test_bad_tables_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"item_ids.json: entity id\(s\) \[42\] not in entity2id.json"):
        load_conversations(_write(tmp_path / "a", [_turn()], items=[1, 42]))
    with pytest.raises(DataError, match="entity id 1 is used twice"):
        load_conversations(_write(tmp_path / "b", [_turn()], entities={"<x>": 1, "<y>": 1}))
    with pytest.raises(DataError, match="no turns"):
        load_conversations(_write(tmp_path / "c", []))
    with pytest.raises(DataError, match="not a folder"):
        load_conversations(tmp_path / "missing")


def test_gzipped_tables_are_read(tmp_path):
    folder = _write(tmp_path / "gz", [_turn()])
    e2i = folder / "entity2id.json"
    (folder / "entity2id.json.gz").write_bytes(gzip.compress(e2i.read_bytes()))
    e2i.unlink()
    assert load_conversations(folder).n_targets == 1


# ---------------------------------------------------------------------- linking
def _catalog(titles: list[str]) -> Catalog:
    ids = [str(i) for i in range(len(titles))]
    years = [parse_title(t).year for t in titles]
    return Catalog.from_frame(
        pl.DataFrame({"item": ids, "title": titles, "year": pl.Series(years, dtype=pl.Int32)}), IdMap(ids)
    )


TITLES = [
    "Matrix, The (1999)",
    "Psycho (1960)",
    "Psycho (1998)",
    "Police Academy (1984)",
    "Police Academy 2: Their First Assignment (1985)",
    "Heat (1995)",
    "Heat, The (2013)",
    "Seven (a.k.a. Se7en) (1995)",
    "Saw 3D: The Final Chapter (2010)",
    "Water (1985)",
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "Super Troopers (2001)",
    "It (2017)",
    "Up (2009)",
    "Schindler's List (1993)",
]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Matrix, The (1999)", ("matrix", 1999)),
        ("The Matrix", ("matrix", None)),
        ("the matrix (1999)", ("matrix", 1999)),
        ("Water_(1985_film)", ("water", 1985)),
        ("<http://dbpedia.org/resource/Police_Academy_(film)>", ("police academy", None)),
        ("Rocky_(2006_Indian_film)", ("rocky", 2006)),
        ("Haine, La (1995)", ("la haine", 1995)),
        ("Schindler's List", ("schindlers list", None)),
        ("Fast & Furious", ("fast and furious", None)),
        ("Amélie", ("amelie", None)),
        ("Star Wars: Episode IV - A New Hope (1977)", ("star wars episode iv a new hope", 1977)),
    ],
)
def test_normalisation(title, expected):
    assert normalize_title(title) == expected


def test_title_index_years_articles_sequels_and_ambiguity():
    index = TitleIndex(_catalog(TITLES))
    t = lambda i: TITLES[i]  # noqa: E731

    def linked(title):
        lk = index.link(title)
        return (t(lk.item) if lk.item is not None else None), lk.rule

    assert linked("Water_(1985_film)") == ("Water (1985)", "title+year")
    assert linked("<http://dbpedia.org/resource/The_Matrix>") == ("Matrix, The (1999)", "title")
    assert linked("Police_Academy_(film)") == ("Police Academy (1984)", "title")  # not the sequel
    assert linked("Police Academy 2: Their First Assignment (1985)") == (
        "Police Academy 2: Their First Assignment (1985)",
        "title+year",
    )
    assert linked("Psycho_(1998_film)") == ("Psycho (1998)", "title+year")
    assert linked("Psycho (1961)") == ("Psycho (1960)", "title+year±1")
    assert linked("Psycho (2005)") == (None, "other-year")  # a remake the catalog lacks
    lk = index.link("Psycho")  # same title, two years, no year given
    assert lk.rule == "ambiguous" and sorted(t(i) for i in lk.candidates) == ["Psycho (1960)", "Psycho (1998)"]
    assert linked("The_Heat_(film)") == ("Heat, The (2013)", "title")  # its own article decides
    assert linked("Heat") == ("Heat (1995)", "title")
    assert linked("Se7en") == ("Seven (a.k.a. Se7en) (1995)", "alias")  # MovieLens' a.k.a. title
    assert linked("Saw 3D") == ("Saw 3D: The Final Chapter (2010)", "alias")
    assert linked("Amelie (2001)") == ("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "title+year")
    assert linked("Totally Unknown Film") == (None, "unlinked")


def test_link_subtitles_volumes_and_escapes():
    titles = ["Avengers: Infinity War - Part I (2018)", "Kill Bill: Vol. 1 (2003)", "What About Bob? (1991)"]
    index = TitleIndex(_catalog(titles))
    for dbpedia, title in zip(["Avengers:_Infinity_War", "Kill_Bill:_Volume_1", "What_About_Bob%3F"], titles,
                              strict=True):  # fmt: skip
        lk = index.link(dbpedia)
        assert lk.item is not None and titles[lk.item] == title, dbpedia


def test_written_name_links_what_the_dbpedia_name_leaves_ambiguous(tmp_path):
    # "It_(miniseries)" has no year: ambiguous between the two Its; the dialogs write "It (1990)"
    turn = _turn(rec=(7,), prev=(1,)) | {"entity": [9, 7], "entity_name": ["Comedy", "It (1990)"]}
    conv = load_conversations(_write(tmp_path / "crs", [turn]))
    titles = ["It (1990)", "It (2017)"]
    links = link_conversations(conv, _catalog(titles))
    col = int(np.nonzero(conv.candidates == 7)[0][0])
    assert links.links[col].rule == "written" and titles[links.item[col]] == "It (1990)"
    assert links.report.by_rule["written"] == 1
    no_names = load_conversations(_write(tmp_path / "plain", [_turn(rec=(7,), prev=(1,))]))
    assert link_conversations(no_names, _catalog(titles)).links[col].rule == "ambiguous"  # nothing written: as before
    bad = _turn() | {"entity_name": "It (1990)"}
    with pytest.raises(DataError, match="'entity_name' must be a list of strings"):
        load_conversations(_write(tmp_path / "bad", [bad]))


def test_link_report_on_redial_counts_everything(conv, ml_small):
    links = link_conversations(conv, ml_small.catalog, catalog_name="ml-latest-small")
    r = links.report
    assert r.n_candidates == 6281 and r.n_targets == 202
    assert 0.60 < r.candidate_coverage < 0.70  # README: roughly 60% of candidates
    assert 0.85 < r.target_coverage < 0.95  # README: 80% of targets; the names the dialogs write add more
    assert r.by_rule["written"] > 0
    assert r.linked_candidates + r.unlinked + r.ambiguous == r.n_candidates  # nothing silently dropped
    assert sum(r.by_rule.values()) == r.n_candidates
    assert r.unlinked_examples and r.ambiguous_examples
    assert any(t == "It (miniseries)" for t, _ in r.ambiguous_examples) or r.by_rule["ambiguous"] > 0
    pa = int(np.nonzero(conv.candidates == 29891)[0][0])
    assert ml_small.catalog.titles([links.item[pa]]) == ["Police Academy (1984)"]
    assert "candidates linked to ml-latest-small" in r.lines()[0]
    json.dumps(r.to_dict())


# ---------------------------------------------------------------------- mentions in text
def test_mention_finder_spans_years_articles_and_common_words():
    cat = _catalog(TITLES)
    finder = MentionFinder(cat)
    text = "Hi I am looking for a movie like Super Troopers (2001)"
    (m,) = finder.find(text)
    assert (
        TITLES[m.item] == "Super Troopers (2001)"
        and text[m.start : m.end] == "Super Troopers (2001)"
        and m.year == 2001
    )
    assert m.confidence == 1.0
    (m,) = finder.find("I loved the matrix")
    assert TITLES[m.item] == "Matrix, The (1999)" and m.text == "the matrix"
    assert finder.find("it was up to me, I didn't like it") == []  # common words are not titles
    found = [TITLES[m.item] for m in finder.find("Have you seen It (2017)? Or Up (2009)?")]
    assert found == ["It (2017)", "Up (2009)"]
    ms = finder.find("Psycho (1998) is no Psycho")
    assert [TITLES[m.item] for m in ms] == ["Psycho (1998)", "Psycho (1960)"]
    assert not ms[0].ambiguous and ms[1].ambiguous and len(ms[1].candidates) == 2
    # longest title wins; articles, apostrophes and case do not matter
    ms = finder.find("police academy 2: their first assignment, schindler's list")
    assert [TITLES[m.item] for m in ms] == [
        "Police Academy 2: Their First Assignment (1985)",
        "Schindler's List (1993)",
    ]
    assert finder.find("Psycho (2005)") == []  # a year the catalog does not have: another film
    pop = np.zeros(len(TITLES))
    pop[2] = 10.0
    (m,) = MentionFinder(cat, popularity=pop).find("Psycho")
    assert TITLES[m.item] == "Psycho (1998)"  # the more popular one first when ambiguous


def test_mention_finder_on_movielens_is_fast(ml_small):
    import time

    finder = MentionFinder(ml_small.catalog, popularity=ml_small.item_popularity())
    titles = ml_small.catalog.titles()
    (m,) = finder.find("like Super Troopers (2001)")
    assert titles[m.item] == "Super Troopers (2001)" and m.span == (5, 26)
    text = "Hi! I'm looking for something like The Matrix or Police Academy (1984), no horror please " * 4
    t0 = time.perf_counter()
    for _ in range(200):
        ms = finder.find(text)
    per_call_ms = (time.perf_counter() - t0) / 200 * 1000
    assert {titles[m.item] for m in ms} >= {"Matrix, The (1999)", "Police Academy (1984)"}
    assert per_call_ms < 5


# ---------------------------------------------------------------------- conv-full
@pytest.fixture()
def tiny(tmp_path):
    turns = [
        # A mentioned before; targets B (new) and A (mentioned: a miss); "Comedy" is not a movie
        _turn("d1", 1, rec=(2, 1), prev=(1, 9)),
        # the 2017 "It" mentioned; the 1990 "It" is the target: mentioned before by name, not by id
        _turn("d2", 1, rec=(7,), prev=(6,)),
    ]
    return load_conversations(_write(tmp_path / "tiny", turns))


def test_conv_full_pessimistic_ties_and_earlier_mentions(tiny):
    #                   A    B    C    D    E   It17 It90
    scores = np.array([[5.0, 3.0, 3.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 2.0]])
    pt = conv_full(scores, tiny)
    assert pt.columns[:6] == ["turn", "dialog_id", "position", "target", "condition", "rank"]
    b, a, it90 = pt.row(0, named=True), pt.row(1, named=True), pt.row(2, named=True)
    # B ties with C: ranked below it (A, the top score, is removed as mentioned before)
    assert (b["condition"], b["rank"], b["recall@1"], b["recall@5"]) == ("rec", 1, 0.0, 1.0)
    assert b["ndcg@10"] == pytest.approx(1 / np.log2(3)) and b["mrr@10"] == pytest.approx(0.5)
    assert a["condition"] == "dis" and a["rank"] is None and a["recall@20"] == 0.0 and a["ndcg@10"] == 0.0
    assert it90["condition"] == "dis" and it90["recall@20"] == 0.0  # by name (as published)
    by_id = conv_full(scores, tiny, match="id")
    assert by_id["condition"].to_list() == ["rec", "dis", "rec"]
    assert by_id.row(2, named=True)["rank"] == 0  # It (1990) is first once It (2017) is removed
    assert aggregate(pt)["recall@5"] == pytest.approx(1 / 3) and aggregate(pt, "rec")["n"] == 1
    # a constant scorer earns nothing: every target ties below every other candidate
    flat = conv_full(lambda turns: np.zeros((len(turns), 7)), tiny, match="id")
    assert flat["recall@5"].sum() == 0 and flat.row(0, named=True)["rank"] == 5
    with pytest.raises(ValueError, match="NaN"):
        conv_full(np.full((2, 7), np.nan), tiny)
    with pytest.raises(ValueError, match="shape"):
        conv_full(np.zeros((2, 3)), tiny)


def test_conv_full_name_units_score_by_best_member(tiny):
    # the two "It" films are one unit by name: an unrelated target still sees one competitor
    scores = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 5.0, 4.0], [0.0] * 7])
    row = conv_full(scores, tiny).row(0, named=True)
    assert row["rank"] == 1  # below the "It" unit only (not below both Its)
    assert conv_full(scores, tiny, match="id").row(0, named=True)["rank"] == 2


# ---------------------------------------------------------------------- references
def test_gpt4_published_figures_from_its_per_target_rows():
    ref = load_reference(reference_path(REFERENCE, "gpt-4"))
    assert ref.per_target.height == 4778
    a = aggregate(ref.per_target)
    assert round(a["recall@10"], 4) == 0.1802 and round(a["ndcg@10"], 4) == 0.1035
    assert (round(a["recall@1"], 4), round(a["recall@5"], 4), round(a["recall@20"], 4)) == (0.0452, 0.1254, 0.2401)
    new = aggregate(ref.per_target, "rec")
    assert new["n"] == 4288 and (round(new["recall@10"], 4), round(new["ndcg@10"], 4)) == (0.2008, 0.1153)
    # the same means and standard errors as the published summary file
    pub = pl.read_csv(REFERENCE / "gpt-4_summary.csv")
    s = summary(ref.per_target)
    for condition, key in (("all", "all"), ("recommendation", "rec")):
        p = pub.filter(pl.col("condition") == condition).row(0, named=True)
        for metric in ("recall@10", "ndcg@10", "mrr@10", "recall@20"):
            assert s[key][metric] == pytest.approx(p[f"{metric}_mean"], abs=1e-12)
            assert s[key][f"{metric}_se"] == pytest.approx(p[f"{metric}_se"], rel=1e-9)


@pytest.mark.parametrize(
    ("model", "r10"), [("gpt-3.5-turbo", 0.1643), ("vicuna-13b", 0.1080), ("baize-v2-13b", 0.1293)]
)
def test_other_published_figures(model, r10):
    assert round(aggregate(load_reference(reference_path(REFERENCE, model)).per_target)["recall@10"], 4) == r10


def test_reference_aligns_with_the_sample(conv):
    ref = load_reference(reference_path(REFERENCE, "gpt-4"), conv)
    assert ref.per_target.height == 202 and ref.outside_rows == 4778 - 202 and ref.reordered_turns == 0
    joined = ref.per_target.join(conv.targets, on=["turn", "position"], suffix="_data")
    assert joined.height == 202
    assert (joined["target"] == joined["target_data"]).all() and (joined["condition"] == joined["condition_data"]).all()
    assert (ref.per_target.filter(pl.col("condition") == "dis")["recall@20"] == 0).all()


def test_bad_reference_files(tmp_path, conv):
    bad = tmp_path / "x_per_target.csv"
    bad.write_text("idx,condition\n0,rec\n")
    with pytest.raises(DataError, match="missing column"):
        load_reference(bad)
    rows = pl.read_csv(reference_path(REFERENCE, "gpt-4")).head(3)
    rows.with_columns(pl.Series("condition", ["rec", "new", "rec"])).write_csv(bad)
    with pytest.raises(DataError, match="line 3: condition must be 'rec' or 'dis'"):
        load_reference(bad)
    rows.with_columns(pl.Series("condition", ["rec", "rec", "rec"])).write_csv(bad)  # idx 1 has a 'dis' target
    with pytest.raises(DataError, match="idx 1 has 2 'rec' row"):
        load_reference(bad, conv)


# ---------------------------------------------------------------------- paired comparison
def test_paired_comparison_sanity(conv):
    ref = load_reference(reference_path(REFERENCE, "gpt-4"), conv).per_target
    same = compare_paired(ref, ref)
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    better = ref.with_columns(pl.lit(1.0).alias("recall@10"))
    c = compare_paired(ref, better, n_perm=2000)
    assert c.delta == pytest.approx(1 - ref["recall@10"].mean()) and c.ci_low > 0 and c.p_value < 0.01
    # a subset of targets: only the new ones
    sub = compare_paired(ref, better, targets=conv.targets.filter(pl.col("condition") == "rec"))
    assert sub.n == 167


def test_clustered_bootstrap_is_wider_than_per_target_when_dialogs_cluster():
    from coachrec.metrics.stats import clustered_compare, paired_bootstrap

    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(50), 10)
    effect = rng.normal(0, 1, 50)[clusters]  # whole dialogs move together
    a, b = np.zeros(500), effect + rng.normal(0, 0.1, 500)
    c = clustered_compare(a, b, clusters, n_perm=2000)
    lo, hi = paired_bootstrap(a, b)
    assert (c.ci_high - c.ci_low) > 2 * (hi - lo)
    with pytest.raises(ValueError, match="cluster per value"):
        clustered_compare(a, b, clusters[:10])


# ---------------------------------------------------------------------- learned and zero-shot scorers
def test_cross_fit_scores_every_target_with_a_model_that_never_saw_its_dialog(conv):
    from coachrec.models.conversational import CoMention, DialogPopularity, cross_fit

    seen: list[set[str]] = []

    def fit(c, train):
        seen.append(set(c.subset(train).turns["dialog_id"].to_list()))
        return CoMention().fit(c, train)

    pt, models = cross_fit(conv, fit, n_folds=2, seed=0)
    assert pt.height == conv.n_targets and len(models) == 2
    folds = conv.folds(2, 0)
    for k in range(2):
        held = set(conv.turns.filter(pl.Series(folds == k))["dialog_id"].to_list())
        assert not held & seen[k]
        assert set(pt.filter(pl.col("fold") == k)["dialog_id"].to_list()) == held
    pop, _ = cross_fit(conv, lambda c, tr: DialogPopularity().fit(c, tr))
    # co-mentions add to popularity even on 25 training dialogs
    assert aggregate(pt)["recall@20"] >= aggregate(pop)["recall@20"]


def test_co_mention_learns_what_follows_a_mention(tmp_path):
    from coachrec.models.conversational import CoMention

    # in training, whoever mentions A is recommended C; E is popular on its own
    turns = [_turn(f"d{i}", 1, rec=(3,), prev=(1,)) for i in range(5)] + [
        _turn(f"e{i}", 1, rec=(5,), prev=(4,)) for i in range(8)
    ]
    conv = load_conversations(_write(tmp_path / "cm", turns))
    model = CoMention(prior=0.01).fit(conv)
    s = model.score_mentions([[1], [], [999]], [[0], [], [0]])
    cols = conv.column([3, 5])
    assert s[0, cols[0]] > s[0, cols[1]]  # after A: C
    assert s[1, cols[1]] > s[1, cols[0]]  # nothing mentioned: the popular E
    assert np.array_equal(s[1], s[2])  # an unknown entity is ignored
    old = model.score_mentions([[1]], [[20]])
    assert old[0, cols[0]] < s[0, cols[0]]  # an old mention counts less


def test_mention_knn_zero_shot_over_movielens(conv, ml_small):
    from coachrec.models import create
    from coachrec.models.conversational import MentionKNN

    links = link_conversations(conv, ml_small.catalog)
    knn = MentionKNN(create("itemknn").fit(ml_small), links)
    scores = knn.scorer(conv)(np.array([0, 1]))
    assert scores.shape == (2, conv.n_candidates)
    linked = links.item >= 0
    assert scores[:, ~linked].max() < scores[:, linked].min()  # unlinked candidates rank last
    hist = knn.histories(conv, np.array([1]))[0]
    assert "Super Troopers (2001)" in ml_small.catalog.titles(hist)
    pt = conv_full(knn.scorer(conv), conv)
    assert pt.height == conv.n_targets and 0 <= aggregate(pt)["recall@20"] < 0.5
