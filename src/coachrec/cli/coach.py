"""`coachrec coach` (remedies -> gate -> promote, one or more iterations) and `coachrec gate CANDIDATE`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coachrec.cli.console import RichProgress, console, heading, show_table
from coachrec.cli.teacher import failure_modes_table

if TYPE_CHECKING:
    from coachrec.coach import GateReport, LoopConfig, LoopResult

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Model registry folder (default: $COACHREC_REGISTRY or .coachrec/registry)."),
]


LLM_CRITERIA = ["request_match", "slate_variety"]
"""LLM criteria judged by default (typer reads the default list and never mutates it)."""


def gate_table(report: GateReport) -> Table:
    table = Table(
        title=f"Gate: {report.candidate} vs champion {report.champion} (target: {report.target_mode})",
        title_justify="left",
        caption=f"{report.protocol.get('ci', '')}; ground truth: {report.protocol.get('ground_truth', '')}",
        caption_justify="left",
    )
    numeric = ("champion", "candidate", "delta", "p", "users", "differ")
    for col in ("section", "metric", "role", "champion", "candidate", "delta", "95% CI", "p", "users", "differ", "ok"):
        table.add_column(col, justify="right" if col in numeric else "left")
    for r in report.rows:
        ok = "" if r.passed is None else ("[green]yes[/green]" if r.passed else "[red]no[/red]")
        table.add_row(
            r.section,
            r.metric,
            r.role,
            f"{r.champion:.4f}",
            f"{r.candidate:.4f}",
            f"{r.delta:+.4f}",
            r.ci,
            f"{r.p_value:.4f}",
            str(r.n),
            str(r.discordant),
            ok,
        )
    return table


def print_result(result: LoopResult, con: Console | None = None) -> None:
    """Top failure modes with examples, the gate table and the decision."""
    con = con or console()
    report = result.observation.report
    title = f"Top failure modes ({report.judged_traces} judged traces, champion)"
    if report.modes:
        show_table(failure_modes_table(report, con, title, top=6, examples=1, cut=140), con)
    else:
        con.print("no failures found")
    if result.tried:
        tried = Table(title=f"Remedies tried for {result.target_mode}", title_justify="left")
        for col in ("remedy", "span", "what it did (selection users)", "candidate", "decision"):
            tried.add_column(col, overflow="fold")
        for t in result.tried:
            verdict = (
                "not applicable"
                if t.gate is None
                else ("PROMOTED" if t.promoted else "refused: " + "; ".join(t.gate.reasons))
            )
            tried.add_row(t.remedy, t.span, Text(t.note), t.candidate_id or "", Text(verdict))
        show_table(tried, con)
    for t in result.tried:
        if t.gate is not None:
            show_table(gate_table(t.gate), con)
    con.print(Text(result.decision, style="bold green" if result.promoted else "bold red"))


def run_and_report(config: LoopConfig, registry: Path | None, out: Path, title: str, iterations: int) -> None:
    """Run the coach iterations, print each one's tables and decision, write each one's report
    (later iterations in `out/iteration-N`, linked from the first report)."""
    from coachrec.coach import Registry, run_iterations
    from coachrec.coach.report import write_report

    con = console()
    decisions: list[tuple[int, Path, str]] = []
    for it, folder, result in run_iterations(config, Registry(registry), out, RichProgress(con), iterations=iterations):
        if iterations > 1:
            heading(con, f"iteration {it}: champion {result.context.champion_id}")
        print_result(result, con)
        path = write_report(result, folder, title=title if it == 1 else f"{title}, iteration {it}")
        decisions.append((it, path, result.decision))
        con.print(Text.assemble("report written to ", (str(path), "bold"), f" ({result.seconds:.0f} s)"))
    if len(decisions) > 1:
        lines = ["", "## Further iterations", ""]
        lines += [f"- iteration {it} ([report]({p.relative_to(out)})): {d}" for it, p, d in decisions[1:]]
        with (out / "report.md").open("a") as f:
            f.write("\n".join(lines) + "\n")


def coach(
    dataset: Annotated[str, typer.Option(help="ml-latest-small, beauty, or a path")] = "ml-latest-small",
    requests: Annotated[
        int, typer.Option(help="Replayed requests to judge and distil from (and as many for the gate).")
    ] = 400,
    llm: Annotated[
        str, typer.Option(help="LLM member of the teacher for its LLM criteria: small|medium|teacher|path|URL|none.")
    ] = "small",
    llm_traces: Annotated[int, typer.Option(help="Traces whose LLM criteria are judged.")] = 6,
    llm_criterion: Annotated[
        list[str], typer.Option("--llm-criterion", help="LLM criteria to judge (repeatable).")
    ] = LLM_CRITERIA,
    target_mode: Annotated[
        str | None, typer.Option(help="Failure mode to coach (default: the most frequent distillable one).")
    ] = None,
    request_match: Annotated[
        bool,
        typer.Option(help="Judge request_match with a committee calibrated on ReDial dialogs (ml-latest-small only)."),
    ] = True,
    golden: Annotated[
        str | None,
        typer.Option(help="Golden set whose requests the gate also replays (and whose labels measure LLM criteria)."),
    ] = None,
    review_db: Annotated[Path | None, typer.Option(help="Review store holding the golden set.")] = None,
    margin: Annotated[
        float, typer.Option(help="Ground-truth non-inferiority margin, relative to the champion (0.02 = 2%).")
    ] = 0.02,
    out: Annotated[Path, typer.Option(help="Folder for traces and the report")] = Path("runs/coach"),
    iterations: Annotated[
        int, typer.Option(min=1, help="Iterations, each on the last one's champion, each targeting a new mode.")
    ] = 1,
    registry: RegistryOption = None,
    ray: Annotated[
        int,
        typer.Option(
            "--ray",
            min=0,
            help="Judge on a pool of this many Ray actors (0: in this process; $RAY_ADDRESS: a cluster). "
            "Needs coachrec[ray].",
        ),
    ] = 0,
    simulate_clicks: Annotated[
        str | None,
        typer.Option(
            help="Opt-in: also log selection (and gate) users' traffic with simulated position-biased clicks, "
            "CURVE:ETA (ultra or inverse examination ** ETA, e.g. ultra:1.0): measures position_bias, lets "
            "pal-ranker learn from the clicks and gates it off-policy. Off by default."
        ),
    ] = None,
    click_requests: Annotated[
        int, typer.Option(min=1, help="With --simulate-clicks: logged requests per side (selection, gate).")
    ] = 2000,
    click_epsilon: Annotated[
        float,
        typer.Option(help="With --simulate-clicks: epsilon-greedy exploration of the logging champion (propensities)."),
    ] = 0.3,
    seed: int = 0,
) -> None:
    """Coach iterations: judge replayed traffic, pick the most frequent trusted failure mode, try
    every remedy for it, gate each candidate against the champion, promote at most one or refuse
    (with the reasons)."""
    from coachrec.coach import GateConfig, LoopConfig
    from coachrec.coach.click_log import ClickSpec

    if simulate_clicks is not None:
        try:
            ClickSpec.parse(simulate_clicks)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--simulate-clicks") from exc
    if not 0.0 < click_epsilon < 1.0:
        raise typer.BadParameter(f"must be in (0, 1), got {click_epsilon}", param_hint="--click-epsilon")
    if target_mode == "position_bias" and simulate_clicks is None:
        raise typer.BadParameter(
            "position_bias is measured on logged clicks: add --simulate-clicks ultra:1.0", param_hint="--target-mode"
        )
    config = LoopConfig(
        dataset=dataset,
        distill_requests=requests,
        gate_requests=requests,
        llm=llm,
        llm_traces=llm_traces,
        llm_criteria=tuple(llm_criterion),
        golden=golden,
        review_db=review_db,
        target_mode=target_mode,
        request_match=request_match,
        seed=seed,
        gate=GateConfig(margin=margin, seed=seed),
        clicks=simulate_clicks,
        click_requests=click_requests,
        click_epsilon=click_epsilon,
    )
    if ray:
        from coachrec.scale import ray_executor
        from coachrec.teacher.judge import judging_with

        with judging_with(ray_executor(ray)):  # every Judge.judge of the loop on the actor pool
            run_and_report(config, registry, out, "coachrec coach", iterations)
    else:
        run_and_report(config, registry, out, "coachrec coach", iterations)


def gate(
    candidate: Annotated[str, typer.Argument(help="Registry version id of the candidate, e.g. v0002")],
    target_mode: Annotated[
        str | None, typer.Option(help="Failure mode the candidate targets (default: from its distillation record).")
    ] = None,
    requests: Annotated[int, typer.Option(help="Held-out replayed requests served by both stacks.")] = 400,
    golden: Annotated[str | None, typer.Option(help="Golden set whose requests are also replayed.")] = None,
    review_db: Annotated[Path | None, typer.Option(help="Review store holding the golden set.")] = None,
    margin: Annotated[
        float, typer.Option(help="Ground-truth non-inferiority margin, relative to the champion (0.02 = 2%).")
    ] = 0.02,
    promote: Annotated[bool, typer.Option("--promote", help="Make the candidate champion if the gate passes.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the gate's traces")] = Path("runs/gate"),
    registry: RegistryOption = None,
    seed: int = 0,
) -> None:
    """Compare a registered candidate with the champion and print the comparison table."""
    from coachrec.coach import GateConfig, LoopConfig, Registry, RegistryError
    from coachrec.coach.loop import gate_candidate, prepare

    con = console()
    reg = Registry(registry)
    try:
        version = reg.version(candidate)
        stack = reg.load_stack(candidate)
    except RegistryError as exc:
        con.print(Text(str(exc), style="red"))
        raise typer.Exit(1) from exc
    if reg.champion is None:
        con.print(Text(f"no champion in {reg.root} to gate against", style="red"))
        raise typer.Exit(1)
    if reg.champion == candidate:
        con.print(Text(f"{candidate} is already the champion", style="red"))
        raise typer.Exit(1)
    mode = target_mode or (version.distillation or {}).get("target_mode")
    if mode is None:
        raise typer.BadParameter(
            f"{candidate} has no distillation record naming its target; pass --target-mode", param_hint="--target-mode"
        )
    config = LoopConfig(
        dataset=version.dataset,
        gate_requests=requests,
        golden=golden,
        review_db=review_db,
        seed=seed,
        gate=GateConfig(margin=margin, seed=seed),
        llm="none",
    )
    out.mkdir(parents=True, exist_ok=True)
    progress = RichProgress(con)
    ctx = prepare(config, reg, progress)
    report, _, _ = gate_candidate(ctx, stack, mode, out, progress)
    reg.attach_gate(candidate, report.to_dict())
    show_table(gate_table(report), con)
    con.print(Text(report.verdict()))
    if promote and report.promote:
        reg.promote(candidate, note=report.verdict())
        con.print(Text(f"{candidate} is now the champion", style="green"))
    elif promote:
        reg.refuse(candidate, note=report.verdict())
    if not report.promote:
        raise typer.Exit(2)
