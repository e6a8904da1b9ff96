"""The job list's query parameters."""

from __future__ import annotations

import django_filters

from detection.models import Job
from pmr.filters import StrictFilterSet


class JobFilter(StrictFilterSet):
    kind = django_filters.ChoiceFilter(choices=Job.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)

    class Meta:
        model = Job
        fields = ("kind", "status")
