"""Point Dagster's instance at ``CARECAST_HOME/dagster`` with telemetry off."""

from __future__ import annotations

import os

from carecast.home import CarecastHome

_DAGSTER_YAML = """# Written by carecast. Runs, event logs and compute logs live here; they hold no PHI.
telemetry:
  enabled: false
"""


def prepare_dagster_home(home: CarecastHome) -> None:
    home.ensure()
    config = home.dagster / "dagster.yaml"
    if not config.exists():
        config.write_text(_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home.dagster)
    os.environ["CARECAST_HOME"] = str(home.root)
