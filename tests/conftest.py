"""Shared fixtures: the real project files, and a fresh data home per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.project import Project, load_project
from tests.browser import browser  # noqa: F401  (one session-wide Chromium for every browser test)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SYNTHEA_27 = SHARED_DATA / "synthea-27"


@pytest.fixture(scope="session")
def project() -> Project:
    return load_project()


@pytest.fixture
def home(tmp_path: Path) -> CarecastHome:
    return CarecastHome(tmp_path / "home").ensure()


@pytest.fixture
def kms(home: CarecastHome) -> LocalKms:
    return LocalKms(home.keys)


@pytest.fixture
def lake(home: CarecastHome, kms: LocalKms, project: Project) -> Lake:
    return Lake(home.lake, kms, project.registry)
