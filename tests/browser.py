"""Headless Chromium for tests that look at pages as a browser does: Debian's package, driven by Playwright.

Playwright's own browser download cannot be reached here, so ``install_chromium()`` puts Debian's
``chromium`` package in place when ``/usr/bin/chromium`` is missing (as root, through apt-get), and
Playwright launches that binary (``launched_browser()``). ``browser`` is a session-scoped fixture over
it, registered once in ``tests/conftest.py`` (a second definition would start a second Playwright in
the same thread, which Playwright refuses); ``open_page()`` loads a URL or a file and returns every
URL the page asked for, so a test can assert that nothing left loopback::

    from tests.browser import is_local, open_page

    def test_page(browser, tmp_path):
        with open_page(browser, tmp_path / "report.html") as (page, requested):
            assert page.title() == ...
        assert all(is_local(url) for url in requested)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
_LOOPBACK_NAMES = {"localhost"}


class ChromiumUnavailable(RuntimeError):
    """Chromium is missing and cannot be installed here."""


def install_chromium() -> Path:
    """``apt-get install chromium`` unless ``/usr/bin/chromium`` exists; return the binary's path."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ChromiumUnavailable("Chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)
    if not CHROMIUM.exists():
        raise ChromiumUnavailable(f"apt-get install chromium did not provide {CHROMIUM}")
    return CHROMIUM


@contextlib.contextmanager
def launched_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, installed first when missing."""
    executable = install_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with launched_browser() as launched:
        yield launched


def is_local(url: str, page_file: Path | None = None) -> bool:
    """True for the page's own file, inline ``data:``/``about:`` URLs and loopback hosts; False otherwise."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "about", "blob"):
        return True
    if parts.scheme == "file":
        return page_file is not None and Path(parts.path) == page_file.resolve()
    host = parts.hostname or ""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def open_page(
    browser: Browser, target: str | Path, viewport: dict[str, int] | None = None
) -> Iterator[tuple[Page, list[str]]]:
    """Load a URL or a local file in a fresh context; yield the page and the list of URLs it requested.

    The list grows while the page is open (late requests from images, fonts or scripts are caught
    too) and is complete when the block exits: the context waits for the network to go idle first.
    A request to anything but the file itself or loopback is logged, then aborted, never sent.
    """
    page_file = target if isinstance(target, Path) else None
    url = target.resolve().as_uri() if isinstance(target, Path) else target
    context = browser.new_context(viewport=viewport or {"width": 1100, "height": 900})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    # Logged first, then stopped: a test of a leaky page must not leak either.
    context.route("**/*", lambda route: route.continue_() if is_local(route.request.url, page_file) else route.abort())
    try:
        page = context.new_page()
        page.goto(url, wait_until="networkidle")
        yield page, requested
        page.wait_for_load_state("networkidle")
    finally:
        context.close()
