"""Everything a stage needs at run time: the data home, the project, the KMS, the lake and the as-of date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from carecast.crypto.kms import Kms, LocalKms
from carecast.crypto.pseudonym import Pseudonymizer, load_pseudonymizer
from carecast.home import CarecastHome
from carecast.lake import Lake
from carecast.project import Project
from carecast.retention import start_epoch_if_due


@dataclass
class Runtime:
    home: CarecastHome
    project: Project
    kms: Kms
    lake: Lake
    as_of: date

    @classmethod
    def open(cls, home: CarecastHome, project: Project, as_of: date | None = None, kms: Kms | None = None) -> Runtime:
        home.ensure()
        kms = kms or LocalKms(home.keys)
        return cls(
            home=home,
            project=project,
            kms=kms,
            lake=Lake(home.lake, kms, project.registry),
            as_of=as_of or datetime.now(UTC).date(),
        )

    @property
    def send_date(self) -> str:
        return self.as_of.isoformat()

    @property
    def send_time(self) -> datetime:
        """When consent is judged: now for today's run, the end of the day for a past or future as-of date."""
        now = datetime.now(UTC)
        if self.as_of == now.date():
            return now.replace(tzinfo=None)
        return datetime.combine(self.as_of, time(23, 59, 59))

    def start_epoch(self, key_class: str) -> None:
        """Begin a new retention epoch for rendered messages or mailbox copies when the current one is due."""
        if isinstance(self.kms, LocalKms):
            start_epoch_if_due(self.kms, key_class, self.project.retention, datetime.now(UTC))

    def pseudonymizer(self) -> Pseudonymizer:
        return load_pseudonymizer(self.kms, self.home.keys)
