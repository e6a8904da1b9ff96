"""django-filter FilterSets that refuse what they do not know.

A list endpoint's query parameters are a FilterSet: validated and typed by its form,
documented in the OpenAPI schema (drf-spectacular reads FilterSets), applied to the
queryset. ``StrictFilterSet`` adds one rule: a parameter the endpoint does not know (a
typo, a filter of another endpoint) is a 400 ``invalid_parameters`` naming it, never
silently ignored.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.core.exceptions import ValidationError

# Read by the paginators and by DRF's format override, not by a FilterSet.
NOT_FILTERS = frozenset({"page", "page_size", "cursor", "format"})


class StrictFilterSet(django_filters.FilterSet):
    def is_valid(self) -> bool:
        valid = super().is_valid()
        unknown = sorted(set(self.data) - set(self.filters) - NOT_FILTERS)
        for name in unknown:
            self.form.errors[name] = self.form.error_class(
                [ValidationError("unknown parameter", code="unknown")])
        return valid and not unknown


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (NumberFilter takes decimals)."""

    field_class = forms.IntegerField

