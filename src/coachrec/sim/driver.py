"""Drive the real serving path with simulated users, so clicks land where production's would.

    truth, train = PlantedTruth.holdout(datasets.load("ml-latest-small"))
    stack = Stack.fit(train, config=PipelineConfig(epsilon=0.3, diversity=1.0, candidates=30), learn_blend=False)
    service = Service.open(stack, db="sim.duckdb")
    Simulator(service, truth, PositionBased(examination("ultra", 1.0, 10))).run(1_000)
    log = read_slates(service.store, service.feedback)   # what OPE and PAL read

Each simulated request goes through `Service.recommend` (traced: pool, slate, propensities);
the simulated user examines and clicks according to the click model and the planted truth, and
one impression per shown slot and one click per clicked slot, with positions, are recorded with
`Service.record_feedback`, as the HTTP API's /v1/feedback would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coachrec.data import IdMap
from coachrec.policy import Explorer
from coachrec.policy.bandits import CandidateExplorer
from coachrec.policy.ope import SlateLog
from coachrec.progress import SILENT, Progress
from coachrec.serve import FeedbackEvent, FeedbackLog, Pipeline, RecommendRequest, Service
from coachrec.serve.stages import Explore
from coachrec.sim.clicks import ClickModel
from coachrec.sim.truth import PlantedTruth


def set_explorer(pipeline: Pipeline, explorer: Explorer | CandidateExplorer) -> None:
    """Serve `explorer` in the pipeline's exploration stage (PipelineConfig only builds epsilon-greedy)."""
    stages = [s for s in pipeline.stages if isinstance(s, Explore)]
    if not stages:
        raise ValueError("the pipeline has no exploration stage")
    for stage in stages:
        stage.explorer = explorer


@dataclass
class SimulationStats:
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    expected_clicks: float = 0.0
    """Sum of the click model's expected clicks of the shown slates (the on-policy truth)."""
    shown: dict[str, int] = field(default_factory=dict)

    @property
    def expected_clicks_per_request(self) -> float:
        return self.expected_clicks / max(self.requests, 1)


class Simulator:
    def __init__(self, service: Service, truth: PlantedTruth, clicks: ClickModel, *, seed: int = 0) -> None:
        self.service = service
        self.truth = truth
        self.clicks = clicks
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        models = service.pipeline.models[0]
        if models.users is None or models.items is None:
            raise ValueError("the served models are not fitted")
        self._user_ids = models.users
        self._items = models.items
        self._counter = 0

    def run(self, n_requests: int, *, k: int = 10, batch: int = 200, progress: Progress = SILENT) -> SimulationStats:
        """Serve `n_requests` requests of users drawn uniformly from those with planted truth."""
        if self.truth.users is None or not len(self.truth.users):
            raise ValueError("the planted truth has no user with a graded held-out item")
        users = self.rng.choice(self.truth.users, size=n_requests)
        stats = SimulationStats()
        pending: list[FeedbackEvent] = []
        with progress.bar("simulated requests", total=n_requests) as advance:
            for done, u in enumerate(users.tolist(), 1):
                self._serve(int(u), k, stats, pending)
                if len(pending) >= batch:
                    self.service.record_feedback(pending)
                    pending.clear()
                if done % 100 == 0 or done == n_requests:
                    advance(done, n_requests)
        if pending:
            self.service.record_feedback(pending)
        self.service.store.flush()
        return stats

    def _serve(self, u: int, k: int, stats: SimulationStats, pending: list[FeedbackEvent]) -> None:
        user_id = str(self._user_ids.ids[u])
        request_id = f"sim{self.seed}-{self._counter}"
        self._counter += 1
        result = self.service.recommend(RecommendRequest(user_id=user_id, k=k, request_id=request_id))
        if not result.items:
            return
        idx = self._items.encode(result.items)
        pref = self.truth.preference(np.full(len(idx), u), idx)[None, :]
        clicked = self.clicks.sample(pref, self.rng)[0]
        stats.requests += 1
        stats.impressions += len(idx)
        stats.clicks += int(clicked.sum())
        stats.expected_clicks += float(self.clicks.click_probability(pref).sum())
        for pos, item in enumerate(result.items):
            pending.append(FeedbackEvent(request_id, item, "impression", position=pos, user_id=user_id))
            if clicked[pos]:
                pending.append(FeedbackEvent(request_id, item, "click", position=pos, user_id=user_id))


def replay_clicks(
    feedback: FeedbackLog, log: SlateLog, truth: PlantedTruth, clicks: ClickModel, users: IdMap, items: IdMap,
    *, seed: int = 0, batch: int = 5_000,
) -> int:  # fmt: skip
    """Record in `feedback` the impressions and clicks of other simulated users (another click
    model) on the slates already served in `log`: a stateless logging policy would have shown
    them the same slates, so one served log serves every click model. Returns clicks recorded."""
    rng = np.random.default_rng(seed)
    u = users.encode([str(x) for x in log.user_id], unknown="mask")
    if (u < 0).any():
        raise ValueError("the log holds users the served models do not know")
    if log.shown_items is None:
        raise ValueError("the log has no shown item ids")
    idx = items.encode(log.shown_items.ravel().tolist(), unknown="mask").reshape(log.shown.shape)
    width = log.shown.shape[1]
    pref = np.where(log.slots & (idx >= 0), truth.preference(np.repeat(u[:, None], width, axis=1), idx), 0.0)
    sampled = clicks.sample(pref, rng) * log.slots
    events: list[FeedbackEvent] = []
    for i, j in zip(*np.nonzero(log.slots), strict=True):
        request, user, item = str(log.request_id[i]), str(log.user_id[i]), str(log.shown_items[i, j])
        events.append(FeedbackEvent(request, item, "impression", position=int(j), user_id=user))
        if sampled[i, j]:
            events.append(FeedbackEvent(request, item, "click", position=int(j), user_id=user))
    for lo in range(0, len(events), batch):
        feedback.append(events[lo : lo + batch])
    return int(sampled.sum())
