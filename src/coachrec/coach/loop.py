"""One coach iteration end to end: observe traffic, judge, distil, gate, promote or refuse.

    result = run_loop(LoopConfig(), Registry(), out=Path("runs/coach"), ui=progress)  # any coachrec.progress.Progress

Every stack in a run is fitted on the leave-one-out *training* part of the data, so each user's
last interaction stays unseen by the models, the teacher and the student: it is the ground
truth the gate measures. Users are split three ways up front (`split_users`, seeded):
*selection* users' traffic is judged and distilled, and every choice (strength, weights, which
remedy) is made on their data; *gate* users' traffic and later interactions are what the gate
compares, never seen by any selection; the rest are left unused (a reserve no step reads).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from coachrec import datasets
from coachrec.coach.click_log import ClickSpec, click_summary, judged_relevance, later_truth, log_clicks, logging_stack
from coachrec.coach.distill import DistillConfig
from coachrec.coach.gate import GateConfig, GateReport, conversation_recall_row, decide, failure_rows, ground_truth_rows
from coachrec.coach.registry import Registry
from coachrec.coach.remedies import RemedyContext, RemedyError, remedies_for, strongest_stack
from coachrec.coach.traffic import Served, failures_by_mode, request_key, serve, unknown_by_criterion
from coachrec.coach.trust import (
    Trust,
    criterion_trust,
    has_ratings,
    kappa_table,
    measured_committee,
    measured_request_match,
)
from coachrec.data import Catalog, Dataset, Split, leave_one_out
from coachrec.llm.cost import TierPrice
from coachrec.policy.ope import OPEError, SlateLog
from coachrec.progress import SILENT, Progress
from coachrec.ranking import ItemStats
from coachrec.review import GoldenCase
from coachrec.serve import PipelineConfig, RecommendRequest, Stack
from coachrec.serve.stack import catalog_for
from coachrec.sim import PlantedTruth
from coachrec.teacher import (
    CatalogView,
    FailureReport,
    Judge,
    JudgeCase,
    Judgment,
    RelevanceCommittee,
    RubricSpec,
    failure_report,
    load_rubric,
    record,
)
from coachrec.teacher.catalog_view import constraints_from_dict
from coachrec.teacher.failures import FailureMode
from coachrec.teacher.request_match import REQUEST_MATCH, RequestMatchCommittee
from coachrec.teacher.traffic import replay_requests
from coachrec.tracing import TraceStore


@dataclass(frozen=True)
class LoopConfig:
    dataset: str = "ml-latest-small"
    champions: tuple[tuple[str, ...], ...] = (("itemknn",), ("itemknn", "pop"), ("pop",))
    """Candidate first champions (retriever sets) when the registry has none for this data: the
    one with the best NDCG@10 on the selection users' validation interactions is chosen."""
    pipeline: PipelineConfig = PipelineConfig()
    distill_requests: int = 400
    conversations: int = 300
    """Real ReDial conversations (linked to ml-latest-small, bundled) replayed beside the
    users' traffic, per side: selection dialogs observed, gate dialogs gated (0 = none; only on
    ml-latest-small, whose catalog they are linked to)."""
    gate_requests: int = 400
    llm: str = "small"
    """LLM member of the teacher for its LLM criteria (a role, GGUF path or URL; `none` = off)."""
    llm_traces: int = 6
    """Traces whose LLM criteria are judged (each costs 2 prompts per criterion)."""
    llm_criteria: tuple[str, ...] = ("request_match", "slate_variety")
    """LLM criteria judged on a few traces (report only until a golden set measures them); a
    criterion the calibrated request-match committee judges is left to the committee."""
    request_match: bool = True
    """Calibrate a request-match committee (embedding, mention and co-mention members) on the
    selection dialogs and measure it on the unused ones, so `request_match` is judged on every
    trace and may gate when trusted (a minute or two of sentence encoding on 2 cores)."""
    request_match_requests: int = 400
    """Labelled ReDial requests per side (calibration, evaluation) for the request-match trust."""
    golden: str | None = None
    """A published golden set (review store) whose requests the gate also replays."""
    review_db: Path | None = None
    target_mode: str | None = None
    """The failure mode to coach; default: the most frequent one that may be distilled."""
    skip_modes: tuple[str, ...] = ()
    """Failure modes not to target (a second iteration passes the first one's target)."""
    seed: int = 0
    distill: DistillConfig = DistillConfig()
    gate: GateConfig = GateConfig()
    clicks: str | None = None
    """Opt-in simulated clicks, `CURVE:ETA` (position-based, `ultra` or `inverse` examination to
    the power ETA, e.g. `ultra:1.0`; None = off, the loop as without it). On: the observe step
    also serves `click_requests` plain requests of the selection users through a `Service` (the
    champion exploring with `click_epsilon`), simulated users click by position and their real
    later interactions (`click_log.later_truth`), and the logged impressions give the
    `position_bias` signal (clicks by slot against the relevance committee's judgement of the
    shown items) and `RemedyContext.logged` (what `pal-ranker` learns from); a `position_bias`
    candidate is gated on gate users' traffic logged the same way, separately."""
    click_requests: int = 2000
    """Logged requests per side (selection, gate) with simulated clicks."""
    click_epsilon: float = 0.3
    """Epsilon-greedy exploration of the logging champion (when it does not explore itself):
    every shown slot gets a propensity, so off-policy estimates have support."""


SIGNAL_MODES = ("position_bias",)
"""Failure modes measured by a statistical signal on logged clicks, not emitted by a rubric
criterion. Such a mode *may gate* (be targeted) when its signal is flagged with confidence (the
CI's upper bound beyond the margin); it judges no candidate: the gate's evidence for it is an
independent off-policy row on gate users' logged clicks (must improve), beside ground truth."""
OFF_POLICY = "off-policy (logged traffic)"


@dataclass
class Context:
    """What every step of a run shares."""

    config: LoopConfig
    data: Dataset
    split: Split
    catalog: Catalog
    rubric: RubricSpec
    committee: RelevanceCommittee | None
    trust: dict[str, Trust]
    champion: Stack
    champion_id: str
    distill_users: list[str]
    gate_users: list[str]
    golden_requests: list[RecommendRequest]
    data_info: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    request_match: RequestMatchCommittee | None = None
    """The request-match committee, calibrated on selection dialogs, measured on unused ones."""
    conversations: dict[str, list[RecommendRequest]] = field(default_factory=dict)
    """ReDial requests by role ("selection", "gate"); `targets` holds each one's ground truth."""
    targets: dict[str, list[str]] = field(default_factory=dict)
    """Request id -> the movies the human recommender suggested next (not mentioned before)."""
    dialog_records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Every turn of the ReDial dialogs by role ("selection", "gate"), for remedies that learn
    from conversations (they read the selection ones only)."""
    click_truth: PlantedTruth | None = None
    """With `LoopConfig.clicks`: the planted truth simulated users click by."""
    gate_logged: tuple[str, SlateLog] | None = None
    """With `LoopConfig.clicks`: gate users' logged clicks (and the champion that logged them)."""


@dataclass
class Observation:
    served: Served
    judgments: list[Judgment]
    report: FailureReport
    judge_version: str
    judge_seconds: float
    llm_seconds: float
    llm_traces: int
    llm_model: str | None
    llm_note: str | None
    logged: SlateLog | None = None
    """With `LoopConfig.clicks`: the selection users' logged impressions and simulated clicks."""
    position: Any = None
    """With `LoopConfig.clicks`: the `position_bias` signal (`position_remedy.PositionBias`)."""
    clicks: dict[str, Any] = field(default_factory=dict)
    """With `LoopConfig.clicks`: what was logged (click model, epsilon, counts) or why not."""


@dataclass
class Tried:
    """One remedy of an iteration: its candidate (if it could be built), gate report, outcome."""

    remedy: str
    span: str
    note: str
    candidate_id: str | None = None
    gate: GateReport | None = None
    promoted: bool = False
    selection: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy,
            "span": self.span,
            "note": self.note,
            "candidate": self.candidate_id,
            "promoted": self.promoted,
            "selection": self.selection,
            "gate": self.gate.to_dict() if self.gate else None,
            **self.details,
        }


@dataclass
class LoopResult:
    context: Context
    observation: Observation
    target_mode: str | None
    tried: list[Tried]
    promoted: bool
    decision: str
    tiers: list[dict[str, Any]]
    before_after: dict[str, dict[str, float]]
    seconds: float

    @property
    def chosen(self) -> Tried | None:
        """The promoted remedy, else the first one gated (whose report the summary shows)."""
        return next((t for t in self.tried if t.promoted), next((t for t in self.tried if t.gate is not None), None))

    @property
    def gate(self) -> GateReport | None:
        return self.chosen.gate if self.chosen else None

    @property
    def candidate_id(self) -> str | None:
        return self.chosen.candidate_id if self.chosen else None


def _fingerprint(data: Dataset) -> dict[str, Any]:
    ev = data.events
    return {
        "name": data.name,
        "events": ev.height,
        "users": data.n_users,
        "items": data.n_items,
        "hash": str(ev.select(pl.col("user").hash().sum() + pl.col("item").hash().sum()).item() % 10**12),
        "split": "leave-one-out training part (last two interactions per user held out)",
    }


def requests_from_golden(cases: Sequence[GoldenCase], known_users: set[str]) -> list[RecommendRequest]:
    """The request of each golden trace (once per trace), to replay through both stacks. Cases
    of users the stacks do not know are left out: without a user there is no history to serve."""
    out, seen = [], set()
    for c in cases:
        case = c.provenance.get("case") or {}
        user = case.get("user_id")
        if c.trace_id in seen or user is None or str(user) not in known_users:
            continue
        seen.add(c.trace_id)
        out.append(
            RecommendRequest(
                user_id=str(user),
                k=int(case.get("k") or 10),
                constraints=constraints_from_dict(case.get("constraints") or {}),
                context=case.get("context"),
                request_id=f"golden-{c.trace_id}",
            )
        )
    return out


def prepare(config: LoopConfig, registry: Registry, ui: Progress = SILENT) -> Context:
    """Load data, fit (or load) the champion, fit and measure the teacher, split users."""
    t0 = time.perf_counter()
    ui.step(f"data and the production stack ({config.dataset})")
    data = datasets.load(config.dataset)
    split = leave_one_out(data)
    catalog = catalog_for(data)
    ui.note(f"{data}; leave-one-out: {split.train.events.height:,} training events")
    info = _fingerprint(split.train)
    users = split_users([str(u) for u in split.train.users.ids], config.seed)
    champion_id = registry.champion
    if champion_id is not None and registry.version(champion_id).data.get("hash") == info["hash"]:
        champion = registry.load_stack(champion_id)
        ui.note(f"champion {champion_id} from the registry: {champion.describe()}")
    else:
        champion, scores = strongest_stack(split, config.champions, config.pipeline, catalog, users.selection)
        ui.note(
            "first champion chosen on the selection users' validation NDCG@10: "
            + ", ".join(f"{'+'.join(m)} {v:.4f}" for m, v in scores.items())
        )
        v = registry.register(
            champion,
            description=f"baseline {champion.describe()}",
            dataset=data.name,
            data=info,
            metrics={"selection_valid_ndcg@10": {"+".join(m): v for m, v in scores.items()}},
        )
        registry.promote(v.id, note="first champion for this data (nothing to gate against)")
        champion_id = v.id
        ui.note(f"fitted {champion.describe()} on the training part; registered as {v.id} (first champion)")
    timings = {"stack": time.perf_counter() - t0}

    t0 = time.perf_counter()
    ui.step("the teacher: relevance committee, judge quality per criterion")
    rubric = load_rubric()
    committee, quality = None, None
    try:
        committee, quality = measured_committee(split.train, rubric, seed=config.seed)
        ui.note(
            f"relevance committee vs later real {'ratings' if has_ratings(split.train) else 'interactions'}: "
            f"{quality.reason()}, AUC {quality.auc:.3f} "
            f"-> {'may gate' if quality.may_gate else 'may NOT gate'}"
        )
    except ValueError as exc:
        ui.note(f"relevance criterion does not apply: {exc}", level="warn")
    golden_quality: dict[str, Any] = {}
    golden_requests: list[RecommendRequest] = []
    if config.golden:
        from coachrec.review import ReviewStore
        from coachrec.review import golden_quality as measure_golden

        review = ReviewStore(config.review_db)
        try:
            cases = review.golden_cases(config.golden)
        finally:
            review.close()
        golden_quality = measure_golden(cases, rubric)
        golden_requests = requests_from_golden(cases, {str(u) for u in split.train.users.ids})
        ui.note(f"golden set {config.golden!r}: {len(cases)} labelled cases, {len(golden_requests)} requests to replay")
    rows: list[dict[str, Any]] = []
    dialogs = None
    request_committee = None
    if config.conversations > 0 and data.name == "ml-latest-small":
        rows = datasets.requests("redial-ml")
        dialogs = split_users(sorted({r["dialog_id"] for r in rows}), config.seed)
    if dialogs is not None and config.request_match:
        request_committee, rm_quality = measured_request_match(
            rows,
            catalog,
            split.train.item_popularity(),
            rubric,
            set(dialogs.selection),
            set(dialogs.unused),
            seed=config.seed,
            max_requests=config.request_match_requests,
        )
        golden_quality = {**golden_quality, "request_match": rm_quality}
        ui.note(
            f"request-match committee vs human recommenders (ReDial): {rm_quality.reason()}, AUC {rm_quality.auc:.3f}"
        )
    trust = criterion_trust(rubric, relevance=quality, golden=golden_quality)
    for row in kappa_table(trust):
        ui.note(f"  {row['criterion']:<26} {'may gate' if row['may_gate'] else 'report only':<12} {row['why']}")
    timings["teacher"] = time.perf_counter() - t0
    ui.note(f"users: {len(users.selection)} for selection, {len(users.gate)} for the gate, {len(users.unused)} unused")
    ctx = Context(
        config,
        data,
        split,
        catalog,
        rubric,
        committee,
        trust,
        champion,
        champion_id,
        users.selection,
        users.gate,
        golden_requests,
        info,
        timings,
    )
    ctx.request_match = request_committee
    if dialogs is not None:
        for role, keep in (("selection", set(dialogs.selection)), ("gate", set(dialogs.gate))):
            mine = [r for r in rows if r["dialog_id"] in keep]
            ctx.dialog_records[role] = mine
            picked = np.random.default_rng(config.seed).permutation(len(mine))[: config.conversations]
            ctx.conversations[role] = [conversation_request(mine[i]) for i in sorted(picked)]
            ctx.targets.update({f"redial:{mine[i]['dialog_id']}:{mine[i]['turn']}": mine[i]["targets"] for i in picked})
        ui.note(
            f"ReDial conversations: {len(dialogs.selection)} dialogs for selection, {len(dialogs.gate)} for the gate; "
            f"{len(ctx.conversations['selection'])} and {len(ctx.conversations['gate'])} requests replayed"
        )
    return ctx


def conversation_request(row: dict[str, Any]) -> RecommendRequest:
    """A ReDial turn as an anonymous request: the linked movies mentioned so far as history, the
    conversation as context."""
    return RecommendRequest(
        history=list(row["mentions"]),
        k=10,
        context=list(row["context"]) or None,
        request_id=f"redial:{row['dialog_id']}:{row['turn']}",
    )


def cluster_of(request: RecommendRequest, position: int) -> str:
    """The unit requests are clustered by: the user, or the dialog of a conversation."""
    if request.user_id is not None:
        return request.user_id
    rid = request.request_id or ""
    return f"dialog:{rid.split(':')[1]}" if rid.startswith("redial:") else f"anonymous:{position}"


@dataclass(frozen=True)
class UserSplit:
    selection: list[str]
    gate: list[str]
    unused: list[str]


def split_users(users: Sequence[str], seed: int, shares: tuple[float, float] = (0.4, 0.4)) -> UserSplit:
    """A seeded three-way split of `users`: selection, gate and unused (the rest)."""
    order = [str(u) for u in np.random.default_rng(seed).permutation(np.asarray(list(users), dtype=object))]
    a = round(shares[0] * len(order))
    b = a + round(shares[1] * len(order))
    return UserSplit(order[:a], order[a:b], order[b:])


def traffic(ctx: Context, users: list[str], n: int, seed: int) -> list[RecommendRequest]:
    """Replayed requests; free-text requests and constraints only where the catalog has the
    genres and years they name (order-only data such as Beauty gets plain requests)."""
    rate = _rich_request_rate(ctx)
    return replay_requests(users, n, context_rate=rate, constraint_rate=rate, seed=seed)


def _rich_request_rate(ctx: Context) -> float:
    """Share of replayed requests with free text (and, separately, with constraints): 30% where
    the catalog has the genres and years they name, else 0."""
    return 0.3 if ctx.data.catalog is not None and "year" in ctx.data.catalog.frame.columns else 0.0


def _mix(ctx: Context) -> str:
    rate = _rich_request_rate(ctx)
    return (
        f"{rate:.0%} free-text, {rate:.0%} constraints"
        if rate
        else "plain requests: no catalog attributes to constrain"
    )


def _llm_judge(
    ctx: Context, cases: list[JudgeCase], ui: Progress
) -> tuple[list[Judgment], float, str | None, str | None]:
    """LLM criteria on a sample of cases (free-text requests first); never fails the run."""
    from coachrec.llm import LLMError, ResponseCache, coachrec_home, load_backend

    if ctx.config.llm == "none" or ctx.config.llm_traces <= 0:
        return [], 0.0, None, "LLM criteria off (--llm none)"
    if ctx.data.catalog is None:
        return [], 0.0, None, f"{ctx.data.name} has no item text: LLM criteria do not apply"
    criteria = [c for c in ctx.config.llm_criteria if not (c == REQUEST_MATCH and ctx.request_match)]
    if not criteria:
        return [], 0.0, None, "LLM criteria: request_match is judged by the calibrated committee"
    try:
        backend = load_backend(ctx.config.llm, cache=ResponseCache(coachrec_home() / "judge_cache.sqlite"))
    except LLMError as exc:
        return [], 0.0, None, f"LLM criteria not judged: {exc}"
    try:
        judge = Judge(ctx.rubric, CatalogView(ctx.catalog), llm=backend, criteria=criteria)
        rng = np.random.default_rng(ctx.config.seed)
        order = sorted(range(len(cases)), key=lambda i: (not cases[i].context, rng.random()))
        picked = [cases[i] for i in sorted(order[: ctx.config.llm_traces])]
        t0 = time.perf_counter()
        with ui.bar(f"LLM criteria ({backend.model_id})", len(picked)) as advance:
            out = judge.judge(picked, progress=advance)
        cache = getattr(backend, "cache", None)
        note = (
            f"LLM prompts answered from the response cache: {cache.hits} of {cache.hits + cache.misses}"
            if cache and cache.hits
            else None
        )
        return out, time.perf_counter() - t0, backend.model_id, note
    except LLMError as exc:
        return [], 0.0, None, f"LLM criteria not judged: {exc}"
    finally:
        backend.close()


def _gate_judge(ctx: Context) -> Judge:
    """Program and relevance criteria: the ones that can be trusted without human labels."""
    names = [
        c.name
        for c in ctx.rubric.criteria
        if c.member == "program"
        or (c.member == "recommender" and ctx.committee)
        or (c.name == REQUEST_MATCH and ctx.request_match)
    ]
    return Judge(
        ctx.rubric, CatalogView(ctx.catalog), relevance=ctx.committee, request_match=ctx.request_match, criteria=names
    )


def observe(ctx: Context, out: Path, ui: Progress = SILENT) -> Observation:
    """Replay the distillation users' traffic through the champion, judge it, count failures."""
    t0 = time.perf_counter()
    ui.step(
        f"replay {ctx.config.distill_requests} requests of selection users and "
        f"{len(ctx.conversations.get('selection', []))} "
        "conversations through the traced champion pipeline"
    )
    requests = traffic(ctx, ctx.distill_users, ctx.config.distill_requests, ctx.config.seed) + ctx.conversations.get(
        "selection", []
    )
    store = TraceStore(out / "traces.duckdb")
    try:
        with ui.bar("serving", len(requests)) as advance:
            served = serve(ctx.champion, requests, store, progress=advance)
        ui.step(f"judge {len(served.cases)} traces with the teacher")
        judge = _gate_judge(ctx)
        t1 = time.perf_counter()
        with ui.bar("program + relevance criteria", len(served.cases)) as advance:
            judgments = judge.judge(served.cases, progress=advance)
        judge_s = time.perf_counter() - t1
        llm_judgments, llm_s, llm_model, llm_note = _llm_judge(ctx, served.cases, ui)
        if llm_note:
            ui.note(llm_note, level="warn")
        record(store, judgments + llm_judgments)
        store.flush()
        report = failure_report(store, examples=3)
    finally:
        store.close()
    obs = Observation(
        served, judgments + llm_judgments, report, judge.version, judge_s, llm_s,
        len({j.trace_id for j in llm_judgments}), llm_model, llm_note,
    )  # fmt: skip
    if ctx.config.clicks is not None:
        observe_clicks(ctx, obs, out, ui)
    ctx.timings["observe"] = time.perf_counter() - t0
    return obs


def _click_truth(ctx: Context) -> PlantedTruth:
    if ctx.click_truth is None:
        ctx.click_truth = later_truth(ctx.data, ctx.split.train)
    return ctx.click_truth


def observe_clicks(ctx: Context, obs: Observation, out: Path, ui: Progress = SILENT) -> None:
    """Log the selection users' traffic with simulated clicks, measure `position_bias` against
    the relevance committee's judgement of the shown items; a flagged signal is a failure mode
    of the report (after the judged ones) and may be targeted (`Trust` entry `position_bias`)."""
    from coachrec.coach.position_remedy import position_bias, signal_details

    cfg = ctx.config
    assert cfg.clicks is not None
    spec = ClickSpec.parse(cfg.clicks)
    stack = logging_stack(ctx.champion, cfg.click_epsilon)
    ui.step(
        f"log {cfg.click_requests} requests of selection users with simulated clicks ({spec}; the champion "
        f"exploring with epsilon {stack.config.epsilon:g}, {stack.config.candidates} candidates per retriever, no MMR)"
    )
    log, stats = log_clicks(stack, _click_truth(ctx), spec, ctx.distill_users, cfg.click_requests,
                            out / "clicks-selection.duckdb", seed=cfg.seed, progress=ui)  # fmt: skip
    obs.logged = log
    obs.clicks = {"model": str(spec), "epsilon": stack.config.epsilon, "candidates": stack.config.candidates,
                  "truth": "leave-one-out held-out interactions, graded by rating", **click_summary(log),
                  "expected_clicks_per_slate": stats.expected_clicks_per_request}  # fmt: skip
    ui.note(
        f"logged {len(log)} slates, {log.impressions} impressions, {int(log.reward.sum())} simulated clicks "
        f"({obs.clicks['clicks_per_slate']:.3f} per slate)"
    )
    if ctx.committee is None:
        obs.clicks["signal"] = "position_bias not measured: no relevance committee to judge the shown items"
        ui.note(obs.clicks["signal"], level="warn")
        return
    try:
        signal = position_bias(log, judged_relevance(ctx.committee, log), seed=cfg.seed)
    except ValueError as exc:
        obs.clicks["signal"] = f"position_bias not measured: {exc}"
        ui.note(obs.clicks["signal"], level="warn")
        return
    obs.position = signal
    obs.clicks["signal"] = signal_details(signal)
    ui.note(f"position_bias: {signal.reason}", level="warn" if signal.flagged else "info")
    ctx.trust = {
        **ctx.trust,
        "position_bias": Trust(
            "position_bias",
            "click log (statistical signal)",
            signal.flagged,
            ("flagged: " if signal.flagged else "not flagged: ") + signal.reason,
        ),
    }
    if signal.flagged:
        obs.report.modes.append(
            FailureMode("position_bias", "position_bias", len(log), len(log), "rank", (), signal.reason)
        )


def check_config(config: LoopConfig, rubric: RubricSpec) -> None:
    """Refuse, before any work, failure modes and LLM criteria the rubric does not define."""
    modes = sorted({m for c in rubric.criteria for m in c.failure_modes})
    for mode in (config.target_mode, *config.skip_modes):
        if mode in SIGNAL_MODES:
            if mode == config.target_mode and config.clicks is None:
                raise ValueError(
                    f"failure mode {mode!r} is measured on logged clicks: turn on simulated clicks "
                    "(LoopConfig.clicks, e.g. 'ultra:1.0'; coachrec coach --simulate-clicks ultra:1.0)"
                )
        elif mode is not None and mode not in modes:
            raise ValueError(
                f"unknown failure mode {mode!r}; the rubric's failure modes are: {', '.join(modes)} "
                f"(and, with simulated clicks, {', '.join(SIGNAL_MODES)})"
            )
    if config.clicks is not None:
        ClickSpec.parse(config.clicks)
        if config.click_requests < 1:
            raise ValueError(f"click_requests must be >= 1, got {config.click_requests}")
        if not 0.0 < config.click_epsilon < 1.0:
            raise ValueError(f"click_epsilon must be in (0, 1), got {config.click_epsilon}")
    llm = sorted(c.name for c in rubric.criteria if c.member == "llm")
    for name in config.llm_criteria:
        if name not in llm:
            raise ValueError(f"unknown LLM criterion {name!r}; the rubric's LLM criteria are: {', '.join(llm)}")


def choose_target(ctx: Context, obs: Observation) -> tuple[str | None, list[str]]:
    """The most frequent failure mode whose judge may gate and that has a remedy (or the one
    asked for), and, for each mode passed over, why."""
    skipped = []
    modes = [m.name for m in obs.report.modes]
    if ctx.config.target_mode is not None:
        modes = [ctx.config.target_mode]
    for mode in modes:
        if mode in ctx.config.skip_modes:
            skipped.append(f"{mode}: skipped (targeted by an earlier iteration)")
            continue
        spec = next((c for c in ctx.rubric.criteria if mode in c.failure_modes), None)
        trust = ctx.trust.get(spec.name) if spec else ctx.trust.get(mode) if mode in SIGNAL_MODES else None
        if spec is None and mode in SIGNAL_MODES:
            if trust is None or not trust.may_gate:
                skipped.append(f"{mode}: its signal is not flagged ({trust.reason if trust else 'not measured'})")
            elif not remedies_for(mode):
                skipped.append(f"{mode}: no remedy in the catalogue addresses it")
            else:
                return mode, skipped
        elif spec is None:
            skipped.append(f"{mode}: no criterion of the rubric emits it")
        elif trust is None or not trust.may_gate:
            skipped.append(
                f"{mode}: the judge of {spec.name!r} may not gate ({trust.reason if trust else 'not measured'})"
            )
        elif not remedies_for(mode):
            skipped.append(f"{mode}: no remedy in the catalogue addresses it")
        else:
            return mode, skipped
    return None, skipped


def gate_candidate(
    ctx: Context,
    candidate: Stack,
    target_mode: str,
    out: Path,
    ui: Progress = SILENT,
    *,
    gate_config: GateConfig | None = None,
) -> tuple[GateReport, dict[str, Served], float]:
    """Serve the gate users' traffic (and golden requests) through both stacks, judge, compare."""
    t0 = time.perf_counter()
    cfg = replace(ctx.config, gate=gate_config) if gate_config is not None else ctx.config
    out.mkdir(parents=True, exist_ok=True)
    judge = _gate_judge(ctx)
    sections = [("held-out traffic", traffic(ctx, ctx.gate_users, cfg.gate_requests, cfg.seed + 1))]
    if ctx.conversations.get("gate"):
        sections.append(("conversations", ctx.conversations["gate"]))
    if ctx.golden_requests:
        sections.insert(0, ("golden set", ctx.golden_requests))
    rows: list[Any] = []
    served_by: dict[str, Served] = {}
    judge_s = 0.0
    criterion = next((c.name for c in ctx.rubric.criteria if target_mode in c.failure_modes), target_mode)
    pooled: dict[str, list[Any]] = {"champion": [], "candidate": [], "users": [], "keys": []}
    for section, requests in sections:
        modes, unknown = {}, {}
        for side, stack in (("champion", ctx.champion), ("candidate", candidate)):
            path = out / f"gate-{side}-{section.replace(' ', '-')}.duckdb"
            path.unlink(missing_ok=True)
            store = TraceStore(path)
            try:
                with ui.bar(f"{section}: serve {side}", len(requests)) as advance:
                    served = serve(stack, requests, store, progress=advance)
                t1 = time.perf_counter()
                with ui.bar(f"{section}: judge {side}", len(served.cases)) as advance:
                    judgments = judge.judge(served.cases, progress=advance)
                judge_s += time.perf_counter() - t1
                record(store, judgments)
            finally:
                store.close()
            modes[side] = failures_by_mode(judge, served.cases, judgments, per_item={REQUEST_MATCH})
            unknown[side] = unknown_by_criterion(served.cases, judgments).get(
                criterion, np.full(len(served.cases), np.nan)
            )
            served_by[f"{section}/{side}"] = served
        users = [cluster_of(r, i) for i, r in enumerate(requests)]
        keys = [request_key(r) for r in requests]
        if target_mode in modes["champion"] and target_mode in modes["candidate"]:
            pooled["champion"].append(modes["champion"][target_mode])
            pooled["candidate"].append(modes["candidate"][target_mode])
            pooled["users"] += users
            pooled["keys"] += [f"{section}/{k}" for k in keys]
        rows += failure_rows(
            section,
            modes["champion"],
            modes["candidate"],
            users,
            target_mode,
            cfg.gate,
            keys=keys,
            unknown=(unknown["champion"], unknown["candidate"]),
        )
        if section == "conversations":
            role = "independent" if target_mode == "ignores_request" else "guard"
            rows.append(
                conversation_recall_row(
                    requests,
                    served_by["conversations/champion"],
                    served_by["conversations/candidate"],
                    ctx.targets,
                    users,
                    role,
                    cfg.gate,
                )
            )
    if len(pooled["champion"]) > 1:
        rows = pool_target(rows, pooled, target_mode, cfg.gate)
    ui.note("ground truth: leave-one-out full-ranking NDCG@10 / Recall@10 on each gate user's last interaction")
    rows += ground_truth_rows(ctx.champion.scorer(), candidate.scorer(), ctx.split, ctx.gate_users, cfg.gate)
    off_policy = None
    if target_mode in SIGNAL_MODES:
        off_rows, off_policy = off_policy_row(ctx, candidate, out, cfg, ui)
        rows += off_rows
    promote, reasons = decide(
        rows, ctx.trust, target_mode, criterion, cfg.gate, stand_in=OFF_POLICY if target_mode in SIGNAL_MODES else None
    )
    report = GateReport(
        champion=f"{ctx.champion_id} ({ctx.champion.describe()})",
        candidate=candidate.describe(),
        target_mode=target_mode,
        target_criterion=criterion,
        judge_version=judge.version,
        promote=promote,
        reasons=reasons,
        rows=rows,
        trust=kappa_table(ctx.trust),
        protocol={
            "traffic": f"{cfg.gate_requests} replayed requests ({_mix(ctx)}) of {len(ctx.gate_users)} "
            "held-out users never distilled from, served by both stacks, judged by program + relevance criteria",
            "ground_truth": f"leave-one-out, full ranking over all items, the last interaction of each of the "
            f"{len(ctx.gate_users)} gate users; ranker output before the policy stages; paired by user; "
            f"non-inferiority margin {cfg.gate.margin:.0%} of the champion's value",
            "ci": f"{cfg.gate.confidence:.0%} bootstrap over users ({cfg.gate.n_boot} resamples), sign-flip "
            "permutation "
            f"p by user ({cfg.gate.n_perm}); repeated identical requests counted once; target needs p < "
            f"{cfg.gate.alpha} and >= {cfg.gate.min_discordant} users differing",
            "golden": f"golden set {cfg.golden!r}" if cfg.golden else "no golden set given",
            **({"off_policy": off_policy} if off_policy else {}),
        },
        config=cfg.gate,
    )
    ctx.timings["gate"] = time.perf_counter() - t0
    return report, served_by, judge_s


def gate_log(ctx: Context, out: Path, ui: Progress = SILENT) -> SlateLog:
    """Gate users' traffic logged with simulated clicks by the champion (once per champion):
    separate from the selection users' log the remedies learned from."""
    cfg = ctx.config
    if cfg.clicks is None:
        raise ValueError("the gate's off-policy row needs simulated clicks (LoopConfig.clicks)")
    if ctx.gate_logged is None or ctx.gate_logged[0] != ctx.champion_id:
        spec = ClickSpec.parse(cfg.clicks)
        ui.step(f"log {cfg.click_requests} requests of gate users with simulated clicks ({spec})")
        log, _ = log_clicks(logging_stack(ctx.champion, cfg.click_epsilon), _click_truth(ctx), spec, ctx.gate_users,
                            cfg.click_requests, out / "clicks-gate.duckdb", seed=cfg.seed + 1, progress=ui)  # fmt: skip
        ctx.gate_logged = (ctx.champion_id, log)
    return ctx.gate_logged[1]


def off_policy_row(
    ctx: Context, candidate: Stack, out: Path, cfg: LoopConfig, ui: Progress = SILENT
) -> tuple[list[Any], str]:
    """The gate's independent row for a signal mode: the candidate's clicks per slate on gate
    users' logged traffic (IIPS, paired by user, refused when the ESS is too small) against the
    logged (exploring) policy's observed clicks; beside it, a report row estimating the champion
    itself without exploration on the same log (how much of the difference is exploration's
    cost); and the protocol line saying how it was logged."""
    from coachrec.coach.gate import GateRow
    from coachrec.coach.position_remedy import ope_row

    logger = logging_stack(ctx.champion, cfg.click_epsilon)
    try:
        log = gate_log(ctx, out, ui)
    except ValueError as exc:
        nan = float("nan")
        return [GateRow(OFF_POLICY, f"clicks per slate: refused, {exc}", "independent", nan, nan, nan, nan, nan, nan,
                        0, "higher", False)], "no logged gate traffic"  # fmt: skip
    how = (
        f"{len(log)} slates of {len(ctx.gate_users)} gate users (never in the log remedies learned from) served by the "
        f"champion's ranking (no MMR) exploring epsilon-greedy ({logger.config.epsilon:g}), clicks simulated "
        f"({ClickSpec.parse(cfg.clicks or '')}, truth: their held-out interactions); IIPS estimate of the "
        "candidate's clicks per slate against the logged clicks (exploration included), bootstrap by user; must be "
        "higher (CI above 0); refused when ESS < 200. Report row: the champion's own greedy order, estimated alike"
    )
    n_boot = min(cfg.gate.n_boot, 1000)
    rows: list[Any] = []
    stats = ItemStats.from_data(ctx.split.train, ctx.champion.catalog)
    greedy = replace(ctx.champion, config=replace(ctx.champion.config, epsilon=0.0))
    for role, stack in (("independent", candidate), ("report", greedy)):
        try:
            row = ope_row(log, logger, stack, stats, role="independent", config=cfg.gate, n_boot=n_boot,
                          seed=cfg.gate.seed)  # fmt: skip
        except (OPEError, ValueError) as exc:
            nan = float("nan")
            row = GateRow(OFF_POLICY, f"clicks per slate: refused, {exc}", "independent", nan, nan, nan, nan, nan,
                          nan, 0, "higher", False)  # fmt: skip
        if role == "report":
            row = replace(row, metric=f"{row.metric}; the champion without exploration", role="report", passed=None)
        rows.append(row)
        ui.note(f"off-policy: {row.metric}: {row.champion:.4f} -> {row.candidate:.4f}, CI {row.ci}")
    return rows, how


def pool_target(rows: list[Any], pooled: dict[str, list[Any]], target_mode: str, config: GateConfig) -> list[Any]:
    """With the target judged in several sections (users' traffic, conversations), the target
    row is the rate over all of them, clustered by user and dialog; each section's own row
    becomes a guard (it must not be worse with confidence): a remedy that fixes the failures
    where they are is not refused for leaving another section as it was."""
    both = failure_rows(
        "all judged traffic",
        {target_mode: np.concatenate(pooled["champion"])},
        {target_mode: np.concatenate(pooled["candidate"])},
        pooled["users"],
        target_mode,
        config,
        keys=pooled["keys"],
    )
    sections = [replace(r, role="guard", passed=not (r.ci_low > 0)) if r.role == "target" else r for r in rows]
    return both + sections


def _tier(tier: str, n: int, seconds_each: np.ndarray | float, note: str) -> dict[str, Any]:
    ms = np.atleast_1d(np.asarray(seconds_each, dtype=np.float64)) * 1000
    price = TierPrice()
    return {
        "tier": tier,
        "n": n,
        "ms_mean": float(ms.mean()) if len(ms) else None,
        "ms_p95": float(np.percentile(ms, 95)) if len(ms) > 1 else None,
        "usd_per_1k": float(ms.mean() / 1000 * price.usd_per_second * 1000) if len(ms) else None,
        "note": note,
    }


def next_iteration(previous: Context, registry: Registry, config: LoopConfig | None = None) -> Context:
    """The context of a further iteration on the same data: the same user and dialog split, the
    same measured teacher; the registry's champion (the one just promoted, if any) to start from."""
    champion_id = registry.champion
    if champion_id is None:
        raise ValueError("the registry has no champion to start the next iteration from")
    ctx = replace(previous, config=config or previous.config, timings={})
    if champion_id != previous.champion_id:
        ctx.champion, ctx.champion_id = registry.load_stack(champion_id), champion_id
    return ctx


def run_loop(
    config: LoopConfig, registry: Registry, out: Path, ui: Progress = SILENT, *, previous: Context | None = None
) -> LoopResult:
    """Observe, judge, pick the target mode, try every remedy for it (each built on selection
    users, each gated on the gate users), promote at most one: the first, in the order of the
    remedies' selection-side score, that passes with the target's alpha divided by the number of
    remedies gated (Bonferroni: trying many remedies does not buy a promotion). With `previous`
    (an earlier iteration's `LoopResult.context`), the split and the measured teacher are reused
    and the registry's champion is the starting point."""
    start = time.perf_counter()
    check_config(config, previous.rubric if previous is not None else load_rubric())
    out.mkdir(parents=True, exist_ok=True)
    (out / "traces.duckdb").unlink(missing_ok=True)
    if previous is None:
        ctx = prepare(config, registry, ui)
    else:
        ctx = next_iteration(previous, registry, config)
        ui.step(f"iteration on champion {ctx.champion_id}: {ctx.champion.describe()} (split and teacher reused)")
    obs = observe(ctx, out, ui)
    target, skipped = choose_target(ctx, obs)
    for why in skipped:
        ui.note(f"not targeted: {why}", level="dim")
    tiers = [
        _tier(
            "serve: champion pipeline (traced)",
            len(obs.served.latency_ms),
            obs.served.latency_ms / 1000,
            ctx.champion.describe(),
        ),
        _tier(
            "teacher: program checks + relevance committee",
            len(obs.served.cases),
            obs.judge_seconds / max(len(obs.served.cases), 1),
            "per judged trace",
        ),
    ]
    if obs.llm_traces:
        tiers.append(
            _tier(
                f"teacher: LLM criteria ({obs.llm_model})",
                obs.llm_traces,
                obs.llm_seconds / obs.llm_traces,
                "per judged trace, both slate orders",
            )
        )
    if target is None:
        decision = "REFUSE: no failure mode may be coached (" + "; ".join(skipped or ["no failures found"]) + ")"
        return LoopResult(ctx, obs, None, [], False, decision, tiers, {}, time.perf_counter() - start)

    ui.step(f"build the remedies for {target} on the selection users")
    t0 = time.perf_counter()
    rctx = RemedyContext(
        ctx.champion,
        ctx.split,
        ctx.distill_users,
        obs.served.cases,
        ctx.rubric,
        ctx.trust,
        ctx.committee,
        target,
        config.distill,
        config.seed,
        ui,
        ctx.conversations.get("selection", []),
        ctx.targets,
        ctx.dialog_records.get("selection", []),
        obs.logged,
    )
    tried: list[Tried] = []
    built: list[tuple[Tried, Stack]] = []
    for r in remedies_for(target):
        try:
            cand = r.build(rctx)
        except RemedyError as exc:
            tried.append(Tried(r.name, r.span, f"not applicable: {exc}"))
            ui.note(f"{r.name}: not applicable: {exc}", level="dim")
            continue
        t = Tried(r.name, r.span, cand.note, selection=cand.selection, details=cand.details)
        tried.append(t)
        built.append((t, cand.stack))
        ui.note(f"{r.name}: {cand.note}")
    ctx.timings["remedies"] = time.perf_counter() - t0
    built.sort(key=lambda tb: -np.nan_to_num(next(iter(tb[0].selection.values()), np.nan), nan=-np.inf))
    gate_config = replace(config.gate, alpha=config.gate.alpha / max(len(built), 1))
    promoted: Tried | None = None
    for t, stack in built:
        v = registry.register(
            stack,
            description=f"candidate {stack.describe()} ({t.remedy}) targeting {target}",
            dataset=ctx.data.name,
            data=ctx.data_info,
            judge_version=obs.judge_version,
            parent=ctx.champion_id,
            distillation=t.details.get("distillation"),
        )
        t.candidate_id = v.id
        ui.step(f"gate {v.id} ({t.remedy}) against champion {ctx.champion_id}")
        report, served_by, _ = gate_candidate(ctx, stack, target, out / t.remedy, ui, gate_config=gate_config)
        t.gate = report
        registry.attach_gate(v.id, report.to_dict())
        if report.promote and promoted is None:
            promoted, t.promoted = t, True
            registry.promote(v.id, note=report.verdict())
            held = served_by.get("held-out traffic/candidate")
            if held is not None:
                tiers.insert(
                    1,
                    _tier(
                        f"serve: candidate pipeline (traced, {t.remedy})",
                        len(held.latency_ms),
                        held.latency_ms / 1000,
                        stack.describe(),
                    ),
                )
        else:
            registry.refuse(
                v.id,
                note=report.verdict()
                if not report.promote
                else f"passed, but {promoted.remedy if promoted else '?'} came first in the selection order",
            )
    if not built:
        decision = (
            f"REFUSE: no remedy for {target} could be built (" + "; ".join(f"{t.remedy}: {t.note}" for t in tried) + ")"
        )
    elif promoted is not None:
        decision = promoted.gate.verdict() if promoted.gate else "PROMOTE"
    else:
        decision = (
            "REFUSE: every remedy was refused by the gate ("
            + "; ".join(f"{t.remedy}: {t.gate.reasons[0] if t.gate and t.gate.reasons else t.note}" for t, _ in built)
            + ")"
        )
    result = LoopResult(ctx, obs, target, tried, promoted is not None, decision, tiers, {}, time.perf_counter() - start)
    if result.gate is not None:
        result.before_after = {
            r.metric.removesuffix(" rate"): {
                "before": r.champion,
                "after": r.candidate,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "n": r.n,
            }
            for r in result.gate.rows
            if r.section == "held-out traffic"
        }
    return result


def run_iterations(
    config: LoopConfig, registry: Registry, out: Path, ui: Progress = SILENT, *, iterations: int = 2
) -> Iterator[tuple[int, Path, LoopResult]]:
    """Up to `iterations` coach iterations, each starting from the champion the last one left,
    on the same user and dialog split and the same measured teacher, each skipping the failure
    modes earlier iterations targeted; stops early when an iteration finds nothing to target.
    Yields (iteration, its folder, its result); the first iteration writes to `out`, the next
    ones to `out/iteration-N`."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    previous: Context | None = None
    for it in range(1, iterations + 1):
        folder = out if it == 1 else out / f"iteration-{it}"
        result = run_loop(config, registry, folder, ui, previous=previous)
        yield it, folder, result
        if result.target_mode is None:
            return
        previous = result.context
        config = replace(config, skip_modes=(*config.skip_modes, result.target_mode))
