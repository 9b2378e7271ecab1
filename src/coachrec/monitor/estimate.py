"""Label-free quality: the judged failure rate of unjudged traffic, estimated from a calibrated
model of the judge's verdicts (in the spirit of NannyML's CBPE).

A logistic model (`teacher.relevance.LogisticBlend`) learns P(the judge fails a request on a
criterion) from the judge-independent columns of a judged window (inputs and stage scores); the
estimate for another window is the mean predicted probability over its requests. It follows
changes of the traffic the model can see, not changes of the judge: it estimates what the judge
it was fitted on would say.

    model = FailureModel.fit(judged_window, "relevance")
    model.estimate(unjudged_window)      # estimated failure rate
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coachrec.monitor.windows import Window
from coachrec.teacher.relevance import LogisticBlend


@dataclass
class FailureModel:
    criterion: str
    features: tuple[str, ...]
    fill: np.ndarray
    """Per feature, the fitting window's mean: what a missing value reads as."""
    blend: LogisticBlend
    n: int

    @classmethod
    def fit(cls, window: Window, criterion: str, *, l2: float = 1.0) -> FailureModel:
        """Fit on the requests of `window` the judge judged on `criterion`."""
        column = f"fail.{criterion}"
        if column not in window.frame.columns:
            raise ValueError(f"window has no judgments of {criterion!r}; judged columns: {window.columns('quality')}")
        judged = window.frame.filter(window.frame[column].is_not_null())
        features = tuple(
            c for c in window.columns("inputs") + window.columns("scores") if judged[c].null_count() < judged.height
        )
        x = judged.select(features).to_numpy().astype(np.float64)
        fill = np.nanmean(x, axis=0)
        x = np.where(np.isnan(x), fill, x)
        y = judged[column].to_numpy().astype(np.float64)
        return cls(criterion, features, fill, LogisticBlend.fit(x, y, l2=l2), judged.height)

    def probabilities(self, window: Window) -> np.ndarray:
        missing = [f for f in self.features if f not in window.frame.columns]
        if missing:
            raise ValueError(f"window lacks the columns the failure model reads: {missing}")
        x = window.frame.select(self.features).to_numpy().astype(np.float64)
        return self.blend.predict(np.where(np.isnan(x), self.fill, x))

    def estimate(self, window: Window) -> float:
        """Estimated share of `window`'s requests the judge would fail on the criterion."""
        return float(self.probabilities(window).mean())
