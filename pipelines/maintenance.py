"""Key rotation and retention as scheduled Dagster jobs (the same functions as `carecast keys` and
`carecast retention`)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from carecast.crypto.access_log import access_context
from carecast.crypto.kms import LocalKms
from carecast.key_maintenance import retire_keys, rotate_keys
from carecast.lake import Lake
from carecast.project import Project
from carecast.retention import apply_retention
from pipelines.resources import CarecastResource

ACTOR = "dagster schedule"


def _local_kms(carecast: CarecastResource) -> LocalKms:
    kms = carecast.open_kms(carecast.data_home().ensure())
    if not isinstance(kms, LocalKms):
        raise dg.Failure("epochs, destruction and re-wrapping are managed by AWS for the aws KMS (see docs/privacy.md)")
    return kms


def maintenance_jobs(project: Project) -> tuple[list[dg.JobDefinition], list[dg.ScheduleDefinition]]:
    @dg.op(description="Start due key epochs, destroy expired ones (crypto-shredding), prune the audit log.")
    def apply_retention_policy(context: dg.OpExecutionContext, carecast: CarecastResource) -> None:
        kms = _local_kms(carecast)
        lake = Lake(carecast.data_home().lake, kms, project.registry)
        with access_context(run_id=context.run_id, asset="maintenance:retention"):
            report = apply_retention(kms, lake, project.retention, datetime.now(UTC), ACTOR)
        context.log.info(
            f"retention: epochs started {report.epochs_started}, keys destroyed {report.destroyed}, "
            f"{report.audit_entries_pruned} audit entries pruned"
        )

    @dg.op(
        description="Rotate every non-epoch master key, re-wrap all artifacts, destroy versions past the grace period."
    )
    def rotate_and_retire_keys(context: dg.OpExecutionContext, carecast: CarecastResource) -> None:
        kms = _local_kms(carecast)
        home = carecast.data_home()
        lake = Lake(home.lake, kms, project.registry)
        with access_context(run_id=context.run_id, asset="maintenance:key_rotation"):
            report = rotate_keys(kms, lake, home)
            destroyed = retire_keys(
                kms, timedelta(days=project.retention.retired_key_grace_days), datetime.now(UTC), ACTOR
            )
        context.log.info(
            f"rotated {len(report.rotated)} classes, re-wrapped {report.lake_files_rewrapped} lake files, "
            f"destroyed {len(destroyed)} retired versions"
        )

    @dg.job(description="Daily: crypto-shred what the retention policy says has expired.")
    def retention_job() -> None:
        apply_retention_policy()

    @dg.job(description="Monthly: rotate master keys and retire the old versions after their grace period.")
    def key_rotation_job() -> None:
        rotate_and_retire_keys()

    schedules = [
        dg.ScheduleDefinition(job=retention_job, cron_schedule="0 3 * * *", execution_timezone="UTC"),
        dg.ScheduleDefinition(job=key_rotation_job, cron_schedule="0 4 1 * *", execution_timezone="UTC"),
    ]
    return [retention_job, key_rotation_job], schedules
