import email
import email.policy
from pathlib import Path

import pyarrow as pa
import pytest

from carecast.campaigns import CampaignDefinitionError
from carecast.project import Project
from carecast.rendering import TemplateDefinitionError, load_template, markdown_to_parts, render_outbox
from tests.project_copy import copy_project


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
        campaign,
        project.stream_of(campaign),
        template,
        _recipients(("Ann1", "en", ""), ("Luz2", "es", ""), ("Kim3", "vi", "")),
        "2026-11-23",
    )
    rows = outbox.to_pylist()
    assert [r["locale"] for r in rows] == ["en", "es", "en"]
    assert rows[1]["subject"] == "Es momento de su mamografía de detección"
    assert "Estimada/o Luz2" in rows[1]["body_text"]
    assert campaign.links["schedule"] in rows[0]["body_text"]
    assert f'<a href="{campaign.links["schedule"]}">' in rows[0]["body_html"]
    assert project.stream_of(campaign).sender.postal_address in rows[0]["body_text"]
    assert "Unsubscribe" not in rows[0]["body_text"], "treatment mail has no opt-out footer"
    assert len({r["message_key"] for r in rows}) == 3


def test_message_keys_are_stable_across_renders(project: Project) -> None:
    campaign = project.campaigns["breast_screening_reminder"]
    template = project.templates[campaign.template]
    recipients = _recipients(("Ann1", "en", ""))
    stream = project.stream_of(campaign)
    first = render_outbox(campaign, stream, template, recipients, "2026-11-23").column("message_key")
    again = render_outbox(campaign, stream, template, recipients, "2026-11-23").column("message_key")
    next_day = render_outbox(campaign, stream, template, recipients, "2026-11-24").column("message_key")
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


def test_purpose_that_does_not_match_the_stream_is_refused_at_load(tmp_path: Path) -> None:
    from carecast.project import load_project

    root = copy_project(tmp_path)
    path = root / "campaigns" / "breast_screening_reminder.yaml"
    path.write_text(path.read_text().replace("stream: transactional", "stream: marketing"))
    with pytest.raises(CampaignDefinitionError, match="which the marketing stream 'marketing' does not carry"):
        load_project(root)


def test_a_marketing_stream_without_unsubscribe_is_refused(tmp_path: Path) -> None:
    from carecast.streams import StreamDefinitionError, load_streams

    root = copy_project(tmp_path)
    text = (root / "streams.yaml").read_text()
    start = text.index("  unsubscribe:")
    (root / "streams.yaml").write_text(text[:start] + text[text.index("  connections:", start) :])
    with pytest.raises(StreamDefinitionError, match="a marketing stream needs `unsubscribe`"):
        load_streams(root)


@pytest.mark.parametrize(
    ("subject", "fields", "refused"),
    [
        # A diagnosis in a subject line shows on lock screens: refused for marketing.
        ("News about your {{ condition }}", "first_name: identifier\n  condition: clinical", "condition"),
        # The last name identifies the patient more than a greeting needs.
        ("Hello {{ last_name }}", "first_name: identifier\n  last_name: identifier", "last_name"),
    ],
)
def test_marketing_subject_line_phi_is_refused_at_load(tmp_path: Path, subject: str, fields: str, refused: str) -> None:
    folder = tmp_path / "promo"
    folder.mkdir()
    (folder / "template.yaml").write_text(
        f'name: promo\npurposes: [marketing]\nfields:\n  {fields}\nsubject:\n  en: "{subject}"\n'
    )
    (folder / "en.md.j2").write_text("Dear {{ first_name }}, see what is new.")
    with pytest.raises(TemplateDefinitionError, match=rf"uses \['{refused}'\]; a marketing subject or preheader"):
        load_template(folder)


def test_a_first_name_in_a_marketing_subject_is_allowed_and_treatment_subjects_may_say_more(tmp_path: Path) -> None:
    for purpose, subject in (
        ("marketing", "{{ first_name }}, new classes"),
        ("treatment", "About your {{ condition }}"),
    ):
        folder = tmp_path / purpose
        folder.mkdir()
        (folder / "template.yaml").write_text(
            f"name: {purpose}\npurposes: [{purpose}]\nfields:\n  first_name: identifier\n  condition: clinical\n"
            f'subject:\n  en: "{subject}"\n'
        )
        (folder / "en.md.j2").write_text("Dear {{ first_name }}.")
        assert load_template(folder).spec.purposes == (purpose,)


def test_a_template_field_class_the_purpose_may_not_use_is_refused(tmp_path: Path, project: Project) -> None:
    from carecast.rendering import check_template_for_campaign

    folder = tmp_path / "fund"
    folder.mkdir()
    (folder / "template.yaml").write_text(
        "name: fund\npurposes: [fundraising]\nfields:\n  first_name: identifier\n  condition: clinical\n"
        "subject:\n  en: Support our clinic\n"
    )
    (folder / "en.md.j2").write_text("Dear {{ first_name }}, we treated your {{ condition }}.")
    campaign = project.campaigns["breast_screening_reminder"].model_copy(
        update={"purpose": "fundraising", "stream": "marketing"}
    )
    with pytest.raises(TemplateDefinitionError, match=r"uses field\(s\) \['condition \(clinical\)'\]"):
        check_template_for_campaign(load_template(folder), campaign, project.policy)


def test_built_message_parses_back(project: Project) -> None:
    from datetime import UTC, datetime

    from carecast.mail import build_message

    campaign = project.campaigns["breast_screening_reminder"]
    template = project.templates[campaign.template]
    stream = project.stream_of(campaign)
    row = render_outbox(campaign, stream, template, _recipients(("Luz2", "es", "")), "2026-11-23").to_pylist()[0]
    raw = build_message(
        from_addr=stream.sender.from_address,
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
    from datetime import date

    from carecast import stages
    from carecast.home import CarecastHome
    from carecast.project import CHECKOUT_DIR, load_project
    from carecast.runtime import Runtime

    copy_project(tmp_path)
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
                "patient_key": [f"{1:032x}"],  # a pseudonym: link tokens are issued for it
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
