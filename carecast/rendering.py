"""Templates and rendering: one Markdown-light Jinja2 source per locale gives the text and HTML parts.

A template is a folder ``templates/<name>/`` with ``template.yaml`` (purposes, subject, preheader,
fields it may use with their PHI class) and ``<locale>.md.j2`` bodies. Bodies are paragraphs
separated by blank lines, with ``[label](url)`` links. The sandboxed environment fails on any
undefined name, and a body, subject or preheader that uses a field it did not declare is refused at
load time, as is a marketing or fundraising subject line that could show more than a first name
(subjects and previews are what lock screens and shared inboxes display).

HTML is escaped as a whole when the Markdown-light body becomes HTML (every character of every
substituted value, which is what autoescape would do), and link syntax inside values is neutralized
first, so patient data can neither inject markup nor become a link.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, ValidationError

from carecast.campaigns import Campaign
from carecast.policy import PurposePolicy
from carecast.registry import PhiClass
from carecast.streams import Stream
from carecast.tracking import RecipientLinks, click_url, open_pixel_url

CONTEXT_NAMES = {"organisation", "links", "locale"}
"""Names every template may use without declaring them: they come from the campaign, not a patient."""
GREETING_FIELDS = frozenset({"first_name"})
"""Identifiers any purpose may use to address the patient, and the only ones a marketing or
fundraising subject line may hold."""
GUARDED_SUBJECT_PURPOSES = ("marketing", "fundraising")
_LINK = re.compile(r"(?<!\\)\[((?:[^\]\\]|\\.)+)\]\((https://[^)\s]+)\)")
_ESCAPED = re.compile(r"\\([\\\[\]])")


def _neutralize(value: object) -> object:
    """Escape link syntax in substituted values, so patient data can never become a link."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return value


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text) if "\\" in text else text


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

    def compiled_subject(self, locale: str):
        return self._environment.from_string(self.spec.subject[locale])

    def compiled_preheader(self, locale: str):
        return self._environment.from_string(self.spec.preheader.get(locale, ""))


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
        if locale not in spec.subject:
            raise TemplateDefinitionError(f"{folder / 'template.yaml'}: no subject for locale {locale!r}")
        _check_fields(environment, body, spec, f"{folder / (locale + '.md.j2')}")
        shown = _check_fields(environment, spec.subject[locale], spec, f"{folder / 'template.yaml'}: subject.{locale}")
        shown |= _check_fields(
            environment, spec.preheader.get(locale, ""), spec, f"{folder / 'template.yaml'}: preheader.{locale}"
        )
        _check_subject_line(spec, shown, f"{folder / 'template.yaml'}: subject/preheader.{locale}")
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return MessageTemplate(spec=spec, bodies=bodies, sha256=digest.hexdigest(), _environment=environment)


def _check_fields(environment: SandboxedEnvironment, source: str, spec: TemplateSpec, where: str) -> set[str]:
    """The declared fields ``source`` uses; an undeclared one is refused."""
    try:
        used = meta.find_undeclared_variables(environment.parse(source))
    except TemplateSyntaxError as error:
        raise TemplateDefinitionError(f"{where}: line {error.lineno}: {error.message}") from None
    undeclared = sorted(used - set(spec.fields) - CONTEXT_NAMES)
    if undeclared:
        raise TemplateDefinitionError(f"{where}: uses undeclared field(s) {undeclared}")
    return used & set(spec.fields)


def _check_subject_line(spec: TemplateSpec, shown: set[str], where: str) -> None:
    guarded = [p for p in spec.purposes if p in GUARDED_SUBJECT_PURPOSES]
    revealing = sorted(
        name
        for name in shown
        if spec.fields[name] == "clinical" or (spec.fields[name] == "identifier" and name not in GREETING_FIELDS)
    )
    if guarded and revealing:
        raise TemplateDefinitionError(
            f"{where}: uses {revealing}; a {'/'.join(guarded)} subject or preheader may hold no clinical "
            f"field and no identifier beyond {sorted(GREETING_FIELDS)}"
        )


def check_template_for_campaign(template: MessageTemplate, campaign: Campaign, policy: PurposePolicy) -> None:
    """The template must be declared for the campaign's purpose, and its fields' classes allowed for it
    (``purposes.yaml``); greeting identifiers are allowed for every purpose."""
    if campaign.purpose not in template.spec.purposes:
        raise TemplateDefinitionError(
            f"template {template.spec.name!r} is not declared for purpose {campaign.purpose!r} "
            f"(it allows {list(template.spec.purposes)})"
        )
    allowed = set(policy.rule(campaign.purpose).classes)
    refused = sorted(
        f"{name} ({phi_class})"
        for name, phi_class in template.spec.fields.items()
        if phi_class not in allowed and name not in GREETING_FIELDS
    )
    if refused:
        raise TemplateDefinitionError(
            f"template {template.spec.name!r} uses field(s) {refused}, a class purpose {campaign.purpose!r} "
            f"may not use (purposes.yaml allows {sorted(allowed)})"
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


def footer(stream: Stream, unsubscribe_url: str | None) -> tuple[str, str]:
    """The sender's identity and postal address; on a marketing stream also the opt-out (CAN-SPAM)."""
    sender = stream.sender
    identity = f"{sender.organisation}, {sender.postal_address}"
    text = f"\n--\n{identity}\n"
    markup = f'<hr><p style="color:#555;font-size:12px">{html.escape(identity)}'
    if unsubscribe_url:
        text += (
            f"You receive this because you agreed to hear from {sender.organisation}. Unsubscribe: {unsubscribe_url}\n"
        )
        markup += (
            f"<br>You receive this because you agreed to hear from {html.escape(sender.organisation)}."
            f' <a href="{html.escape(unsubscribe_url)}">Unsubscribe</a>'
        )
    return text, markup + "</p>"


OUTBOX_COLUMNS = (
    "message_key",
    "patient_key",
    "variant",
    "locale",
    "to_addr",
    "subject",
    "body_text",
    "body_html",
    "unsubscribe_token",
)


def render_outbox(
    campaign: Campaign,
    stream: Stream,
    template: MessageTemplate,
    recipients: pa.Table,
    send_date: str,
    links: RecipientLinks | None = None,
) -> pa.Table:
    """One message per recipient row (patient_key, variant, email, preferred_language, fields...).

    ``links`` holds each recipient's tokens (``tracking.issue_recipient_links``, same order). On a
    marketing stream every message needs its unsubscribe token: the footer links to it and delivery
    puts it in the List-Unsubscribe headers. With click tokens, ``links.<name>`` in a template is the
    stream's tracked link for that recipient; without, the declared URL itself. With open tokens the
    HTML part ends with the first-party pixel."""
    unsubscribe = links.unsubscribe if links is not None else None
    if stream.unsubscribe is not None and (unsubscribe is None or len(unsubscribe) != recipients.num_rows):
        raise ValueError("a marketing stream needs one unsubscribe token per recipient")
    clicks = links.clicks if links is not None else {}
    opens = links.opens if links is not None else None
    fields = list(template.spec.fields)
    compiled = {
        locale: (template.compiled(locale), template.compiled_subject(locale), template.compiled_preheader(locale))
        for locale in template.locales
    }
    base_context = {"organisation": stream.sender.organisation, "links": campaign.links}
    columns: dict[str, list[str]] = {name: [] for name in OUTBOX_COLUMNS}
    no_opt_out = footer(stream, None)  # every transactional message's footer; marketing ones differ by token
    for index, row in enumerate(recipients.to_pylist()):
        locale = template.locale_for(row.get("preferred_language"))
        context = {**base_context, "locale": locale, **{name: row[name] for name in fields}}
        if clicks:
            context["links"] = {
                name: click_url(stream, clicks[name][index]) if name in clicks else url
                for name, url in campaign.links.items()
            }
        body, subject, preheader = compiled[locale]
        token = unsubscribe[index] if unsubscribe is not None and stream.unsubscribe is not None else ""
        footer_text, footer_html = footer(stream, f"{stream.unsubscribe.url}/{token}") if token else no_opt_out
        text, markup = markdown_to_parts(body.render(context))
        pixel = _pixel(open_pixel_url(stream, opens[index])) if opens is not None else ""
        columns["message_key"].append(message_key(campaign, send_date, row["patient_key"]))
        columns["patient_key"].append(row["patient_key"])
        columns["variant"].append(row["variant"])
        columns["locale"].append(locale)
        columns["to_addr"].append(row["email"])
        columns["subject"].append(_one_line(_unescape(subject.render(context))))
        columns["body_text"].append(text + footer_text)
        columns["body_html"].append(
            _html_document(markup + footer_html + pixel, _one_line(_unescape(preheader.render(context))))
        )
        columns["unsubscribe_token"].append(token)
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def _pixel(url: str) -> str:
    return f'<img src="{html.escape(url)}" width="1" height="1" alt="" style="display:block;border:0">'


def _one_line(value: str) -> str:
    """Subjects and preheaders are single lines: whitespace runs (a value's newline too) become one space."""
    return " ".join(value.split())


def _html_document(body: str, preheader: str) -> str:
    hidden = (
        f'<div style="display:none;max-height:0;overflow:hidden">{html.escape(preheader)}</div>' if preheader else ""
    )
    return f'<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">{hidden}{body}</body></html>'
