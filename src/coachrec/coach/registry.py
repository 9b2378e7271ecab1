"""The model registry: every coached stack version, the champion pointer, history, rollback.

Layout (JSON and saved model folders, under `$COACHREC_REGISTRY`, else `.coachrec/registry` in
the working directory, beside the default trace store):

    registry.json              {"champion": "v0003", "events": [...]}   (append-only events)
    versions/v0003/version.json   config, data, judge version, metrics, gate report, parent
    versions/v0003/stack/         the saved `serve.Stack` (models, pipeline settings, ranker)

A version is immutable once registered. `promote` moves the champion pointer (and records the
gate report that allowed it); `rollback` moves it back to the previous champion (or to a named
version) and records why. `coachrec serve` serves the champion when there is one
(`coachrec.app.resolve_stack`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coachrec.serve import Stack


class RegistryError(ValueError):
    """A registry request that cannot be carried out (the message says why)."""


def default_registry_path() -> Path:
    env = os.environ.get("COACHREC_REGISTRY")
    return Path(env) if env else Path(".coachrec") / "registry"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Version:
    id: str
    created: str
    description: str
    dataset: str
    data: dict[str, Any]
    config: dict[str, Any]
    judge_version: str | None = None
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Registry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_path()

    # -- storage ------------------------------------------------------------------------------

    @property
    def _index(self) -> Path:
        return self.root / "registry.json"

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The index, read and written back under an exclusive lock (concurrent coach runs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            tmp = self._index.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n")
            tmp.replace(self._index)

    def _read(self) -> dict[str, Any]:
        if not self._index.exists():
            return {"champion": None, "events": []}
        try:
            state: dict[str, Any] = json.loads(self._index.read_text())
            return state
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self._index} is not valid JSON ({exc}); fix or remove it") from exc

    def _folder(self, version_id: str) -> Path:
        return self.root / "versions" / version_id

    # -- versions -----------------------------------------------------------------------------

    def register(
        self,
        stack: Stack,
        *,
        description: str,
        dataset: str,
        data: dict[str, Any],
        judge_version: str | None = None,
        parent: str | None = None,
        metrics: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        distillation: dict[str, Any] | None = None,
    ) -> Version:
        """Save `stack` as a new immutable version (not champion yet)."""
        with self._locked() as state:
            existing = (
                sorted(p.name for p in (self.root / "versions").glob("v*")) if (self.root / "versions").exists() else []
            )
            version_id = f"v{len(existing) + 1:04d}"
            folder = self._folder(version_id)
            stack.save(folder / "stack")
            config = {
                "models": list(stack.retriever_names),
                "pipeline": dataclasses.asdict(stack.config),
                "ranker": "distilled-student" if stack.ranker else "blend",
                "student": stack.ranker.student.to_dict() if stack.ranker else None,
            }
            v = Version(
                version_id,
                _now(),
                description,
                dataset,
                data,
                config,
                judge_version,
                parent,
                metrics or {},
                gate,
                distillation,
            )
            (folder / "version.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")
            state["events"].append(
                {"time": v.created, "action": "register", "version": version_id, "note": description}
            )
        return v

    def versions(self) -> list[Version]:
        base = self.root / "versions"
        if not base.exists():
            return []
        return [self.version(p.name) for p in sorted(base.glob("v*"))]

    def version(self, version_id: str) -> Version:
        path = self._folder(version_id) / "version.json"
        if not path.exists():
            known = (
                [p.name for p in sorted((self.root / "versions").glob("v*"))]
                if (self.root / "versions").exists()
                else []
            )
            raise RegistryError(f"no version {version_id!r} in {self.root}; known: {known or 'none'}")
        return Version(**json.loads(path.read_text()))

    def load_stack(self, version_id: str) -> Stack:
        self.version(version_id)
        return Stack.load(self._folder(version_id) / "stack")

    def attach_gate(self, version_id: str, gate: dict[str, Any]) -> None:
        """Record the gate report of a version (a gate run is evidence about it, kept with it)."""
        v = self.version(version_id)
        v.gate = gate
        (self._folder(version_id) / "version.json").write_text(json.dumps(v.to_dict(), indent=2) + "\n")

    # -- champion -----------------------------------------------------------------------------

    @property
    def champion(self) -> str | None:
        return self._read().get("champion")

    def events(self) -> list[dict[str, Any]]:
        return list(self._read()["events"])

    def promote(self, version_id: str, *, note: str) -> None:
        self.version(version_id)
        with self._locked() as state:
            state["events"].append(
                {
                    "time": _now(),
                    "action": "promote",
                    "version": version_id,
                    "from": state.get("champion"),
                    "note": note,
                }
            )
            state["champion"] = version_id

    def refuse(self, version_id: str, *, note: str) -> None:
        with self._locked() as state:
            state["events"].append(
                {"time": _now(), "action": "refuse", "version": version_id, "from": state.get("champion"), "note": note}
            )

    def rollback(self, to: str | None = None, *, note: str = "") -> str:
        """Point the champion back at `to`, or at the champion before the current one."""
        with self._locked() as state:
            current = state.get("champion")
            if current is None:
                raise RegistryError(f"no champion in {self.root}: nothing to roll back")
            if to is None:
                lineage = _lineage(state["events"])
                if len(lineage) < 2:
                    raise RegistryError(f"champion {current} has no earlier champion to roll back to")
                to = lineage[-2]
            if not self._folder(to).joinpath("version.json").exists():
                raise RegistryError(f"cannot roll back to {to!r}: no such version in {self.root}")
            state["events"].append({"time": _now(), "action": "rollback", "version": to, "from": current, "note": note})
            state["champion"] = to
        return to


def _lineage(events: list[dict[str, Any]]) -> list[str]:
    """The chain of champions still standing: a promotion pushes, a rollback pops back to its
    target, so rolling back twice walks two champions back rather than undoing the first rollback."""
    chain: list[str] = []
    for e in events:
        if e["action"] == "promote":
            chain.append(e["version"])
        elif e["action"] == "rollback":
            while chain and chain[-1] != e["version"]:
                chain.pop()
            if not chain:
                chain.append(e["version"])
    return chain
