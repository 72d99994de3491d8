"""Resources: the data home and the mail transport, each swapped by configuration, not code.

Nothing here reads a secret or the environment at import time: defaults resolve when a run starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from typing import Literal

import dagster as dg

from carecast.crypto.access_log import AccessLog, access_context
from carecast.crypto.aws_kms import AwsKms
from carecast.crypto.kms import Kms, LocalKms
from carecast.delivery import TransportSpec, open_target
from carecast.home import CarecastHome
from carecast.project import Project
from carecast.runtime import Runtime
from pipelines.partitions import send_date_of


class CarecastResource(dg.ConfigurableResource):
    """Where data lives (``CARECAST_HOME`` when ``home`` is empty), the run's as-of date, and the KMS:
    ``local`` (master keys under the home) or ``aws`` (AWS KMS keys behind ``alias/<prefix>-<class>``,
    credentials from boto3's usual chain: environment, profile or instance role)."""

    home: str = ""
    as_of: str = ""
    kms: Literal["local", "aws"] = "local"
    aws_region: str = ""
    kms_alias_prefix: str = "carecast"

    def data_home(self) -> CarecastHome:
        return CarecastHome.from_env(self.home or None)

    def open_kms(self, home: CarecastHome) -> Kms:
        if self.kms == "local":
            return LocalKms(home.keys)
        import boto3  # optional dependency: only the AWS KMS path needs it

        client = boto3.client("kms", region_name=self.aws_region or None)
        return AwsKms(client, AccessLog(home.keys / "access.jsonl"), self.kms_alias_prefix)

    @contextlib.contextmanager
    def runtime(self, context: dg.AssetExecutionContext, project: Project, purpose: str = "-") -> Iterator[Runtime]:
        """A Runtime whose key use is logged against this run and asset. A campaign-run partition's
        send date is its as-of date; otherwise ``as_of``, or today."""
        if context.has_partition_key:
            as_of = send_date_of(context.partition_key)
        else:
            as_of = date.fromisoformat(self.as_of) if self.as_of else None
        home = self.data_home().ensure()
        runtime = Runtime.open(home, project, as_of=as_of, kms=self.open_kms(home))
        with access_context(run_id=context.run.run_id, asset=context.asset_key.to_user_string(), purpose=purpose):
            yield runtime


class MailTransportResource(dg.ConfigurableResource):
    """Where mail goes, swapped by configuration. ``embedded_sink``: a local STARTTLS SMTP server
    started for the step, storing mail encrypted under ``CARECAST_HOME/mailbox``. ``smtp``: a real
    relay at host:port, its certificate pinned. ``ses``: Amazon SES v2 (raw messages; credentials
    from boto3's usual chain). Sender identity, DKIM and limits come from the campaign's stream."""

    kind: Literal["embedded_sink", "smtp", "ses"] = "embedded_sink"
    host: str = "127.0.0.1"
    port: int = 587
    server_hostname: str = "localhost"
    pinned_cert_path: str = ""
    ses_region: str = ""
    ses_configuration_set: str = ""
    workers: int = 0
    """Delivery worker processes; 0 takes the stream's setting."""

    @contextlib.contextmanager
    def open(self, runtime: Runtime) -> Iterator[TransportSpec]:
        with open_target(
            runtime,
            self.kind,
            host=self.host,
            port=self.port,
            server_hostname=self.server_hostname,
            pinned_cert_path=self.pinned_cert_path,
            ses_region=self.ses_region,
            ses_configuration_set=self.ses_configuration_set or None,
        ) as target:
            yield target
