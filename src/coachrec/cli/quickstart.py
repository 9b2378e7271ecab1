"""`coachrec quickstart`: the whole coachable loop on the bundled MovieLens latest-small.

Choose the production stack on validation; replay held-out users and ReDial conversations as
traffic through the traced pipeline; judge it with the teacher; print the top failure modes with
examples; try every remedy for the most frequent trusted one; gate each on held-out users;
promote at most one or refuse; then a second iteration on the new champion targets the next
mode. A Markdown report with plots per iteration goes to a folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from coachrec.cli.coach import RegistryOption, run_and_report
from coachrec.cli.console import console, heading


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the report, plots and traces")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option(help="A smaller run, for tests (< 3 minutes)")] = False,
    llm: Annotated[str, typer.Option(help="LLM member of the teacher: small|medium|teacher|path|URL|none.")] = "small",
    iterations: Annotated[
        int, typer.Option(min=1, help="Coach iterations, each on the last one's champion, each targeting a new mode.")
    ] = 2,
    registry: RegistryOption = None,
    seed: int = 0,
) -> None:
    """The full loop on ml-latest-small: serve, trace, judge, distil, gate, promote or refuse, report."""
    from coachrec.coach import DistillConfig, GateConfig, LoopConfig

    config = LoopConfig(llm=llm, seed=seed)
    if fast:
        config = LoopConfig(
            distill_requests=80,
            gate_requests=80,
            conversations=60,
            request_match_requests=120,
            llm=llm,
            llm_traces=2,
            seed=seed,
            distill=DistillConfig(valid_users=200, strengths=(0.1, 0.5, 1.0)),
            gate=GateConfig(n_boot=500, seed=seed),
        )
    started = time.perf_counter()
    con = console()
    heading(con, "coachrec quickstart" + (" --fast" if fast else ""))
    run_and_report(config, registry, out, "coachrec quickstart", iterations)
    con.print(f"done in {time.perf_counter() - started:.0f} s")
