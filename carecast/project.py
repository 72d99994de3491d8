"""The files users edit, loaded and validated together: models, segments, templates, campaigns.

Loading reads only the project's own files (no data, no keys, no secrets), so definitions load
anywhere; every cross-reference is checked here, and errors name the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from carecast.campaigns import Campaign, CampaignDefinitionError, discover_campaigns
from carecast.models.project import SqlModel, declare_models, discover_models
from carecast.registry import SchemaRegistry, load_registry
from carecast.rendering import MessageTemplate, check_template_for_campaign, load_template
from carecast.retention import RetentionPolicy, load_policy
from carecast.segments import Segment, declare_segments, discover_segments

CHECKOUT_DIR = Path(__file__).resolve().parent.parent


def default_project_dir() -> Path:
    """``CARECAST_PROJECT_DIR`` if set, else the checkout this package was installed from."""
    return Path(os.environ.get("CARECAST_PROJECT_DIR") or CHECKOUT_DIR).resolve()


@dataclass(frozen=True)
class Project:
    root: Path
    registry: SchemaRegistry
    models: dict[str, SqlModel]
    segments: dict[str, Segment]
    templates: dict[str, MessageTemplate]
    campaigns: dict[str, Campaign]
    retention: RetentionPolicy


def load_project(root: Path | None = None) -> Project:
    root = (root or default_project_dir()).resolve()
    registry = load_registry(root)
    models = discover_models(root / "dbt_like_models")
    declare_models(registry, models)
    segments = discover_segments(root / "segments")
    declare_segments(registry, segments)
    for segment in segments.values():
        unknown = [ref for ref in segment.refs if ref not in models]
        if unknown:
            raise CampaignDefinitionError(f"{segment.path}: ref to unknown model(s) {unknown}")
    templates = {p.name: load_template(p) for p in sorted((root / "templates").iterdir()) if p.is_dir()}
    campaigns = discover_campaigns(root / "campaigns")
    for campaign in campaigns.values():
        where = root / "campaigns"
        if campaign.segment not in segments:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} names unknown segment {campaign.segment!r}"
            )
        if campaign.purpose not in segments[campaign.segment].header.purposes:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} has purpose {campaign.purpose!r}, which segment "
                f"{campaign.segment!r} does not allow ({list(segments[campaign.segment].header.purposes)})"
            )
        if campaign.template not in templates:
            raise CampaignDefinitionError(
                f"{where}: campaign {campaign.name!r} names unknown template {campaign.template!r}"
            )
        check_template_for_campaign(templates[campaign.template], campaign)
    return Project(
        root=root,
        registry=registry,
        models=models,
        segments=segments,
        templates=templates,
        campaigns=campaigns,
        retention=load_policy(root),
    )
