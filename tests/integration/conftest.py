from __future__ import annotations

import pytest

from tests.integration.service import Service


@pytest.fixture(scope="session")
def service(tmp_path_factory, tiny_paths):
    """gunicorn + one Celery worker, ready, for the whole session."""
    with Service.running(tmp_path_factory.mktemp("pmr-service")) as running:
        yield running


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
