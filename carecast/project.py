"""The files users edit, loaded and validated together: models, segments, templates, campaigns.

Loading reads only the project's own files (no data, no keys, no secrets), so definitions load
anywhere; every cross-reference is checked here, and errors name the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from carecast.campaigns import Campaign, CampaignDefinitionError, discover_campaigns
from carecast.models.project import ModelDefinitionError, SqlModel, declare_models, discover_models
from carecast.models.seeds import Seed, declare_seeds, discover_seeds
from carecast.policy import PurposePolicy, load_purpose_policy
from carecast.registry import SchemaRegistry, load_registry
from carecast.rendering import MessageTemplate, check_template_for_campaign, load_template
from carecast.retention import RetentionPolicy, load_policy
from carecast.segment_check import SegmentNeeds, check_segment
from carecast.segments import Segment, declare_segments, discover_segments
from carecast.streams import Stream, load_streams

SENSITIVE_CODES_SEED = "sensitive_codes"

CHECKOUT_DIR = Path(__file__).resolve().parent.parent


def default_project_dir() -> Path:
    """``CARECAST_PROJECT_DIR`` if set, else the checkout this package was installed from."""
    return Path(os.environ.get("CARECAST_PROJECT_DIR") or CHECKOUT_DIR).resolve()


@dataclass(frozen=True)
class Project:
    root: Path
    registry: SchemaRegistry
    seeds: dict[str, Seed]
    models: dict[str, SqlModel]
    segments: dict[str, Segment]
    segment_needs: dict[str, SegmentNeeds]
    """What each segment reads, worked out from its SQL when the project loads."""
    policy: PurposePolicy
    templates: dict[str, MessageTemplate]
    campaigns: dict[str, Campaign]
    streams: dict[str, Stream]
    retention: RetentionPolicy

    def stream_of(self, campaign: Campaign) -> Stream:
        return self.streams[campaign.stream]


def load_project(root: Path | None = None) -> Project:
    root = (root or default_project_dir()).resolve()
    registry = load_registry(root)
    seeds = discover_seeds(root / "dbt_like_models")
    declare_seeds(registry, seeds)
    models = discover_models(root / "dbt_like_models", known=set(seeds))
    declare_models(registry, models)
    policy = load_purpose_policy(root, _sensitive_codes(seeds))
    segments = discover_segments(root / "segments")
    declare_segments(registry, segments)
    for segment in segments.values():
        unknown = [ref for ref in segment.refs if ref not in models and ref not in seeds]
        if unknown:
            raise ModelDefinitionError(f"{segment.path}: ref to unknown model(s) {unknown}")
    segment_needs = {name: check_segment(segment, segments, registry, policy) for name, segment in segments.items()}
    templates = {p.name: load_template(p) for p in sorted((root / "templates").iterdir()) if p.is_dir()}
    campaigns = discover_campaigns(root / "campaigns")
    streams = load_streams(root)
    for campaign in campaigns.values():
        where = root / "campaigns"
        if campaign.stream not in streams:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} names unknown stream {campaign.stream!r} ({sorted(streams)})"
            )
        if campaign.purpose not in streams[campaign.stream].purposes:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} has purpose {campaign.purpose!r}, which the "
                f"{streams[campaign.stream].kind} stream {campaign.stream!r} does not carry "
                f"({list(streams[campaign.stream].purposes)})"
            )
        tracks = (campaign.track_clicks and campaign.links) or campaign.open_pixel
        if tracks and streams[campaign.stream].tracking_url is None:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} tracks clicks or opens, but stream {campaign.stream!r} "
                "has no tracking_url (set it, or track_clicks: false and open_pixel: false)"
            )
        if campaign.segment not in segments:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} names unknown segment {campaign.segment!r}"
            )
        if campaign.purpose not in segments[campaign.segment].header.purposes:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} has purpose {campaign.purpose!r}, which segment "
                f"{campaign.segment!r} does not allow ({list(segments[campaign.segment].header.purposes)})"
            )
        if campaign.allow_minors and not policy.rule(campaign.purpose).minors:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} sets allow_minors, which purpose {campaign.purpose!r} "
                "does not permit (purposes.yaml)"
            )
        if campaign.template not in templates:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} names unknown template {campaign.template!r}"
            )
        check_template_for_campaign(templates[campaign.template], campaign, policy)
        segment_columns = segments[campaign.segment].header.columns
        for field, field_class in templates[campaign.template].spec.fields.items():
            if field in segment_columns and segment_columns[field] != field_class:
                raise CampaignDefinitionError(
                    f"{where}: campaign {campaign.name!r}: template field {field!r} is declared {field_class}, "
                    f"segment {campaign.segment!r} declares it {segment_columns[field]}"
                )
    return Project(
        root=root,
        registry=registry,
        seeds=seeds,
        models=models,
        segments=segments,
        segment_needs=segment_needs,
        policy=policy,
        templates=templates,
        campaigns=campaigns,
        streams=streams,
        retention=load_policy(root),
    )


def _sensitive_codes(seeds: dict[str, Seed]) -> dict[str, str]:
    if SENSITIVE_CODES_SEED not in seeds:
        raise ModelDefinitionError(
            f"dbt_like_models/seeds/{SENSITIVE_CODES_SEED}.csv is missing (purposes.yaml needs it)"
        )
    codes: dict[str, str] = {}
    for row in seeds[SENSITIVE_CODES_SEED].read().to_pylist():
        if codes.setdefault(row["code"], row["category"]) != row["category"]:
            raise ModelDefinitionError(f"{seeds[SENSITIVE_CODES_SEED].path}: code {row['code']} has two categories")
    return codes
