"""Loaders, id maps, duplicates, sessions and splits."""

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coachrec.data import (
    DataError,
    Dataset,
    Event,
    IdMap,
    by_session,
    leave_one_out,
    load,
    load_csv,
    load_sequences,
    sessionize,
    temporal,
)


def test_bundled_movielens(ml_small):
    assert len(ml_small) == 100_836
    assert ml_small.n_users == 610
    assert ml_small.n_items == 9_742  # catalog items without ratings keep an index
    assert ml_small.timestamps
    text = ml_small.catalog.texts([ml_small.items.index("1")])[0]
    assert text.startswith("Toy Story (1995). Genres: Adventure, Animation")
    assert "pixar" in text  # tags join the item text
    assert ml_small.catalog.attribute("year")[ml_small.items.index("1")] == 1995
    # events are sorted by user then time
    ev = ml_small.events
    assert (
        ev.select(
            ((pl.col("user").diff() > 0) | ((pl.col("user").diff() == 0) & (pl.col("time").diff() >= 0))).all()
        ).item()
        is True
    )


def test_beauty_sequences(beauty):
    # the shipped sample (tests/data/amazon-beauty, first 2,000 users); the full file (198,502
    # events, 22,363 users, 12,101 items) is the benchmarks' business
    import hashlib
    from pathlib import Path

    sample = Path(__file__).parent / "data" / "amazon-beauty" / "user_sequence.txt"
    assert (
        hashlib.sha256(sample.read_bytes()).hexdigest()
        == "ca62a8470f21703c9854a830af7791d9fdaad3cb65e62ab18032901e1e368cd2"
    )
    assert (len(beauty), beauty.n_users, beauty.n_items) == (24_226, 2_000, 8_017)
    assert beauty.name == "beauty" and beauty.info["format"] == "sequences"
    first = beauty.users.index("A1YJEY40YUW4SE")  # line 1: 5 items, in file order
    seq = beauty.events.filter(pl.col("user") == first).sort("time")
    assert [beauty.items.ids[i] for i in seq["item"]] == [
        "B004756YJA",
        "B004ZT0SSG",
        "B0020YLEYK",
        "7806397051",
        "B002WLWX82",
    ]
    assert not beauty.timestamps
    with pytest.raises(ValueError, match="no timestamps"):
        sessionize(beauty)
    from coachrec import datasets

    with pytest.raises(DataError, match="not found"):  # the full file is not for tests (conftest hides ../shared)
        datasets.load("beauty")


def test_movielens_100k_and_1m_formats(tmp_path):
    k100 = tmp_path / "ml-100k"
    k100.mkdir()
    (k100 / "u.data").write_text("1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250000\n")
    g = "|".join(["0"] * 19)
    (k100 / "u.item").write_text(
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{g}\n20|GoldenEye (1995)|01-Jan-1995||http://x|0|1|"
        + "|".join(["0"] * 17)
        + "\n"
    )
    ds = load(k100)
    assert ds.info["format"] == "ml-100k" and len(ds) == 3
    assert ds.catalog.frame.filter(pl.col("item") == "20")["genres"].to_list() == [["Action"]]
    m1 = tmp_path / "ml-1m"
    m1.mkdir()
    (m1 / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (m1 / "movies.dat").write_bytes(
        (
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
            "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        ).encode("latin-1")
    )
    ds = load(m1)
    assert ds.info["format"] == "ml-1m" and ds.catalog.attribute("year").tolist() == [1996, 1975]
    (m1 / "ratings.dat").write_text("1::1193::5\n")
    with pytest.raises(DataError, match=r"ratings.dat: line 1 has 3 fields"):
        load(m1)


def test_csv_with_column_mapping_and_errors(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("uid,sku,ts\nu1,a,2024-01-01T10:00:00\nu1,b,2024-01-01T10:05:00\nu2,a,2024-01-02T00:00:00\n")
    ds = load_csv(p, columns={"user": "uid", "item": "sku", "time": "ts"})
    assert len(ds) == 3 and ds.timestamps
    assert ds.to_pandas()["time"].tolist()[0] == 1704103200
    with pytest.raises(DataError, match=r"required column 'user' \(for 'user'\) not found.*uid"):
        load_csv(p)
    with pytest.raises(DataError, match=r"column 'nope' \(mapped to 'time'\) not found"):
        load_csv(p, columns={"user": "uid", "item": "sku", "time": "nope"})
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,time\nu1,a,2024-01-01\nu1,b,yesterday\n")
    with pytest.raises(DataError, match=r"bad.csv: column 'time' row 2: cannot parse timestamp 'yesterday'"):
        load_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("user,item\n")
    with pytest.raises(DataError, match="no events"):
        load_csv(empty)
    badval = tmp_path / "badval.csv"
    badval.write_text("user,item,rating\nu1,a,4\nu1,b,great\n")
    with pytest.raises(DataError, match=r"column 'rating' row 2"):
        load_csv(badval, columns={"value": "rating"})


def test_unknown_format_and_missing(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(DataError, match="unknown data format"):
        load(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nothing")
    with pytest.raises(DataError, match="unknown file type"):
        load(tmp_path / "a.json")


def test_sequence_file_errors(tmp_path):
    p = tmp_path / "user_sequence.txt"
    p.write_text("u1 a b c\nu2\n")
    with pytest.raises(DataError, match=r"line 2 has a user id but no items"):
        load_sequences(p)


def test_frames_parquet_and_round_trip(tmp_path):
    pdf = pd.DataFrame({"u": ["x", "x", "y"], "i": [1, 2, 1], "t": [3, 1, 2], "r": [5.0, 3.0, 4.0]})
    cols = {"user": "u", "item": "i", "time": "t", "value": "r"}
    ds = Dataset.from_frame(pdf, columns=cols)
    assert ds.histories()[ds.users.index("x")].tolist() == [ds.items.index("2"), ds.items.index("1")]
    assert Dataset.from_frame(pl.from_pandas(pdf), columns=cols).events.equals(ds.events)
    back = ds.to_pandas()
    assert set(back["user"]) == {"x", "y"} and back["value"].dtype == np.float32
    pdf.to_parquet(tmp_path / "e.parquet")
    assert load(tmp_path / "e.parquet", columns=cols).events.equals(ds.events)
    assert ds.to_arrow().num_rows == 3


def test_duplicates_are_explicit():
    evs = [Event("u", "a", 1), Event("u", "a", 1), Event("u", "a", 5), Event("u", "b", 2)]
    assert len(Dataset.from_events(evs)) == 4
    ds = Dataset.from_events(evs, duplicates="drop_exact")
    assert len(ds) == 3 and ds.info["duplicates"]["removed"] == 1
    assert len(Dataset.from_events(evs, duplicates="first")) == 2
    last = Dataset.from_events(evs, duplicates="last")
    assert sorted(last.events["time"].to_list()) == [2, 5]
    with pytest.raises(DataError, match="1 exact duplicate"):
        Dataset.from_events(evs, duplicates="error")


def test_idmap_stable_and_unknown_ids():
    m = IdMap.build(["10", "9", "100"])
    assert m.ids.tolist() == ["9", "10", "100"]  # numeric order
    assert m.encode(["100", "zzz"], unknown="mask").tolist() == [2, -1]
    assert m.encode(["100", "zzz"], unknown="drop").tolist() == [2]
    with pytest.raises(KeyError, match="unknown id"):
        m.encode(["zzz"])
    m2 = m.extend(["5", "9"])
    assert m2.ids.tolist() == ["9", "10", "100", "5"] and m2.index("10") == 1


def test_sessionize():
    evs = [Event("u", "a", 0), Event("u", "b", 100), Event("u", "c", 100 + 1801), Event("v", "a", 50)]
    s = sessionize(Dataset.from_events(evs), gap_seconds=1800)
    assert s.events["session"].to_list() == [0, 0, 1, 2]


@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 15), st.integers(0, 1000)), min_size=1, max_size=120))
@settings(max_examples=60, deadline=None)
def test_splits_never_leak(rows):
    ds = Dataset.from_events([Event(f"u{u}", f"i{i}", t) for u, i, t in rows])
    key = lambda d: d.events.select("user", "item", "time").rows()  # noqa: E731
    loo = leave_one_out(ds)
    assert sorted(key(loo.train) + key(loo.valid) + key(loo.test)) == sorted(key(ds))
    tr = loo.train.events.group_by("user").agg(pl.col("time").max().alias("tmax"))
    te = loo.test.events.join(tr, on="user")
    assert (te["time"] >= te["tmax"]).all()  # no test event precedes the user's training events
    assert loo.test.events["user"].n_unique() == len(loo.test)  # one test event per user
    if len({t for *_, t in rows}) > 3:
        tmp = temporal(ds, 0.25, 0.25)
        if len(tmp.train) and len(tmp.test):
            assert tmp.train.events["time"].max() < tmp.test.events["time"].min()
        assert len(tmp.train) + len(tmp.valid) + len(tmp.test) == len(ds)


def test_by_session_split(ml_small):
    s = by_session(ml_small)
    tr = set(s.train.events["session"].unique().to_list())
    te = set(s.test.events["session"].unique().to_list())
    assert not tr & te
    assert len(s.train) + len(s.valid) + len(s.test) == len(ml_small)
    task = s.task("test")
    assert len(task.users) == len(task.targets) == len(task.histories)


def _tied_pairs(ds):
    """(earlier, later) raw movie ids of consecutive events of one user at the same second."""
    ev = ds.events
    u, t = ev["user"].to_numpy(), ev["time"].to_numpy()
    ids = ds.items.decode(ev["item"].to_numpy()).astype(np.int64)
    same = (u[1:] == u[:-1]) & (t[1:] == t[:-1])
    return ids[:-1][same], ids[1:][same]


def test_tied_timestamps_are_ordered_by_a_seeded_hash_not_by_id(ml_small):
    # ml-latest-small lists each user's ratings by movie id and stores seconds: 15,790 of the
    # consecutive pairs tie; in file order the later id would always be the larger one
    a, b = _tied_pairs(ml_small)
    assert len(a) == 15_790
    assert 0.47 < (b > a).mean() < 0.53
    from coachrec import datasets

    again = datasets.load("ml-latest-small")
    assert again.events.equals(ml_small.events)  # deterministic across loads
    # splits and concat re-sort with the same key: the order survives them
    split = leave_one_out(ml_small)
    assert split.train.concat(split.valid).concat(split.test).events.equals(ml_small.events)
    # the users whose test and validation events share a second: test = larger id about half the time
    va = split.valid.events.select("user", pl.col("item").alias("v"), pl.col("time").alias("tv"))
    both = split.test.events.join(va, on="user").filter(pl.col("time") == pl.col("tv"))
    assert both.height == 94
    larger = ml_small.items.decode(both["item"].to_numpy()).astype(int) > ml_small.items.decode(
        both["v"].to_numpy()
    ).astype(int)
    assert 0.3 < larger.mean() < 0.7
    # another seed, another order of the ties (and only of the ties)
    other = load(ml_small.info["source"].rsplit("/", 1)[0], name="ml-latest-small", tie_seed=1)
    assert not other.events.equals(ml_small.events)
    assert other.events.select("user", "time").equals(ml_small.events.select("user", "time"))


def test_split_parts_know_what_they_are():
    ds = Dataset.from_events([Event(f"u{u}", f"i{i}", t) for u in range(4) for t, i in enumerate(range(u, u + 5))])
    split = leave_one_out(ds)
    assert ds.fit_on == "all"
    assert (split.train.fit_on, split.valid.fit_on, split.test.fit_on) == ("train", "valid", "test")
    assert split.fit_data("train+valid").fit_on == "train+valid" and split.train.info["split"] == "leave-one-out"
    assert split.train.concat(ds).fit_on == "all"
    assert temporal(ds, 0.25, 0.25).train.info["split"] == "temporal"


def test_tags_are_cut_at_each_users_first_held_out_event(ml_small):
    tags = ml_small.catalog.tag_events
    assert set(tags.columns) == {"user", "item", "tag", "time"} and tags.height == 3_683
    split = leave_one_out(ml_small)
    kept = split.train.catalog.tag_events
    assert split.valid.catalog is split.train.catalog is split.test.catalog
    held = (
        pl.concat([split.valid.to_polars(), split.test.to_polars()])
        .group_by("user")
        .agg(pl.col("time").min().alias("first_held"))
    )
    late = kept.join(held, on="user").filter(pl.col("time") >= pl.col("first_held"))
    assert late.height == 0  # no tag at or after the user's first held-out event
    # 7 test users tagged their own test movie; every one of those tags given at or after
    # rating it is gone, and a tag nobody else gave that movie leaves its text
    test = split.test.to_polars().select("user", "item", pl.col("time").alias("rated"))
    own = tags.join(test, on=["user", "item"])
    assert own["user"].n_unique() == 7
    after = own.filter(pl.col("time") >= pl.col("rated"))
    assert after.height > 0 and after.join(kept, on=["user", "item", "tag", "time"]).height == 0
    only_theirs = after.join(tags.group_by("item", "tag").agg(pl.len().alias("n")), on=["item", "tag"]).filter(
        pl.col("n") == 1
    )
    assert only_theirs.height > 0
    for item, tag in only_theirs.select("item", "tag").rows():
        idx = [ml_small.items.index(item)]
        assert tag in ml_small.catalog.frame["tags"][idx[0]].to_list()
        assert tag not in split.train.catalog.frame["tags"][idx[0]].to_list()
        text = split.train.catalog.texts(idx)[0]
        assert tag not in (text.split(". Tags: ")[1].split(", ") if ". Tags: " in text else [])
    # the full data keeps every tag; a global cut (temporal) keeps only earlier ones
    cut = int(temporal(ml_small, 0.1, 0.1).valid.events["time"].min())
    assert temporal(ml_small, 0.1, 0.1).train.catalog.tag_events["time"].max() < cut
