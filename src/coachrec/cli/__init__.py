"""The `coachrec` command line. Each topic lives in its own module as a typer app.

Other distributions add command groups through the `coachrec.cli` entry-point group (the
benchmarks, `pip install -e benchmarks/`, add `coachrec bench`). They are registered lazily:
`coachrec --help` lists them from the installed metadata, and an entry point's module is
imported only when one of its commands runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from coachrec.cli import coach as _coach
from coachrec.cli import dashboard as _dashboard
from coachrec.cli import evaluate as _evaluate
from coachrec.cli import llm_models as _llm_models
from coachrec.cli import monitor as _monitor
from coachrec.cli import quickstart as _quickstart
from coachrec.cli import report_cost as _report_cost
from coachrec.cli import review as _review
from coachrec.cli import serve as _serve
from coachrec.cli import teacher as _teacher
from coachrec.cli import traces as _traces
from coachrec.cli import train as _train
from coachrec.cli import tune as _tune

app = typer.Typer(
    name="coachrec",
    help="Coachable recommender systems: train, serve, trace, judge, coach.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(_llm_models.app, name="models")
app.add_typer(_traces.app, name="traces")

app.command("evaluate")(_evaluate.evaluate)
app.command("train")(_train.train)
app.command("tune")(_tune.tune)
app.command("quickstart")(_quickstart.quickstart)
app.command("serve")(_serve.serve)
app.command("dashboard")(_dashboard.dashboard)
app.command("judge")(_teacher.judge)
app.add_typer(_teacher.report_app, name="report")
_teacher.report_app.command("cost")(_report_cost.report_cost)
app.command("review")(_review.review)
app.add_typer(_review.golden_app, name="golden")
app.command("coach")(_coach.coach)
app.command("gate")(_coach.gate)
app.command("monitor")(_monitor.monitor)

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

PLUGIN_GROUP = "coachrec.cli"
# Groups that belong to the project: listed (and explained when missing) even if not installed.
KNOWN_PLUGINS = {
    "bench": (
        "coachrec-bench",
        "pip install -e benchmarks/",
        "Benchmarks: print a table and write benchmarks/results/NAME.json (needs coachrec-bench).",
    ),
}


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The installed entry points of the `coachrec.cli` group by name (metadata only; nothing is imported)."""
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=PLUGIN_GROUP):
        found.setdefault(ep.name, ep)
    return found


def load_plugin(name: str) -> Any:
    """Import entry point `name` of `coachrec.cli` and return it as a click command (a typer app
    becomes its click group). Exits with code 2 and the install command when it is not installed."""
    ep = plugin_entry_points().get(name)
    if ep is None:
        dist, install, _ = KNOWN_PLUGINS.get(name, (f"a package providing {name!r}", "pip", ""))
        typer.secho(
            f"error: `coachrec {name}` needs {dist}, which is not installed; install it with {install}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(2)
    target = ep.load()
    if not isinstance(target, typer.Typer):
        raise TypeError(f"entry point {ep.name} = {ep.value} of group {PLUGIN_GROUP} is not a typer app")
    return typer.main.get_command(target)  # a command of typer's own (vendored) click


def _plugin_command(name: str, help_text: str) -> None:
    """Register `coachrec NAME ...` as a stand-in that loads the entry point when it runs and
    hands it every remaining argument (`--help` included) in a context that takes the stand-in's
    place under the root, so usage lines, typer's help and errors read `coachrec NAME ...` as if
    the group had been added directly."""

    def run(ctx: typer.Context) -> None:
        command = load_plugin(name)
        with command.make_context(name, list(ctx.args), parent=ctx.parent) as sub:
            command.invoke(sub)

    run.__doc__ = help_text
    app.command(
        name,
        help=help_text,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


def _register_plugins() -> None:
    taken = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    found = plugin_entry_points()
    for name in sorted(set(KNOWN_PLUGINS) | set(found)):
        if name in taken:
            continue
        if name in KNOWN_PLUGINS:
            help_text = KNOWN_PLUGINS[name][2]
        else:
            dist = getattr(found[name], "dist", None)
            help_text = f"Commands of the {dist.name if dist else found[name].value} plugin."
        _plugin_command(name, help_text)


_register_plugins()


def main() -> None:
    """Run the CLI; bad input (unknown names, unreadable data, invalid values) ends with its
    message and exit code 2 instead of a traceback. Bugs still show the traceback."""
    from coachrec.data import DataError

    try:
        app()
    except (DataError, KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
