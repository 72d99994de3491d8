"""A copy of the project's own files in a temporary folder, for tests that edit one of them."""

from __future__ import annotations

import shutil
from pathlib import Path

from carecast.project import CHECKOUT_DIR

PROJECT_FOLDERS = ("dbt_like_models", "segments", "templates", "campaigns")
PROJECT_FILES = ("purposes.yaml", "streams.yaml")


def copy_project(target: Path) -> Path:
    for folder in PROJECT_FOLDERS:
        shutil.copytree(CHECKOUT_DIR / folder, target / folder)
    for name in PROJECT_FILES:
        shutil.copy(CHECKOUT_DIR / name, target)
    return target
