"""Tracked links and the open pixel: first-party URLs with opaque tokens that name a link, never a URL."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from carecast.campaigns import Campaign, CampaignDefinitionError
from carecast.crypto.kms import LocalKms
from carecast.home import CarecastHome
from carecast.link_tokens import LinkTokens
from carecast.project import Project
from carecast.rendering import render_outbox
from carecast.tracking import issue_recipient_links
from tests.project_copy import copy_project

PATIENT_KEYS = [f"{i:032x}" for i in range(1, 4)]


def _recipients() -> pa.Table:
    return pa.table(
        {
            "patient_key": PATIENT_KEYS,
            "variant": ["A"] * 3,
            "email": [f"p{i}@example.org" for i in range(3)],
            "preferred_language": ["en", "es", "en"],
            "first_name": ["Ann", "Luz", "Kim"],
        }
    )


@pytest.fixture
def tokens(home: CarecastHome, kms: LocalKms) -> LinkTokens:
    return LinkTokens.load_or_create(kms, home.keys)


def _render(project: Project, tokens: LinkTokens, **changes) -> tuple[Campaign, list[dict]]:
    campaign = project.campaigns["breast_screening_reminder"].model_copy(update=changes)
    stream = project.stream_of(campaign)
    links = issue_recipient_links(tokens, campaign, stream, PATIENT_KEYS)
    template = project.templates[campaign.template]
    return campaign, render_outbox(campaign, stream, template, _recipients(), "2026-11-23", links).to_pylist()


def test_links_go_through_the_endpoint_with_a_token_naming_the_link(project: Project, tokens: LinkTokens) -> None:
    campaign, rows = _render(project, tokens)
    root = re.escape(project.stream_of(campaign).tracking_url)
    for patient_key, row in zip(PATIENT_KEYS, rows, strict=True):
        for url in campaign.links.values():
            assert url not in row["body_text"] and url not in row["body_html"]
        found = re.findall(rf"{root}/c/([A-Za-z0-9_-]+)", row["body_text"])
        assert found and re.findall(rf'href="{root}/c/([A-Za-z0-9_-]+)"', row["body_html"]) == found
        claims = [tokens.verify(token) for token in found]
        assert {c.link for c in claims} <= set(campaign.links) and {c.kind for c in claims} == {"click"}
        assert {c.patient_key for c in claims} == {patient_key}
        assert "/o/" not in row["body_html"], "no open pixel unless the campaign asks for one"


def test_untracked_campaigns_link_to_the_declared_urls(project: Project, tokens: LinkTokens) -> None:
    campaign, rows = _render(project, tokens, track_clicks=False)
    assert campaign.links["schedule"] in rows[0]["body_text"]
    assert "/c/" not in rows[0]["body_text"]


def test_the_open_pixel_is_first_party_and_only_where_asked(project: Project, tokens: LinkTokens) -> None:
    campaign, rows = _render(project, tokens, purpose="operations", open_pixel=True)
    root = re.escape(project.stream_of(campaign).tracking_url)
    [token] = re.findall(rf'<img src="{root}/o/([A-Za-z0-9_-]+)" width="1" height="1"', rows[0]["body_html"])
    assert tokens.verify(token).kind == "open"
    assert "/o/" not in rows[0]["body_text"]


def test_an_open_pixel_in_treatment_mail_is_refused() -> None:
    with pytest.raises(ValidationError, match="never allowed in treatment mail"):
        Campaign(name="c", segment="s", template="t", purpose="treatment", stream="transactional", open_pixel=True)


def test_tracking_needs_a_stream_with_an_endpoint(tmp_path: Path) -> None:
    from carecast.project import load_project

    root = copy_project(tmp_path)
    streams = root / "streams.yaml"
    streams.write_text(re.sub(r"\n  tracking_url: [^\n]*", "", streams.read_text()))
    with pytest.raises(CampaignDefinitionError, match="has no tracking_url"):
        load_project(root)
    campaign = root / "campaigns" / "breast_screening_reminder.yaml"
    campaign.write_text(campaign.read_text() + "track_clicks: false\n")
    assert not load_project(root).campaigns["breast_screening_reminder"].track_clicks
