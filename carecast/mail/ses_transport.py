"""Sending through the Amazon SES v2 API, with the same PHI-free outcomes as the SMTP transport.

``SesTransport.send`` has ``SmtpTransport.send``'s contract: one message to one recipient, a
``SendOutcome`` whose code and enhanced status are chosen here, and no address or SES message text
in any outcome or error. botocore's errors carry SES's message (which names identities, sometimes
the recipient) and its parameter reports carry argument values, so none of them is ever chained,
formatted or kept: only error *codes* are looked at, plus one substring test on "not verified"
messages to tell a sender problem from a sandbox one.

How SES answers are mapped, and why:

==============================================  ==========  ==========================================
SES answer                                      outcome     why
==============================================  ==========  ==========================================
accepted (MessageId returned)                   250 2.0.0   delivered: accepted by SES; later bounces
                                                            and complaints arrive as SES events
TooManyRequestsException, Throttling...         421 4.4.5   deferred: not accepted
LimitExceededException (sending quota)          421 4.3.1   deferred: not accepted
EndpointConnectionError, ConnectTimeoutError    421 4.4.1   deferred: the request never reached SES
ReadTimeoutError, ConnectionClosedError         421 4.4.2   deferred, *in doubt*: SES may have accepted
                                                            it (as when a connection drops during SMTP
                                                            DATA); retried like any deferred message
HTTP 5xx (InternalFailure, ServiceUnavailable)  451 4.3.0   deferred
MessageRejected (content refused)               554 5.6.0   bounced
recipient not sendable (CR/LF/NUL, no domain)   553 5.1.3   bounced, without calling SES
recipient local part not ASCII                  553 5.6.7   bounced: SES does not support SMTPUTF8
MessageRejected "not verified", MailFrom-       raise       SesIdentityError: every message would fail
DomainNotVerifiedException                                  the same way, so bouncing would suppress
                                                            the whole audience as hard bounces
SendingPausedException, AccountSuspended-       raise       SesAccountError: the account cannot send
Exception, NotFoundException, BadRequest-
Exception, access/credential errors, TLS,
any other 4xx code
==============================================  ==========  ==========================================

BadRequestException raises rather than bounces: the inputs that vary per message (the recipient)
are checked here before the call, so what SES still finds invalid is almost always configuration
(sender, configuration set, tags), which would otherwise bounce and suppress every patient.

Retries and pacing are not done here: the delivery pool takes a token from the shared rate limiter
before every send and retries deferred outcomes with backoff, and later runs retry what is still
deferred. botocore must not retry behind the pool's back either (its retry modes resend after a
read timeout, which can send a message twice, and skip the rate limiter): ``ses_client`` makes a
client with botocore's retries off; pass one like it. 4.4.1 (never reached SES) and 4.4.2 (in
doubt) keep SmtpTransport's meaning, so a caller can tell a safe retry from a possible duplicate.

SES replaces a raw message's ``Message-ID`` and ``Date`` headers with its own, and its bounce and
complaint events name the ``MessageId`` that ``SendEmail`` returns: a delivered outcome carries it
as ``provider_message_id`` (an opaque SES id, no PHI), and the send ledger keeps it so SES events
find their message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from carecast.mail.smtp_client import MailTransportError, SendOutcome

try:  # boto3/botocore are optional (``carecast[ses]``): only this module needs them
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        ProxyConnectionError,
        SSLError,
    )
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError("the SES transport needs boto3: install carecast[ses]") from missing


class SesAccountError(MailTransportError):
    """SES cannot send anything for this account, region or configuration; nothing was sent.

    ``code`` is the SES/botocore error code (never its message). The text names the region and the
    problem, never a recipient.
    """

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class SesIdentityError(SesAccountError):
    """A sending identity is not verified (or, in the SES sandbox, the recipients are not)."""


DELIVERED = SendOutcome("delivered", 250, "2.0.0")
THROTTLED = SendOutcome("deferred", 421, "4.4.5")
QUOTA_EXCEEDED = SendOutcome("deferred", 421, "4.3.1")
CANNOT_CONNECT = SendOutcome("deferred", 421, "4.4.1")
CONNECTION_DROPPED = SendOutcome("deferred", 421, "4.4.2")
SERVICE_ERROR = SendOutcome("deferred", 451, "4.3.0")
CONTENT_REJECTED = SendOutcome("bounced", 554, "5.6.0")
BAD_ADDRESS = SendOutcome("bounced", 553, "5.1.3")
NON_ASCII_REFUSED = SendOutcome("bounced", 553, "5.6.7")

THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
_ACCOUNT_PROBLEMS = {
    "SendingPausedException": "sending is paused for this account",
    "AccountSuspendedException": "the account's sending is suspended",
    "NotFoundException": "a resource named in the request (configuration set or identity) does not exist",
    "BadRequestException": "the request is invalid (check the sender, configuration set and tags)",
    "AccessDeniedException": "access denied (IAM permissions for ses:SendEmail)",
    "UnrecognizedClientException": "the credentials are not recognized",
    "InvalidClientTokenId": "the credentials are not recognized",
    "ExpiredTokenException": "the credentials have expired",
    "ExpiredToken": "the credentials have expired",
    "SignatureDoesNotMatch": "the request signature does not match (check the secret key and clock)",
}
_NOT_VERIFIED = re.compile(r"not verified|did not have authority", re.IGNORECASE)
_UNSENDABLE = re.compile(r"[\r\n\x00]")
_TAG_PART = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SesTransport:
    """``SesTransport(boto3.client("sesv2", region_name=...)).send(raw, sender, recipient)``.

    ``configuration_set`` and ``email_tags`` (name -> value, ASCII letters, digits, ``_`` and ``-``
    only, as SES requires) apply to every message; they are checked here so a bad one fails at
    construction instead of on every send. ``close`` closes the client only if ``owns_client``.
    """

    def __init__(
        self,
        client: Any,
        configuration_set: str | None = None,
        email_tags: Mapping[str, str] | None = None,
        *,
        owns_client: bool = False,
    ):
        if configuration_set is not None and not _CONFIGURATION_SET.match(configuration_set):
            raise ValueError("configuration set names are 1-64 ASCII letters, digits, '_' or '-'")
        for name, value in (email_tags or {}).items():
            if not (_TAG_PART.match(name) and _TAG_PART.match(value)):
                raise ValueError("SES tag names and values are 1-256 ASCII letters, digits, '_' or '-'")
        self._client = client
        self._owns_client = owns_client
        self.region = client.meta.region_name
        self._options: dict[str, Any] = {}
        if configuration_set is not None:
            self._options["ConfigurationSetName"] = configuration_set
        if email_tags:
            self._options["EmailTags"] = [{"Name": name, "Value": value} for name, value in email_tags.items()]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def send(self, raw_message: bytes, mail_from: str, recipient: str) -> SendOutcome:
        """Hand one message to SES for one recipient; never raises or returns with an address in it.

        Only MailTransportError subclasses escape (the account, identity, credentials or TLS are
        wrong): they mean the run is misconfigured, and no message of it can be sent.
        """
        sender = _sender(mail_from, self.region)
        destination = _recipient(recipient)
        if isinstance(destination, SendOutcome):
            return destination
        result = self._attempt(
            {
                "FromEmailAddress": sender,
                "Destination": {"ToAddresses": [destination]},
                "Content": {"Raw": {"Data": raw_message}},
                **self._options,
            },
            sender,
        )
        if isinstance(result, SesAccountError):
            raise result  # raised here, outside the handler, so no __context__ holds SES's message
        return result

    def _attempt(self, request: dict[str, Any], sender: str) -> SendOutcome | SesAccountError:
        """One SendEmail call: its outcome, or the error to raise."""
        try:
            response = self._client.send_email(**request)
        except ClientError as failure:
            return self._client_error(failure.response, sender)
        except (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError):
            return CANNOT_CONNECT
        except SSLError:
            return SesAccountError(f"TLS with the SES endpoint in {self.region} failed", "SSLError")
        except HTTPClientError:  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
            return CONNECTION_DROPPED
        except BotoCoreError as failure:  # credentials missing, parameter validation, ...
            name = type(failure).__name__
            return SesAccountError(f"the SES client for {self.region} could not send ({name})", name)
        return dataclasses.replace(DELIVERED, provider_message_id=response.get("MessageId"))

    def _client_error(self, response: dict[str, Any], sender: str) -> SendOutcome | SesAccountError:
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLING_CODES or status == 429:
            return THROTTLED
        if code == "LimitExceededException":
            return QUOTA_EXCEEDED
        if code == "MailFromDomainNotVerifiedException":
            problem = f"the sending domain {_domain(sender)} (or its custom MAIL FROM domain) is not verified"
            return SesIdentityError(f"SES in {self.region}: {problem}", code)
        if code == "MessageRejected":
            if _NOT_VERIFIED.search(str(error.get("Message", ""))):
                return self._identity_error(str(error.get("Message", "")), sender)
            return CONTENT_REJECTED
        if code in _ACCOUNT_PROBLEMS:
            return SesAccountError(f"SES in {self.region}: {_ACCOUNT_PROBLEMS[code]} ({code})", code)
        if status >= 500:
            return SERVICE_ERROR
        return SesAccountError(f"SES in {self.region} refused the request ({code or status})", code)

    def _identity_error(self, ses_message: str, sender: str) -> SesIdentityError:
        """SES lists the failing identities in its message; use it only to tell which kind failed."""
        text = ses_message.lower()
        if sender.lower() in text or _domain(sender).lower() in text:
            return SesIdentityError(
                f"SES in {self.region}: the sender identity (domain {_domain(sender)}) is not verified for sending",
                "MessageRejected",
            )
        return SesIdentityError(
            f"SES in {self.region}: a recipient is not verified; the account is in the SES sandbox "
            "(request production access, or verify test recipients)",
            "MessageRejected",
        )


def ses_client(region: str) -> Any:
    """A ``sesv2`` client with botocore's own retries off (see the module docstring) and bounded timeouts.

    Each call uses a new boto3 session: the default session is not safe to create clients from in
    several threads at once, which is what the delivery pool's connection threads do.
    """
    import boto3
    from botocore.config import Config

    if not region:
        raise ValueError("the SES transport needs a region (ses_region)")
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
    return boto3.session.Session().client("sesv2", region_name=region, config=config)


def ses_transport_from_config(region: str, configuration_set: str | None = None) -> SesTransport:
    """The transport for a deployment: credentials come from boto3's usual chain (role, env, profile)."""
    return SesTransport(ses_client(region), configuration_set=configuration_set, owns_client=True)


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[-1]


def _sender(mail_from: str, region: str) -> str:
    """The sender is configuration, not data: a bad one fails the run instead of bouncing everyone."""
    local, at, domain = mail_from.rpartition("@")
    if _UNSENDABLE.search(mail_from) or not (local and at and domain) or not local.isascii():
        raise SesAccountError(f"SES in {region}: the sender address is not sendable", "InvalidSender")
    punycode = _idna(domain)
    if punycode is None:
        raise SesAccountError(f"SES in {region}: the sender domain is not a valid domain name", "InvalidSender")
    return f"{local}@{punycode}"


def _recipient(recipient: str) -> str | SendOutcome:
    """SES wants a 7-bit local part and a Punycode domain; anything else bounces here, like SMTP's 553."""
    local, at, domain = recipient.rpartition("@")
    if _UNSENDABLE.search(recipient) or not (local and at and domain):
        return BAD_ADDRESS
    if not local.isascii():
        return NON_ASCII_REFUSED
    punycode = _idna(domain)
    return BAD_ADDRESS if punycode is None else f"{local}@{punycode}"


def _idna(domain: str) -> str | None:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
