"""`BaseRecommender`: the one contract every coachrec model follows, and the base class that
gives every model the same edges.

A model is fitted on a `Dataset`, scores all items for a batch of histories, recommends
for a known user or an anonymous history of raw item ids, and saves to a folder that
carries its class, config, coachrec version and what it was fitted on with the weights.
Its settings are one typed dataclass, `Config` (`get_params()` returns it as a dict).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

import coachrec
from coachrec.data import Dataset, EvalTask, IdMap

FORMAT_VERSION = 1


class SettingError(TypeError, ValueError):
    """A model was given a setting its `Config` does not have (a TypeError, like any unknown
    keyword argument, and a ValueError, like any other bad input)."""


@dataclass
class Recommendations:
    """Top-k items for one request: raw ids, their indices and scores, best first."""

    items: list[str]
    item_idx: np.ndarray
    scores: np.ndarray
    ignored_history: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first; ties go to the lower item index."""
    n_items = scores.shape[-1]
    k = min(k, n_items)
    if k <= 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    part = (
        np.argpartition(-scores, k - 1, axis=-1)[..., :k]
        if k < n_items
        else np.broadcast_to(np.arange(n_items), scores.shape).copy()
    )
    vals = np.take_along_axis(scores, part, axis=-1)
    if k < n_items:  # argpartition keeps any of the items tied at the k-th score: keep the lowest
        kth = vals.min(axis=-1, keepdims=True)
        short = np.flatnonzero((scores == kth).sum(axis=-1) > (vals == kth).sum(axis=-1))
        if len(short):
            rows, part, vals = scores.reshape(-1, n_items), part.reshape(-1, k), vals.reshape(-1, k)
            for r in short.tolist():
                above = np.flatnonzero(rows[r] > vals[r].min())
                part[r] = np.concatenate([above, np.flatnonzero(rows[r] == vals[r].min())[: k - len(above)]])
                vals[r] = rows[r][part[r]]
            part, vals = part.reshape(*scores.shape[:-1], k), vals.reshape(*scores.shape[:-1], k)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


@dataclass
class NoConfig:
    """The settings of a model that has none."""


class BaseRecommender:
    """What every coachrec model offers, and the shared fit/score/recommend/save/load logic.

    Public: `fit(data, valid=None)`, `score(histories | users=...)`, `recommend(user,
    history=..., k=...)`, `recommend_batch`, `save(path)` / `coachrec.models.load(path)`,
    `get_params()`, and the attributes `config`, `items`, `users`, `fit_info` (what it was
    fitted on: `dataset`, `fit_on`, ...), `on_epoch` and `checkpoint` (models that train in
    epochs). Subclasses declare `name` and a `Config` dataclass and implement `_fit`,
    `_score`, `_state` and `_set_state`."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoConfig
    #: settings of earlier versions in saved configs: old name -> new name (None: dropped)
    renamed_settings: ClassVar[dict[str, str | None]] = {}

    def __init__(self, config: Any = None, **overrides: Any):
        self._check_settings(overrides)
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.items: IdMap | None = None
        self.users: IdMap | None = None
        self._hist_indptr = np.zeros(1, dtype=np.int64)
        self._hist_items = np.zeros(0, dtype=np.int64)
        self.fit_info: dict[str, Any] = {}
        self._valid: EvalTask | None = None
        #: called after every training epoch of models that train in epochs, as
        #: `on_epoch(epoch, mean loss, seconds of that epoch, events predicted)` (progress bars, timing)
        self.on_epoch: Callable[[int, float, float, int], None] | None = None
        #: a folder the model saves itself to after every training epoch (models that train
        #: in epochs), so a long run can be evaluated part-way; None = no checkpoints
        self.checkpoint: str | Path | None = None

    # ------------------------------------------------------------------ settings
    @classmethod
    def settings(cls) -> list[str]:
        """The names of this model's settings (its `Config` fields)."""
        return [f.name for f in dataclasses.fields(cls.Config)] if dataclasses.is_dataclass(cls.Config) else []

    @classmethod
    def _check_settings(cls, given: dict[str, Any]) -> None:
        unknown = sorted(set(given) - set(cls.settings()))
        if unknown:
            raise SettingError(f"{cls.name}: unknown setting(s) {unknown}; valid settings are {sorted(cls.settings())}")

    @classmethod
    def config_from_dict(cls, values: dict[str, Any]) -> Any:
        """A `Config` from saved settings, renaming or dropping those of earlier versions
        (`renamed_settings`)."""
        values = dict(values)
        for old, new in cls.renamed_settings.items():
            if old in values:
                value = values.pop(old)
                if new is not None:
                    values.setdefault(new, value)
        cls._check_settings(values)
        return cls.Config(**values)

    def get_params(self) -> dict[str, Any]:
        """The settings as a dict (scikit-learn style): `create(name, **m.get_params())` is an
        unfitted copy."""
        cfg = self.config
        return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else {}

    # ------------------------------------------------------------------ subclass hooks
    def _fit(self, data: Dataset) -> None:
        raise NotImplementedError

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        """Scores of every item (float32, shape (len(histories), n_items))."""
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- models made of fitted parts (hybrid, blend) save each part under a key prefix ----------
    @staticmethod
    def _part_state(prefix: str, part: BaseRecommender) -> dict[str, np.ndarray]:
        """`part`'s class, settings and state under `prefix/` keys, for `_restore_part`."""
        meta = {"class": f"{type(part).__module__}:{type(part).__qualname__}", "config": part.get_params()}
        state = {f"{prefix}/{k}": v for k, v in part._state().items()}
        state[f"{prefix}/__meta"] = np.asarray(json.dumps(meta))
        return state

    def _restore_part(self, state: dict[str, np.ndarray], prefix: str) -> BaseRecommender:
        """The part `_part_state(prefix, ...)` saved, sharing this model's ids and histories."""
        meta = json.loads(str(state[f"{prefix}/__meta"]))
        module, _, qual = meta["class"].partition(":")
        cls = getattr(importlib.import_module(module), qual)
        part: BaseRecommender = cls(cls.config_from_dict(meta["config"]))
        part.items, part.users = self.items, self.users
        part._hist_indptr, part._hist_items = self._hist_indptr, self._hist_items
        head = f"{prefix}/"
        part._set_state({k[len(head) :]: v for k, v in state.items() if k.startswith(head) and k != f"{head}__meta"})
        return part

    # ------------------------------------------------------------------ public API
    @property
    def n_items(self) -> int:
        self._check_fitted()
        assert self.items is not None
        return len(self.items)

    def fit(self, data: Dataset, valid: EvalTask | None = None) -> Self:
        """Fit on `data`. Models that stop early (SASRec, RUM, the hybrid's sequential part)
        read `valid` (e.g. `split.task("valid")`) as `self._valid` during `_fit`; others ignore it."""
        if len(data) == 0:
            raise ValueError(f"{self.name}: cannot fit on an empty dataset")
        t0 = time.perf_counter()
        self.items, self.users = data.items, data.users
        self._hist_indptr, self._hist_items = data.sequences()
        self._valid = valid
        self.fit_info = self._data_info(data)  # already there for checkpoints written during training
        try:
            self._fit(data)
        finally:
            self._valid = None
        self.fit_info = self._data_info(data) | {"seconds": round(time.perf_counter() - t0, 3)}
        return self

    @staticmethod
    def _data_info(data: Dataset) -> dict[str, Any]:
        """What a model fitted on `data` records: `fit_on` is the split part ("train",
        "train+valid") or "all" (see `Dataset.fit_on`); `split` the split kind, if any."""
        info: dict[str, Any] = {"dataset": data.name, "fit_on": data.fit_on}
        if "split" in data.info:
            info["split"] = data.info["split"]
        return info | {"events": len(data), "users": data.n_users, "items": data.n_items}

    def _end_epoch(self, epoch: int, loss: float, seconds: float, events: int) -> None:
        """Called by the training loop (`coachrec.models.training`) after every epoch: write
        the checkpoint, if asked for, then report to `on_epoch`."""
        if self.checkpoint is not None:
            self.fit_info.update(epochs_done=epoch, checkpoint=True)
            self.save(self.checkpoint)
        if self.on_epoch is not None:
            self.on_epoch(epoch, loss, seconds, events)

    def _check_fitted(self) -> None:
        if self.items is None:
            raise RuntimeError(f"{self.name}: not fitted; call fit(dataset) or load a saved model")

    def user_history(self, user: int) -> np.ndarray:
        return self._hist_items[self._hist_indptr[user] : self._hist_indptr[user + 1]]

    def score(self, histories: Sequence[np.ndarray] | None = None, *, users: Sequence[int] | None = None) -> np.ndarray:
        """Scores of all items for each history (item indices, oldest first), or for known
        user indices using their training history."""
        self._check_fitted()
        if histories is None:
            if users is None:
                raise ValueError("score: pass histories or users")
            histories = [self.user_history(int(u)) for u in users]
        hs = [np.asarray(h, dtype=np.int64) for h in histories]
        for h in hs:
            if len(h) and (h.min() < 0 or h.max() >= self.n_items):
                raise IndexError(f"{self.name}: history holds item index outside [0, {self.n_items})")
        out = self._score(hs)
        if out.shape != (len(hs), self.n_items):
            raise AssertionError(f"{self.name}._score returned shape {out.shape}, expected {(len(hs), self.n_items)}")
        return out

    def recommend_batch(
        self, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for many histories at once."""
        scores = self.score(histories)
        if exclude_seen:
            rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
            cols = (
                np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
                if len(histories)
                else np.zeros(0, np.int64)
            )
            scores[rows, cols] = -np.inf
        idx = top_k(scores, k)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def recommend(
        self,
        user: str | None = None,
        *,
        history: Sequence[str] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
    ) -> Recommendations:
        """Top-k for a known user (raw id), an anonymous `history` of raw item ids, or both
        (the history is appended to the user's). Unknown history items are ignored and listed."""
        self._check_fitted()
        hist = np.zeros(0, dtype=np.int64)
        if user is not None:
            if self.users is None or user not in self.users:
                if history is None:
                    raise KeyError(f"{self.name}: unknown user {user!r}; pass history=[...] for a new user")
            else:
                hist = self.user_history(self.users.index(user))
        ignored: list[str] = []
        if history is not None:
            assert self.items is not None
            enc = self.items.encode(list(history), unknown="mask")
            ignored = [str(h) for h, e in zip(history, enc, strict=False) if e < 0]
            hist = np.concatenate([hist, enc[enc >= 0]])
        idx, sc = self.recommend_batch([hist], k=k, exclude_seen=exclude_seen)
        keep = np.isfinite(sc[0])
        assert self.items is not None
        ids = self.items.decode(idx[0][keep])
        return Recommendations(
            items=[str(i) for i in ids], item_idx=idx[0][keep], scores=sc[0][keep], ignored_history=ignored
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write `model.json` (class, config, versions, fit info with `fit_on`) and `state.npz`
        to a folder."""
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "format_version": FORMAT_VERSION,
            "coachrec_version": coachrec.__version__,
            "config": self.get_params(),
            "fit_info": self.fit_info,
        }
        state = dict(self._state())
        assert self.items is not None
        state["__items"] = np.asarray(self.items.ids.astype(str))
        state["__users"] = np.asarray((self.users.ids if self.users is not None else np.zeros(0, object)).astype(str))
        state["__hist_indptr"] = self._hist_indptr
        state["__hist_items"] = self._hist_items
        # allow_pickle=True is savez's default, passed so mypy does not bind **state to it
        np.savez(out / "state.npz", allow_pickle=True, **state)
        (out / "model.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> BaseRecommender:
        return load(path)

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], state: dict[str, np.ndarray]) -> BaseRecommender:
        model = cls(cls.config_from_dict(meta["config"]))
        model.items = IdMap(state.pop("__items").tolist())
        model.users = IdMap(state.pop("__users").tolist())
        model._hist_indptr = state.pop("__hist_indptr")
        model._hist_items = state.pop("__hist_items")
        model.fit_info = meta.get("fit_info", {})
        model._set_state(state)
        return model


def load(path: str | Path) -> BaseRecommender:
    """Load any saved coachrec model from its folder."""
    folder = Path(path)
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: not a saved coachrec model (no model.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{folder}: saved with format {meta['format_version']}, newer than this coachrec ({FORMAT_VERSION})"
        )
    module, _, qual = meta["class"].partition(":")
    cls: type[BaseRecommender] = getattr(importlib.import_module(module), qual)
    with np.load(folder / "state.npz", allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    return cls._from_saved(meta, state)
