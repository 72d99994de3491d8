"""Templates and rendering: one Markdown-light Jinja2 source per locale gives the text and HTML parts.

A template is a folder ``templates/<name>/`` with ``template.yaml`` (purposes, subject, preheader,
fields it may use with their PHI class) and ``<locale>.md.j2`` bodies. Bodies are paragraphs
separated by blank lines, with ``[label](url)`` links. The sandboxed environment fails on any
undefined name, and a body that uses a field it did not declare is refused at load time.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, ValidationError

from carecast.campaigns import Campaign
from carecast.registry import PhiClass

CONTEXT_NAMES = {"organisation", "links", "locale"}
"""Names every template may use without declaring them: they come from the campaign, not a patient."""
_LINK = re.compile(r"(?<!\\)\[((?:[^\]\\]|\\.)+)\]\((https://[^)\s]+)\)")
_ESCAPED = re.compile(r"\\([\\\[\]])")


def _neutralize(value: object) -> object:
    """Escape link syntax in substituted values, so patient data can never become a link."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return value


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


class TemplateDefinitionError(ValueError):
    pass


class TemplateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    purposes: tuple[str, ...]
    default_locale: str = "en"
    fields: dict[str, PhiClass]
    subject: dict[str, str]
    preheader: dict[str, str] = {}


@dataclass(frozen=True)
class MessageTemplate:
    spec: TemplateSpec
    bodies: dict[str, str]
    sha256: str
    _environment: SandboxedEnvironment

    @property
    def locales(self) -> tuple[str, ...]:
        return tuple(sorted(self.bodies))

    def locale_for(self, preferred: str | None) -> str:
        language = (preferred or "").split("-")[0].lower()
        return language if language in self.bodies else self.spec.default_locale

    def compiled(self, locale: str):
        return self._environment.from_string(self.bodies[locale])


def load_template(folder: Path) -> MessageTemplate:
    try:
        spec = TemplateSpec.model_validate(yaml.safe_load((folder / "template.yaml").read_text()))
    except (OSError, ValidationError, yaml.YAMLError) as error:
        raise TemplateDefinitionError(f"{folder / 'template.yaml'}: {error}") from None
    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_neutralize)
    bodies = {path.name.removesuffix(".md.j2"): path.read_text() for path in sorted(folder.glob("*.md.j2"))}
    if spec.default_locale not in bodies:
        raise TemplateDefinitionError(f"{folder}: no body for the default locale {spec.default_locale!r}")
    for locale, body in bodies.items():
        used = meta.find_undeclared_variables(environment.parse(body))
        undeclared = sorted(used - set(spec.fields) - CONTEXT_NAMES)
        if undeclared:
            raise TemplateDefinitionError(f"{folder / (locale + '.md.j2')}: uses undeclared field(s) {undeclared}")
        if locale not in spec.subject:
            raise TemplateDefinitionError(f"{folder / 'template.yaml'}: no subject for locale {locale!r}")
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return MessageTemplate(spec=spec, bodies=bodies, sha256=digest.hexdigest(), _environment=environment)


def check_template_for_campaign(template: MessageTemplate, campaign: Campaign) -> None:
    if campaign.purpose not in template.spec.purposes:
        raise TemplateDefinitionError(
            f"template {template.spec.name!r} is not declared for purpose {campaign.purpose!r} "
            f"(it allows {list(template.spec.purposes)})"
        )


def markdown_to_parts(body: str) -> tuple[str, str]:
    """Plain text and HTML from one body: paragraphs, line breaks and https links, all escaped."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body.strip()) if p.strip()]
    text = "\n\n".join(_unescape(_LINK.sub(lambda m: f"{m.group(1)}: {m.group(2)}", p)) for p in paragraphs) + "\n"
    html_paragraphs = []
    for paragraph in paragraphs:
        pieces, last = [], 0
        for match in _LINK.finditer(paragraph):
            pieces.append(html.escape(_unescape(paragraph[last : match.start()])))
            label = html.escape(_unescape(match.group(1)))
            pieces.append(f'<a href="{html.escape(match.group(2))}">{label}</a>')
            last = match.end()
        pieces.append(html.escape(_unescape(paragraph[last:])))
        html_paragraphs.append("<p>" + "".join(pieces).replace("\n", "<br>\n") + "</p>")
    return text, "\n".join(html_paragraphs)


def message_key(campaign: Campaign, send_date: str, patient_key: str) -> str:
    """The idempotency key of one message: one per campaign, send date and patient."""
    return hashlib.sha256(f"{campaign.name}\x1f{send_date}\x1f{patient_key}".encode()).hexdigest()[:32]


def footer(campaign: Campaign) -> tuple[str, str]:
    sender = campaign.sender
    text = f"\n--\n{sender.organisation}, {sender.postal_address}\n"
    identity = html.escape(f"{sender.organisation}, {sender.postal_address}")
    markup = f'<hr><p style="color:#555;font-size:12px">{identity}</p>'
    return text, markup


def render_outbox(campaign: Campaign, template: MessageTemplate, recipients: pa.Table, send_date: str) -> pa.Table:
    """One message per recipient row (patient_key, variant, email, preferred_language, fields...)."""
    check_template_for_campaign(template, campaign)
    fields = list(template.spec.fields)
    compiled = {locale: template.compiled(locale) for locale in template.locales}
    base_context = {"organisation": campaign.sender.organisation, "links": campaign.links}
    columns: dict[str, list[str]] = {
        name: []
        for name in ("message_key", "patient_key", "variant", "locale", "to_addr", "subject", "body_text", "body_html")
    }
    footer_text, footer_html = footer(campaign)
    rows = recipients.to_pylist()
    for row in rows:
        locale = template.locale_for(row.get("preferred_language"))
        context = {**base_context, "locale": locale, **{name: row[name] for name in fields}}
        text, markup = markdown_to_parts(compiled[locale].render(context))
        columns["message_key"].append(message_key(campaign, send_date, row["patient_key"]))
        columns["patient_key"].append(row["patient_key"])
        columns["variant"].append(row["variant"])
        columns["locale"].append(locale)
        columns["to_addr"].append(row["email"])
        columns["subject"].append(template.spec.subject[locale])
        columns["body_text"].append(text + footer_text)
        columns["body_html"].append(_html_document(markup + footer_html, template.spec.preheader.get(locale, "")))
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def _html_document(body: str, preheader: str) -> str:
    hidden = (
        f'<div style="display:none;max-height:0;overflow:hidden">{html.escape(preheader)}</div>' if preheader else ""
    )
    return f'<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">{hidden}{body}</body></html>'
