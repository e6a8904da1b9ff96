"""The webhook contract, delivered to a real HTTP receiver of the test's own: the envelope
and its absolute URLs, the HMAC signature (checked by the receiver, with its own key),
X-PMR-Event, delivery for failed and cancelled jobs, retries by the task until delivered or
WEBHOOK_MAX_ATTEMPTS, and giving up after WEBHOOK_MAX_SECONDS."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from jobs import webhooks
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "receiver-shared-secret"


class Receiver:
    """Answers each request with the next of ``answers`` (then 200), keeping what came.

    An answer is a status, or ``(status, headers)``; ``stall`` holds the first answer back
    until it is set (a receiver that does not answer in time)."""

    def __init__(self, answers: list | None = None, *, stall: bool = False) -> None:
        self.answers = list(answers or [])
        self.received: list[dict] = []
        self.release = threading.Event()
        if not stall:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append({"method": self.command, "path": self.path,
                                          "body": body, "headers": dict(self.headers)})
                receiver.release.wait(30)
                answer = receiver.answers.pop(0) if receiver.answers else 200
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    settings.WEBHOOK_SECRET = KEY
    settings.WEBHOOK_BACKOFF_SECONDS = 2
    made = []

    def make(answers=None, **options) -> Receiver:
        made.append(Receiver(answers, **options))
        return made[-1]

    yield make
    for each in made:
        each.release.set()
        each.server.shutdown()


def verified(delivery: dict) -> dict:
    """The body, once the receiver has checked its signature with the shared key."""
    expected = hmac.new(KEY.encode(), delivery["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery["headers"]["X-PMR-Signature"], f"sha256={expected}")
    return json.loads(delivery["body"])


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_job_is_delivered_signed_with_its_event_and_absolute_urls(receiver, status):
    hook = receiver()
    job = JobFactory(kind="video", status=status, callback_url=hook.url,
                     finished_at=timezone.now(), base_url="https://pmr.example.com/",
                     error_code="decode_failed" if status == "failed" else "")
    webhooks.deliver(job_id=str(job.pk), attempt=1)  # delivered: no DeliveryFailed
    [delivery] = hook.received
    body = verified(delivery)
    assert body["event"] == delivery["headers"]["X-PMR-Event"] == f"job.{status}"
    assert body["job"]["id"] == str(job.pk) and body["job"]["status"] == status
    assert body["job"]["status_url"] == f"https://pmr.example.com/api/jobs/{job.pk}"
    assert body["job"]["detections_url"].startswith("https://pmr.example.com/api/jobs/")
    if status == "failed":
        assert body["job"]["error"]["code"] == "decode_failed"
    job.refresh_from_db()
    assert [entry["status_code"] for entry in job.webhook.log] == [200]


def test_a_tampered_body_fails_the_receivers_check(receiver):
    hook = receiver()
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    webhooks.deliver(job_id=str(job.pk), attempt=1)
    tampered = dict(hook.received[0], body=hook.received[0]["body"].replace(b"video", b"image"))
    with pytest.raises(AssertionError):
        verified(tampered)


def test_failed_deliveries_are_retried_by_the_task_until_one_is_delivered(receiver):
    from jobs.tasks import send_webhook
    from pmr.celery import app

    app.conf.task_eager_propagates = False  # a retry is not an error

    hook = receiver(answers=[500, 503, 500])
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    result = send_webhook.apply(args=(str(job.pk),))  # here: each retry runs at once
    assert result.successful()
    assert [d["headers"]["X-PMR-Delivery-Attempt"] for d in hook.received] == [
        "1", "2", "3", "4"]
    job.refresh_from_db()
    assert [e["status_code"] for e in job.webhook.log] == [500, 503, 500, 200]
    # Celery's exponential backoff with full jitter spaces the retries out.
    assert send_webhook.retry_backoff and send_webhook.retry_jitter


def test_a_failed_attempt_asks_for_another_until_the_last(receiver, settings):
    hook = receiver(answers=[500, 500])
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    with pytest.raises(webhooks.DeliveryFailed, match="HTTP 500"):
        webhooks.deliver(job_id=str(job.pk), attempt=1)
    webhooks.deliver(job_id=str(job.pk), attempt=2)  # the last: failed, and no other
    assert len(hook.received) == 2


def test_no_attempt_is_made_past_webhook_max_seconds(receiver, settings):
    hook = receiver(answers=[500])
    settings.WEBHOOK_MAX_SECONDS = 10
    job = JobFactory(kind="video", callback_url=hook.url,
                     finished_at=timezone.now() - timedelta(seconds=11))
    webhooks.deliver(job_id=str(job.pk), attempt=4)
    assert hook.received == []
    job.refresh_from_db()
    assert job.webhook.log[-1]["gave_up"] == "no delivery within 10 s"


def test_no_attempt_is_made_past_the_last_one(receiver, settings):
    hook = receiver(answers=[500])
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    job = JobFactory(kind="video", callback_url=hook.url,
                     finished_at=timezone.now() - timedelta(seconds=1))
    webhooks.deliver(job_id=str(job.pk), attempt=1)  # the last attempt: no DeliveryFailed
    assert len(hook.received) == 1


def test_a_cancelled_video_sends_its_webhook(receiver, eager_celery):
    from jobs.services import job_cancel

    hook = receiver()
    job = JobFactory(kind="video", status="running", callback_url=hook.url,
                     base_url="http://testserver/")
    job_cancel(job=job)  # the webhook task runs inline here
    [delivery] = hook.received
    assert verified(delivery)["event"] == "job.cancelled"


def test_a_video_part_that_raises_fails_its_job_and_the_webhook_says_so(receiver, eager_celery,
                                                                       monkeypatch):
    from videos import runner, tasks

    hook = receiver()
    job = JobFactory(kind="video", status="running", callback_url=hook.url)

    def a_bug(**kwargs):
        raise RuntimeError("a bug in the pipeline")

    monkeypatch.setattr(runner, "video_part_run", a_bug)
    tasks.process_video_part.apply(args=(str(job.pk), 0))
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "internal_error")
    assert job.error_message == "RuntimeError: a bug in the pipeline"
    [delivery] = hook.received
    body = verified(delivery)
    assert body["event"] == "job.failed" and body["job"]["error"]["code"] == "internal_error"


def test_without_a_secret_nothing_is_signed(receiver, settings):
    hook = receiver()
    settings.WEBHOOK_SECRET = ""
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    webhooks.deliver(job_id=str(job.pk), attempt=1)
    [delivery] = hook.received
    assert "X-PMR-Signature" not in delivery["headers"]
    assert delivery["headers"]["X-PMR-Event"] == "job.succeeded"


def test_a_receiver_that_does_not_answer_in_time_is_retried(receiver, settings):
    hook = receiver(stall=True)
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    with pytest.raises(webhooks.DeliveryFailed):  # retried after the backoff
        webhooks.deliver(job_id=str(job.pk), attempt=1)
    job.refresh_from_db()
    [entry] = job.webhook.log
    assert "status_code" not in entry and "Timeout" in entry["error"]


def test_a_redirect_is_never_followed(receiver):
    hook = receiver(answers=[(307, {"Location": "/elsewhere"})])
    job = JobFactory(kind="video", callback_url=hook.url, finished_at=timezone.now())
    with pytest.raises(webhooks.DeliveryFailed):  # not delivered: retried
        webhooks.deliver(job_id=str(job.pk), attempt=1)
    assert [d["path"] for d in hook.received] == ["/hook"]
    job.refresh_from_db()
    assert [entry["status_code"] for entry in job.webhook.log] == [307]
