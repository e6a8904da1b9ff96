"""Celery tasks of the review app: scoring models on the reviewed data (a worker's work:
it loads the models). Sent by name (``jobs.dispatch.SCORE_MODELS``)."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from review import scoring


@shared_task(name="review.score_models", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(DatabaseError,), max_retries=5, retry_backoff=True)
def score_models(scoring_id: str) -> None:
    scoring.run_scoring(scoring_id)
