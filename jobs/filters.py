"""Query parameters: the job list's, and a job's detections' and segments' (bounds are
inclusive)."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from core.filters import IntegerFilter, StrictFilterSet
from jobs.models import Detection, Job, Track


class JobFilter(StrictFilterSet):
    kind = django_filters.ChoiceFilter(choices=Job.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)

    class Meta:
        model = Job
        fields = ("kind", "status")


class _ByLabelAndConfidence(StrictFilterSet):
    label = django_filters.CharFilter()
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte",
                                                 min_value=0, max_value=1)

    class Meta:
        model = Detection
        fields = ()


class DetectionFilter(_ByLabelAndConfidence):
    frame_from = IntegerFilter(field_name="frame_index", lookup_expr="gte", min_value=0)
    frame_to = IntegerFilter(field_name="frame_index", lookup_expr="lte", min_value=0)
    t_from_ms = IntegerFilter(field_name="timestamp_ms", lookup_expr="gte", min_value=0)
    t_to_ms = IntegerFilter(field_name="timestamp_ms", lookup_expr="lte", min_value=0)
    track_id = IntegerFilter(field_name="track_id", min_value=0,
                             help_text="the boxes of one tracked object")


class TrackFilter(StrictFilterSet):
    label = django_filters.CharFilter()
    min_duration_ms = IntegerFilter(field_name="duration_ms", lookup_expr="gte", min_value=0)
    t_from_ms = IntegerFilter(field_name="last_ms", lookup_expr="gte", min_value=0,
                              help_text="tracks present at or after this time")
    t_to_ms = IntegerFilter(field_name="first_ms", lookup_expr="lte", min_value=0,
                            help_text="tracks present at or before this time")

    class Meta:
        model = Track
        fields = ()


class SegmentFilter(_ByLabelAndConfidence):
    gap_ms = IntegerFilter(method="_not_a_filter", min_value=0, max_value=3_600_000,
                           help_text="gap tolerance: absences up to this long do not split a "
                                     "segment (default: two processed-frame intervals)")
    by = django_filters.ChoiceFilter(
        method="_grouping", choices=(("label", "label"), ("track", "track")),
        help_text="label (default): when each label is present; track: when each tracked "
                  "object is")

    @extend_schema_field(OpenApiTypes.INT)
    def _not_a_filter(self, queryset, name, value):
        return queryset  # read by the view: how segments are joined, not which rows count

    @extend_schema_field(OpenApiTypes.STR)
    def _grouping(self, queryset, name, value):
        return queryset  # read by the view: what a segment is of
