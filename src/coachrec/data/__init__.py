"""Events, catalogs and datasets in columnar form; loaders, sessions and splits."""

from coachrec.data.catalog import Catalog
from coachrec.data.dataset import Dataset, Event
from coachrec.data.errors import DataError
from coachrec.data.idmap import IdMap
from coachrec.data.loaders import load, load_csv, load_movielens, load_parquet, load_sequences
from coachrec.data.sessions import sessionize
from coachrec.data.splits import EvalTask, Split, by_session, leave_one_out, temporal

__all__ = [
    "Catalog", "DataError", "Dataset", "EvalTask", "Event", "IdMap", "Split", "by_session", "leave_one_out",
    "load", "load_csv", "load_movielens", "load_parquet", "load_sequences", "sessionize", "temporal",
]  # fmt: skip
