"""schemathesis against the running service's own OpenAPI schema: no 5xx, and every
response matches what the schema says (status codes, content types, headers, bodies);
requests the schema forbids are refused.

Not checked: that every schema-valid request is accepted — a request can match the
schema and still carry bytes that are not an image, which the API rightly refuses (400).

(schemathesis's pytest plugin does not load under this pytest; its Python API drives
hypothesis directly, operation by operation.)
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.service import Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory, tiny_paths):
    with Service.running(tmp_path_factory.mktemp("pmr-fuzz"),
                         THROTTLE_USER_RATE="100000/minute",
                         THROTTLE_DETECT_RATE="100000/minute", DETECT_WAIT_SECONDS="5") as running:
        yield running


def test_the_api_never_fails_and_matches_its_schema(fuzz_service):
    schema = schemathesis.openapi.from_url(f"{fuzz_service.base_url}/api/schema/?format=json")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {fuzz_service.token}"
    failures, operations = {}, 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case) -> None:
            case.call_and_validate(base_url=fuzz_service.base_url, session=session,
                                   checks=CHECKS)

        try:
            exercise()
        except Exception as exc:
            failures[f"{operation.method.upper()} {operation.path}"] = f"{exc}"[:2000]
    assert operations >= 9
    assert not failures, "\n\n".join(f"{name}:\n{error}" for name, error in failures.items())
