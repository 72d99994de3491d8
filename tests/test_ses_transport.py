"""The SES v2 transport: against moto's SES for real sends, botocore's Stubber for SES's error
answers, and real sockets on 127.0.0.1 for connection failures. Nothing here fakes a client."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from carecast.mail import build_message
from carecast.mail.ses_transport import (
    BAD_ADDRESS,
    CANNOT_CONNECT,
    CONNECTION_DROPPED,
    CONTENT_REJECTED,
    DELIVERED,
    NON_ASCII_REFUSED,
    QUOTA_EXCEEDED,
    SERVICE_ERROR,
    THROTTLED,
    SesAccountError,
    SesIdentityError,
    SesTransport,
    ses_client,
    ses_transport_from_config,
)
from carecast.mail.smtp_client import MailTransportError, SendOutcome

REGION = "eu-west-1"
SENDER = "news@clinic.example"
RECIPIENT = "ana.perez@patients.example"
CANARY = "CANARY-ses-5b1d"


def _message(to_addr: str = RECIPIENT) -> bytes:
    return build_message(
        from_addr=f"Clínica Norte <{SENDER}>",
        to_addr=to_addr,
        subject="Su recordatorio",
        text=f"Hola, {CANARY}.",
        html=f"<p>Hola, {CANARY}.</p>",
        message_id="<msg-1@clinic.example>",
        date=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    )


def _assert_no_address(thing: SendOutcome | BaseException) -> None:
    texts = [str(thing), repr(thing)]
    if isinstance(thing, BaseException):
        texts += [str(arg) for arg in thing.args]
        assert thing.__cause__ is None and thing.__context__ is None  # SES's message is not reachable
    for text in texts:
        assert RECIPIENT not in text and "ana.perez" not in text and "patients.example" not in text


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")


@pytest.fixture
def moto_client() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("sesv2", region_name=REGION)


@pytest.fixture
def stubbed() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client("sesv2", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


# --- real sends through moto ------------------------------------------------------------------


def test_a_raw_multipart_message_is_handed_to_ses(moto_client) -> None:
    moto_client.create_email_identity(EmailIdentity="clinic.example")
    moto_client.create_configuration_set(ConfigurationSetName="campaigns")
    transport = SesTransport(moto_client, configuration_set="campaigns", email_tags={"campaign": "flu-2025"})
    raw = _message()
    outcome = transport.send(raw, SENDER, RECIPIENT)
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    # SES's own id is kept: its bounce and complaint events name the message by it
    assert outcome == dataclasses.replace(DELIVERED, provider_message_id=sent.id)
    assert sent.source == SENDER
    assert sent.destinations[0] == RECIPIENT
    assert sent.raw_data.encode() == raw
    assert "multipart/alternative" in sent.raw_data and CANARY in sent.raw_data


def test_an_unverified_sender_raises_naming_region_and_domain_never_the_recipient(moto_client) -> None:
    transport = SesTransport(moto_client)
    with pytest.raises(SesIdentityError) as raised:
        transport.send(_message(), SENDER, RECIPIENT)
    assert isinstance(raised.value, MailTransportError)
    assert REGION in str(raised.value) and "clinic.example" in str(raised.value)
    _assert_no_address(raised.value)
    assert ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages == []


# --- SES's error answers, through botocore's Stubber ------------------------------------------


def test_the_request_carries_raw_bytes_configuration_set_and_tags(stubbed) -> None:
    client, stubber = stubbed
    raw = _message()
    stubber.add_response(
        "send_email",
        {"MessageId": "0100-abc"},
        {
            "FromEmailAddress": SENDER,
            "Destination": {"ToAddresses": [RECIPIENT]},
            "Content": {"Raw": {"Data": raw}},
            "ConfigurationSetName": "campaigns",
            "EmailTags": [{"Name": "campaign", "Value": "flu-2025"}],
        },
    )
    transport = SesTransport(client, "campaigns", {"campaign": "flu-2025"})
    assert transport.send(raw, SENDER, RECIPIENT) == dataclasses.replace(DELIVERED, provider_message_id="0100-abc")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("TooManyRequestsException", 429, THROTTLED),
        ("Throttling", 400, THROTTLED),
        ("ThrottlingException", 400, THROTTLED),
        ("LimitExceededException", 400, QUOTA_EXCEEDED),
        ("MessageRejected", 400, CONTENT_REJECTED),
        ("InternalFailure", 500, SERVICE_ERROR),
        ("ServiceUnavailable", 503, SERVICE_ERROR),
    ],
)
def test_error_codes_map_to_outcomes_without_the_address(stubbed, code: str, status: int, expected) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message=f"refused for {RECIPIENT}", http_status_code=status
    )
    outcome = SesTransport(client).send(_message(), SENDER, RECIPIENT)
    assert outcome == expected
    assert outcome.status == ("bounced" if code == "MessageRejected" else "deferred")
    assert 400 <= outcome.smtp_code < 500 or outcome.status == "bounced"
    _assert_no_address(outcome)


@pytest.mark.parametrize(
    ("code", "status", "error", "words"),
    [
        ("SendingPausedException", 400, SesAccountError, "paused"),
        ("AccountSuspendedException", 400, SesAccountError, "suspended"),
        ("MailFromDomainNotVerifiedException", 400, SesIdentityError, "clinic.example"),
        ("NotFoundException", 404, SesAccountError, "does not exist"),
        ("BadRequestException", 400, SesAccountError, "invalid"),
        ("AccessDeniedException", 403, SesAccountError, "IAM"),
        ("SomethingNew", 400, SesAccountError, "SomethingNew"),
    ],
)
def test_account_level_problems_raise_naming_the_region(stubbed, code, status, error, words) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message=f"problem with {RECIPIENT}", http_status_code=status
    )
    with pytest.raises(error) as raised:
        SesTransport(client).send(_message(), SENDER, RECIPIENT)
    assert raised.value.code == code
    assert REGION in str(raised.value) and words in str(raised.value)
    _assert_no_address(raised.value)


def test_sandbox_recipients_raise_without_naming_them(stubbed) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email",
        service_error_code="MessageRejected",
        service_message="Email address is not verified. The following identities failed the check in region "
        f"EU-WEST-1: {RECIPIENT}",
        http_status_code=400,
    )
    with pytest.raises(SesIdentityError, match="sandbox") as raised:
        SesTransport(client).send(_message(), SENDER, RECIPIENT)
    _assert_no_address(raised.value)


def test_unsendable_recipients_bounce_before_any_call_and_idn_domains_become_punycode(stubbed) -> None:
    client, stubber = stubbed
    transport = SesTransport(client)
    assert transport.send(_message(), SENDER, "no-at-sign") == BAD_ADDRESS
    assert transport.send(_message(), SENDER, f"{RECIPIENT}\r\nBcc: x@evil.example") == BAD_ADDRESS
    assert transport.send(_message(), SENDER, "josé@patients.example") == NON_ASCII_REFUSED
    stubber.add_response(
        "send_email",
        {"MessageId": "0100-idn"},
        {**_any_request(), "Destination": {"ToAddresses": ["ana@xn--bcher-kva.example"]}},
    )
    assert transport.send(_message(), SENDER, "ana@bücher.example").status == "delivered"


def test_a_bad_sender_or_bad_tags_fail_the_run_not_the_recipient(stubbed) -> None:
    client, _stubber = stubbed
    with pytest.raises(SesAccountError, match="sender"):
        SesTransport(client).send(_message(), "not-an-address", RECIPIENT)
    with pytest.raises(ValueError):
        SesTransport(client, email_tags={"campaign": "flu 2025"})
    with pytest.raises(ValueError):
        SesTransport(client, configuration_set="has space")


def _any_request() -> dict:
    return {"FromEmailAddress": SENDER, "Destination": {"ToAddresses": [RECIPIENT]}, "Content": ANY}


# --- connection failures, on real loopback sockets ---------------------------------------------


def _loopback_client(port: int):
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=0.5, read_timeout=0.3)
    return boto3.client("sesv2", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}", config=config)


def test_no_listener_is_deferred_as_cannot_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = SesTransport(_loopback_client(port)).send(_message(), SENDER, RECIPIENT)
    assert outcome == CANNOT_CONNECT
    _assert_no_address(outcome)


def test_a_server_that_never_answers_is_deferred_in_doubt() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)  # the kernel accepts the connection; nobody ever answers
        outcome = SesTransport(_loopback_client(server.getsockname()[1])).send(_message(), SENDER, RECIPIENT)
    assert outcome == CONNECTION_DROPPED
    _assert_no_address(outcome)


def test_a_connection_closed_before_the_answer_is_deferred_in_doubt() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)

        def hang_up() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        outcome = SesTransport(_loopback_client(server.getsockname()[1])).send(_message(), SENDER, RECIPIENT)
        thread.join(timeout=5)
    assert outcome == CONNECTION_DROPPED
    _assert_no_address(outcome)


def test_the_factory_makes_a_client_without_botocore_retries_that_the_transport_closes() -> None:
    client = ses_client(REGION)
    assert client.meta.region_name == REGION
    assert client.meta.config.retries["total_max_attempts"] == 1
    with pytest.raises(ValueError, match="region"):
        ses_client("")
    with ses_transport_from_config(REGION, configuration_set="campaigns") as transport:
        assert transport.region == REGION
    # a client passed in belongs to the caller: closing the transport leaves it usable
    with mock_aws():
        shared = boto3.client("sesv2", region_name=REGION)
        shared.create_email_identity(EmailIdentity="clinic.example")
        SesTransport(shared).close()
        assert SesTransport(shared).send(_message(), SENDER, RECIPIENT).status == "delivered"
