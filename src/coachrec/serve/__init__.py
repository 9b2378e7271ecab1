"""The serving path: a `Stack` served by a traced pipeline of composable stages, durable
feedback, the HTTP routes.

    from coachrec.serve import RecommendRequest, Service, Stack
    from coachrec.policy import Constraints, Range

    stack = Stack.fit(coachrec.datasets.load("ml-latest-small"))   # item-kNN + popularity
    service = Service.open(stack, db="traces.duckdb")
    result = service.recommend(RecommendRequest(user_id="1", k=10,
        constraints=Constraints(exclude_genres=("Horror",), ranges={"year": Range(min=1990)})))

Stages (`coachrec.serve.stages`) take and return a `Candidates` set inside a span of their kind;
`Pipeline(catalog, stages, models, tracer)` runs any sequence of them. The HTTP app is assembled
in `coachrec.app` (it needs the `serve` extra: FastAPI and uvicorn).
"""

from coachrec.serve.candidates import Candidates, RequestContext
from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, Relevance
from coachrec.serve.pipeline import Pipeline, PipelineConfig, RecommendRequest, RecommendResult, UnknownUserError
from coachrec.serve.retrievers import RecommenderRetriever, Retriever
from coachrec.serve.service import Service
from coachrec.serve.stack import Stack, StackScorer
from coachrec.serve.stages import LearnedRanker, Stage

__all__ = [
    "Candidates",
    "FeedbackEvent",
    "FeedbackLog",
    "LearnedRanker",
    "Pipeline",
    "PipelineConfig",
    "RecommendRequest",
    "RecommendResult",
    "RecommenderRetriever",
    "Relevance",
    "RequestContext",
    "Retriever",
    "Service",
    "Stack",
    "StackScorer",
    "Stage",
    "UnknownUserError",
]
