"""The browser tests' Chromium (Debian's, driven by Playwright) and where their screenshots go."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import missing

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "browser"


@pytest.fixture
def browser_page(monkeypatch):
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright is not installed")
    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test
    # makes in between are still plain synchronous calls, one at a time.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        missing("no Chromium: install the Debian packages chromium and chromium-driver "
                    "(make test does, as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        yield page
        browser.close()
