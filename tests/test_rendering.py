import email
import email.policy
from pathlib import Path

import pyarrow as pa
import pytest

from carecast.campaigns import CampaignDefinitionError, load_campaign
from carecast.project import Project
from carecast.rendering import TemplateDefinitionError, load_template, markdown_to_parts, render_outbox


def _recipients(*rows: tuple[str, str, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "patient_key": f"k{i}",
                "variant": "A",
                "email": f"p{i}@example.org",
                "preferred_language": lang,
                "first_name": name,
            }
            for i, (name, lang, _) in enumerate(rows)
        ]
    )


def test_outbox_has_one_message_per_recipient_in_their_language(project: Project) -> None:
    campaign = project.campaigns["breast_screening_reminder"]
    template = project.templates[campaign.template]
    outbox = render_outbox(
        campaign, template, _recipients(("Ann1", "en", ""), ("Luz2", "es", ""), ("Kim3", "vi", "")), "2026-11-23"
    )
    rows = outbox.to_pylist()
    assert [r["locale"] for r in rows] == ["en", "es", "en"]
    assert rows[1]["subject"] == "Es momento de su mamografía de detección"
    assert "Estimada/o Luz2" in rows[1]["body_text"]
    assert campaign.links["schedule"] in rows[0]["body_text"]
    assert f'<a href="{campaign.links["schedule"]}">' in rows[0]["body_html"]
    assert campaign.sender.postal_address in rows[0]["body_text"]
    assert len({r["message_key"] for r in rows}) == 3


def test_message_keys_are_stable_across_renders(project: Project) -> None:
    campaign = project.campaigns["breast_screening_reminder"]
    template = project.templates[campaign.template]
    recipients = _recipients(("Ann1", "en", ""))
    first = render_outbox(campaign, template, recipients, "2026-11-23").column("message_key")
    again = render_outbox(campaign, template, recipients, "2026-11-23").column("message_key")
    next_day = render_outbox(campaign, template, recipients, "2026-11-24").column("message_key")
    assert first.equals(again) and not first.equals(next_day)


def test_patient_data_cannot_inject_links_or_markup() -> None:
    text, markup = markdown_to_parts(
        "Dear " + "Eve\\[x\\](https://evil.test) <script>" + ",\n\n[Go](https://ok.example.org)"
    )
    assert '<a href="https://evil.test">' not in markup and "&lt;script&gt;" in markup
    assert '<a href="https://ok.example.org">Go</a>' in markup
    assert "Eve[x](https://evil.test)" in text


def test_undeclared_template_field_is_refused_at_load(tmp_path: Path, project: Project) -> None:
    source = project.root / "templates" / "breast_screening_reminder"
    folder = tmp_path / "leaky"
    folder.mkdir()
    (folder / "template.yaml").write_text((source / "template.yaml").read_text())
    (folder / "en.md.j2").write_text("Dear {{ first_name }}, your diagnosis {{ diagnosis }} is on file.")
    with pytest.raises(TemplateDefinitionError, match=r"undeclared field\(s\) \['diagnosis'\]"):
        load_template(folder)


def test_purpose_that_does_not_match_the_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nsegment: s\ntemplate: t\npurpose: marketing\nstream: transactional\n"
        "sender: {from: a@example.org, organisation: O, postal_address: P}\n"
    )
    with pytest.raises(CampaignDefinitionError, match="cannot be sent on the 'transactional' stream"):
        load_campaign(path)


def test_built_message_parses_back(project: Project) -> None:
    from datetime import UTC, datetime

    from carecast.mail import build_message

    campaign = project.campaigns["breast_screening_reminder"]
    template = project.templates[campaign.template]
    row = render_outbox(campaign, template, _recipients(("Luz2", "es", "")), "2026-11-23").to_pylist()[0]
    raw = build_message(
        from_addr=campaign.sender.from_address,
        to_addr=row["to_addr"],
        subject=row["subject"],
        text=row["body_text"],
        html=row["body_html"],
        message_id=f"<{row['message_key']}@x.example.org>",
        date=datetime.now(UTC),
    )
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == row["subject"]
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == row["body_text"]


def test_a_template_uses_the_extra_columns_its_segment_declares(tmp_path: Path) -> None:
    import shutil
    from datetime import date

    from carecast import stages
    from carecast.home import CarecastHome
    from carecast.project import CHECKOUT_DIR, load_project
    from carecast.runtime import Runtime

    for folder in ("dbt_like_models", "segments", "templates", "campaigns"):
        shutil.copytree(CHECKOUT_DIR / folder, tmp_path / folder)
    shutil.copy(CHECKOUT_DIR / "purposes.yaml", tmp_path)
    template_dir = tmp_path / "templates" / "hba1c_outreach"
    template_dir.mkdir()
    (template_dir / "template.yaml").write_text(
        "name: hba1c_outreach\npurposes: [treatment]\ndefault_locale: en\n"
        "fields: {first_name: identifier, latest_hba1c: clinical}\nsubject: {en: Time for a diabetes check-in}\n"
    )
    (template_dir / "en.md.j2").write_text("Dear {{ first_name }}, your last HbA1c was {{ latest_hba1c }} %.\n")
    campaign = (CHECKOUT_DIR / "campaigns" / "breast_screening_reminder.yaml").read_text()
    campaign = campaign.replace("name: breast_screening_reminder", "name: hba1c_outreach")
    campaign = campaign.replace(
        "segment: breast_cancer_screening_due", "segment: diabetes_uncontrolled_no_recent_visit"
    )
    (tmp_path / "campaigns" / "hba1c_outreach.yaml").write_text(
        campaign.replace("template: breast_screening_reminder", "template: hba1c_outreach")
    )
    project = load_project(tmp_path)
    runtime = Runtime.open(CarecastHome(tmp_path / "home"), project, as_of=date(2026, 6, 1))
    runtime.lake.write(
        "segment_diabetes_uncontrolled_no_recent_visit", pa.table({"patient_id": ["p1"], "latest_hba1c": [9.6]})
    )
    runtime.lake.write(
        "audience_hba1c_outreach",
        pa.table(
            {
                "patient_id": ["p1"],
                "patient_key": ["k1"],
                "variant": ["A"],
                "consent_id": pa.array([None], pa.string()),
                "consent_document_id": pa.array([None], pa.string()),
            }
        ),
    )
    runtime.lake.write(
        "mart_patient_profile",
        pa.table(
            {"patient_id": ["p1"], "email": ["p1@example.org"], "preferred_language": ["en"], "first_name": ["Ana"]}
        ),
    )
    result = stages.render_campaign(runtime, project.campaigns["hba1c_outreach"])
    assert result.metadata["columns_read"]["segment_diabetes_uncontrolled_no_recent_visit"] == [
        "patient_id",
        "latest_hba1c",
    ]
    assert "latest_hba1c" not in result.metadata["columns_read"]["mart_patient_profile"]
    body = runtime.lake.read("outbox_hba1c_outreach", ["body_text"]).table.column("body_text")[0].as_py()
    assert "Dear Ana, your last HbA1c was 9.6 %." in body
