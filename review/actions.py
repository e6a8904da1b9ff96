"""Review changes, one POST endpoint each, served beside the admin's job page.

Each endpoint checks its fields with a form, calls one review service, and answers in the
caller's terms: a page's plain form POST is redirected back to the job page with a
message; a request that accepts JSON (the page's script) gets the changed record as
JSON, or the service's error shape (``{"error": {"code", "message", "details"}}``) with
a 4xx. They need the admin's change permission on the job, and the admin's session and
CSRF token like every admin POST.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from core.errors import ApiError, error_body
from jobs.models import Detection, Job
from review import services as review
from review.api import box_json, detection_json
from review.models import AddedBox
from review.views import visible_job
from videos.serializers import TrackSerializer
from videos.services import annotation_request


class LabelForm(forms.Form):
    label = forms.CharField(required=False, max_length=64)


class AddBoxForm(forms.Form):
    label = forms.CharField(max_length=64)
    x1 = forms.FloatField()
    y1 = forms.FloatField()
    x2 = forms.FloatField()
    y2 = forms.FloatField()
    frame_index = forms.IntegerField(min_value=0, required=False)


class MergeForm(forms.Form):
    into = forms.IntegerField(min_value=1)


class SplitForm(forms.Form):
    frame_index = forms.IntegerField(min_value=0)


class RerunForm(forms.Form):
    model = forms.CharField(required=False, max_length=64)
    min_confidence = forms.FloatField(required=False, min_value=0.0, max_value=0.999)


DONE_AS = {"confirm": "confirmed", "reject": "rejected", "relabel": "relabelled",
           "reset": "reset to unreviewed"}


class Done:
    """What an action did: the JSON answer, and the message for a page's form POST."""

    def __init__(self, data: dict, message: str = "", *, status: int = 200) -> None:
        self.data, self.message, self.status = data, message, status


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def checked(form: forms.Form) -> dict:
    """The form's cleaned data, or a 400 naming each bad field."""
    if not form.is_valid():
        details = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
        first = next(iter(details.items()))
        raise ApiError("invalid_parameters", f"{first[0]}: {first[1][0]}", details=details)
    return form.cleaned_data


class ReviewActions:
    """The endpoints, under the JobAdmin's URLs and with its permission checks."""

    def __init__(self, model_admin) -> None:
        self.admin = model_admin

    def urls(self) -> list:
        view = self.admin.admin_site.admin_view
        routes: list[tuple[str, Callable, str]] = [
            *((f"<uuid:job_id>/detections/<int:detection_id>/{verb}",
               self._detection(verb), f"jobs_job_{verb}") for verb in review.REVIEW_ACTIONS),
            *((f"<uuid:job_id>/tracks/<int:track_id>/{verb}", self._track(verb),
               f"jobs_job_track_{verb}") for verb in review.REVIEW_ACTIONS),
            ("<uuid:job_id>/tracks/<int:track_id>/merge", self.merge_tracks,
             "jobs_job_track_merge"),
            ("<uuid:job_id>/tracks/<int:track_id>/split", self.split_track,
             "jobs_job_track_split"),
            ("<uuid:job_id>/boxes", self.add_box, "jobs_job_add_box"),
            ("<uuid:job_id>/boxes/<int:box_id>/remove", self.remove_box, "jobs_job_remove_box"),
            ("<uuid:job_id>/mark-reviewed", self.mark_reviewed, "jobs_job_mark_reviewed"),
            ("<uuid:job_id>/rerun", self.rerun, "jobs_job_rerun"),
            ("<uuid:job_id>/annotate", self.annotate, "jobs_job_annotate"),
        ]
        return [path(route, view(require_POST(self._answered(handler))), name=name)
                for route, handler, name in routes]

    def _answered(self, handler: Callable[..., Done]) -> Callable:
        def endpoint(request, job_id, **kwargs):
            job = visible_job(self.admin, request, job_id, change=True)
            try:
                done = handler(request, job, **kwargs)
            except ApiError as exc:
                if wants_json(request):
                    return JsonResponse(error_body(exc.code, exc.message, exc.details),
                                        status=exc.status_code)
                messages.error(request, exc.message)
            else:
                if wants_json(request):
                    return JsonResponse(done.data, status=done.status)
                if done.message:
                    messages.success(request, done.message)
            return HttpResponseRedirect(self._back(request, job))
        return endpoint

    @staticmethod
    def _back(request, job: Job) -> str:
        back = reverse("admin:jobs_job_change", args=[job.pk])
        frame = request.POST.get("frame_index", "")
        if job.kind == Job.Kind.VIDEO and frame.isdigit():
            back += f"?frame={frame}"
        return back

    def _detection(self, verb: str) -> Callable[..., Done]:
        def change(request, job: Job, detection_id: int) -> Done:
            detection = get_object_or_404(Detection, pk=detection_id, job=job)
            label = checked(LabelForm(request.POST))["label"] or None
            detection = review.detection_review(detection=detection, user=request.user,
                                                action=verb, label=label)
            return Done(detection_json(detection))
        return change

    def _track(self, verb: str) -> Callable[..., Done]:
        def change(request, job: Job, track_id: int) -> Done:
            label = checked(LabelForm(request.POST))["label"] or None
            count = review.track_review(job=job, track_id=track_id, user=request.user,
                                        action=verb, label=label)
            return Done({"track_id": track_id, "boxes": count, "action": verb},
                        f"Track {track_id}: {count} boxes {DONE_AS[verb]}.")
        return change

    def merge_tracks(self, request, job: Job, track_id: int) -> Done:
        into = checked(MergeForm(request.POST))["into"]
        track = review.tracks_merge(job=job, track_id=track_id, into=into, user=request.user)
        return Done(TrackSerializer(track).data, f"Track {track_id} merged into {into}.")

    def split_track(self, request, job: Job, track_id: int) -> Done:
        frame = checked(SplitForm(request.POST))["frame_index"]
        track = review.track_split(job=job, track_id=track_id, frame_index=frame,
                                   user=request.user)
        return Done(TrackSerializer(track).data, f"Track {track_id} split at frame {frame}: "
                    f"its boxes from there on are track {track.track_id}.", status=201)

    def add_box(self, request, job: Job) -> Done:
        data = checked(AddBoxForm(request.POST))
        box = review.box_add(job=job, user=request.user, label=data["label"],
                             frame_index=data["frame_index"] or 0,
                             **{k: data[k] for k in ("x1", "y1", "x2", "y2")})
        return Done(box_json(box), status=201)

    def remove_box(self, request, job: Job, box_id: int) -> Done:
        box = get_object_or_404(AddedBox, pk=box_id, job=job)
        review.box_remove(box=box, user=request.user)
        box.refresh_from_db()
        return Done(box_json(box))

    def mark_reviewed(self, request, job: Job) -> Done:
        mark = review.job_mark_reviewed(job=job, user=request.user)
        return Done({"reviewed_by": request.user.get_username(),
                     "reviewed_at": mark.reviewed_at.isoformat()}, "Marked reviewed.")

    def rerun(self, request, job: Job) -> Done:
        data = checked(RerunForm(request.POST))
        rerun = review.job_rerun(job=job, user=request.user, model_name=data["model"] or None,
                                 min_confidence=data["min_confidence"])
        url = reverse("admin:jobs_job_change", args=[rerun.pk])
        return Done({"id": str(rerun.pk), "url": url},
                    format_html('Re-run queued: <a href="{}">job {}</a>.', url, rerun.pk),
                    status=201)

    def annotate(self, request, job: Job) -> Done:
        if job.kind != Job.Kind.VIDEO:
            raise ApiError("not_a_video_job", "annotated videos exist for video jobs only")
        if annotation_request(job=job):
            return Done({"requested": True}, "The annotated video is being rendered; reload "
                                             "this page in a while.")
        return Done({"requested": False}, "The annotated video was asked for recently.")
