"""coachrec: coachable recommender systems.

The loop: events -> data -> models.fit -> serve.Pipeline -> tracing.Store -> teacher.judge
-> review -> golden set -> coach (distill -> gate -> promote). See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
