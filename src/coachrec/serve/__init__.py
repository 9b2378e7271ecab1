"""The serving path: a traced pipeline of composable stages, durable feedback, an HTTP API.

    from coachrec.serve import Service, RecommendRequest
    from coachrec.policy import Constraints, Range

    service = Service.open(db="traces.duckdb")        # fits item-kNN + popularity on MovieLens
    result = service.recommend(RecommendRequest(user_id="1", k=10,
        constraints=Constraints(exclude_genres=("Horror",), ranges={"year": Range(min=1990)})))

Stages (`coachrec.serve.stages`) take and return a `Candidates` set inside a span of their kind;
`Pipeline(catalog, stages, models, tracer)` runs any sequence of them. The HTTP API lives in
`coachrec.serve.api` (it needs the `serve` extra: FastAPI and uvicorn).
"""

from coachrec.serve.candidates import Candidates, RequestContext, ServingCatalog
from coachrec.serve.feedback import FeedbackEvent, FeedbackLog, Relevance
from coachrec.serve.pipeline import Pipeline, PipelineConfig, RecommendRequest, RecommendResult, UnknownUserError
from coachrec.serve.retrievers import RecommenderRetriever, Retriever
from coachrec.serve.service import Service
from coachrec.serve.span_metrics import update_span_metrics
from coachrec.serve.stack import Stack, fit_default_stack, load_stack, resolve_stack
from coachrec.serve.stages import BlendRanker, ConstraintFilter, Diversify, Explain, Explore, Guardrail, Retrieve, Stage

__all__ = [
    "BlendRanker",
    "Candidates",
    "ConstraintFilter",
    "Diversify",
    "Explain",
    "Explore",
    "FeedbackEvent",
    "FeedbackLog",
    "Guardrail",
    "Pipeline",
    "PipelineConfig",
    "RecommendRequest",
    "RecommendResult",
    "RecommenderRetriever",
    "Relevance",
    "RequestContext",
    "Retrieve",
    "Retriever",
    "Service",
    "ServingCatalog",
    "Stack",
    "Stage",
    "UnknownUserError",
    "fit_default_stack",
    "load_stack",
    "resolve_stack",
    "update_span_metrics",
]
