"""`coachrec quickstart`: the whole coachable loop on the bundled MovieLens latest-small.

Train the production stack; replay held-out users as traffic through the traced pipeline;
judge a sample with the teacher; print the top failure modes with examples; distil; gate;
promote or refuse; write a Markdown report with plots to a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from coachrec.cli.coach import RegistryOption, print_result
from coachrec.cli.console import RichProgress, console, heading


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the report, plots and traces")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option(help="A smaller run, for tests (< 3 minutes)")] = False,
    llm: Annotated[str, typer.Option(help="LLM member of the teacher: small|medium|teacher|path|URL|none.")] = "small",
    registry: RegistryOption = None,
    seed: int = 0,
) -> None:
    """The full loop on ml-latest-small: serve, trace, judge, distil, gate, promote or refuse, report."""
    from coachrec.coach import DistillConfig, GateConfig, LoopConfig, Registry, run_loop
    from coachrec.coach.report import write_report

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
    con = console()
    heading(con, "coachrec quickstart" + (" --fast" if fast else ""))
    result = run_loop(config, Registry(registry), out, RichProgress(con))
    print_result(result, con)
    path = write_report(result, out)
    con.print(Text.assemble("report written to ", (str(path), "bold"), f"; done in {result.seconds:.0f} s"))
