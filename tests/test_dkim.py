"""DKIM signing: dkimpy verifies every signature, RSA signatures equal stock dkimpy's byte for byte,
tampering breaks them, and private keys are on disk only sealed under the KMS."""

from __future__ import annotations

import base64
import binascii
import os
import pickle
import re
import shutil
import stat
import types
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from carecast.crypto.kms import KeyBindingError, LocalKms
from carecast.mail.dkim import (
    DkimError,
    DkimKeys,
    DkimSigner,
    _relaxed_body,
    _relaxed_headers,
    dns_txt_records,
    ensure_dkim_keys,
    key_path,
    rewrap_dkim_keys,
)
from carecast.mail.message import build_message

DOMAIN = "mail.carecast.test"
RSA_SELECTOR = "cc2025r"
ED_SELECTOR = "cc2025e"
T = 1_735_787_045  # fixed t= so stock dkimpy's output can be compared byte for byte
RECIPIENT = "patient.zero@example.org"

BUILT_H = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"content-type",
    b"from",
]


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def keys() -> DkimKeys:
    """One RSA-2048 generation for the whole module (the slow part of these tests)."""
    return DkimKeys(
        domain=DOMAIN,
        rsa_selector=RSA_SELECTOR,
        rsa_private_pem=_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ed25519_selector=ED_SELECTOR,
        ed25519_private_pem=_pem(ed25519.Ed25519PrivateKey.generate()),
    )


@pytest.fixture(scope="module")
def rsa_signer(keys: DkimKeys) -> DkimSigner:
    return DkimKeys(keys.domain, keys.rsa_selector, keys.rsa_private_pem).signer()


@pytest.fixture(scope="module")
def double_signer(keys: DkimKeys) -> DkimSigner:
    return keys.signer()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalKms, DkimKeys]:
    keys_dir = tmp_path_factory.mktemp("home") / "keys"
    kms = LocalKms(keys_dir)
    return kms, ensure_dkim_keys(kms, keys_dir, DOMAIN, RSA_SELECTOR, ED_SELECTOR)


def _nacl_shim() -> types.SimpleNamespace:
    """The corner of PyNaCl that dkimpy calls for Ed25519, on ``cryptography`` (PyNaCl is not a project
    dependency). Used only when PyNaCl is missing, so the rest of dkimpy's verification runs as is."""

    class BadSignatureError(Exception):
        pass

    class NaclValueError(ValueError):
        pass

    class VerifyKey:
        def __init__(self, key: bytes, encoder: object = None):
            try:
                self._key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(key))
            except (ValueError, binascii.Error) as error:
                raise NaclValueError(str(error)) from None

        def verify(self, message: bytes, signature: bytes) -> bytes:
            try:
                self._key.verify(signature, message)
            except InvalidSignature:
                raise BadSignatureError() from None
            return message

    class SigningKey:
        def __init__(self, seed: bytes, encoder: object = None):
            self._key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed))

        def sign(self, message: bytes) -> types.SimpleNamespace:
            return types.SimpleNamespace(signature=self._key.sign(message))

    return types.SimpleNamespace(
        signing=types.SimpleNamespace(VerifyKey=VerifyKey, SigningKey=SigningKey),
        encoding=types.SimpleNamespace(Base64Encoder=object()),
        exceptions=types.SimpleNamespace(ValueError=NaclValueError, BadSignatureError=BadSignatureError),
    )


@pytest.fixture
def dkimpy_ed25519(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import nacl.signing  # noqa: F401
    except ImportError:
        monkeypatch.setattr(dkim, "nacl", _nacl_shim(), raising=False)


@pytest.fixture
def frozen_dkimpy_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: float(T)))


def _message(index: int = 1, *, text: str | None = None, html: str | None = None, **extra: str) -> bytes:
    headers = {
        "Reply-To": "Clínica Norte <citas@carecast.test>",
        "List-Unsubscribe": "<https://u.carecast.test/u/tok3n>, <mailto:unsub@carecast.test>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Feedback-ID": "c42:flu-2025:carecast",
        "X-Campaign-Id": "flu-2025",
        **extra,
    }
    return build_message(
        from_addr=f"Clínica Norte Señal <care@{DOMAIN}>",
        to_addr=f"José Núñez <{RECIPIENT}>",
        subject=f"Recordatorio nº {index}: vacunación antigripal – reserve su cita ✓",
        text=text or ("Hola José, su vacunación antigripal está pendiente. " * 30) + f"\nRef {index}\n",
        html=html or "<p>" + "Hola José, su vacunación antigripal está pendiente. " * 30 + f"</p><p>Ref {index}</p>",
        message_id=f"<m{index}.flu-2025@{DOMAIN}>",
        date=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        extra_headers=headers,
    )


HAND_WRITTEN = (
    b"Received: from a by b; Thu, 2 Jan 2025 03:04:05 +0000\r\n"
    b"From: Care <care@mail.carecast.test>\r\n"
    b"To:   patient.zero@example.org  \r\n"
    b"Subject:\tFolded\t  and   spaced\r\n\t continued  here \r\n"
    b"cc: someone@example.org\r\n"
    b"Date: Thu, 02 Jan 2025 03:04:05 +0000\r\n"
    b"Message-ID: <h1@mail.carecast.test>\r\n"
    b"\r\n"
    b"Body with trailing spaces   \r\n\tand tabs\t\there  \r\n\r\n\r\n"
)

MESSAGES = {
    "hand-written": HAND_WRITTEN,
    "multipart-non-ascii": _message(1),
    "ascii-only": _message(2, text="Plain ASCII reminder.\n", html="<p>Plain ASCII reminder.</p>"),
    "whitespace-runs": _message(
        3,
        text="Line with\ttab  and   runs   \nTrailing spaces   \n\n\n\n",
        html="<html>\n  <body>\n\t<p>Indented  \t html</p>   \n  </body>\n</html>\n",
    ),
    "long-unsubscribe": _message(4, **{"List-Unsubscribe": "<https://u.carecast.test/" + "t" * 300 + ">"}),
}


def _dns(keys: DkimKeys):
    records = {name: value.encode() for name, value in dns_txt_records(keys).items()}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return lookup


def _verify(message: bytes, keys: DkimKeys, index: int = 0) -> bool:
    try:
        return dkim.DKIM(message).verify(idx=index, dnsfunc=_dns(keys))
    except dkim.DKIMException:
        return False


def _stock(message: bytes, keys: DkimKeys, include: tuple[bytes, ...], algorithm: bytes = b"rsa-sha256") -> bytes:
    if algorithm == b"rsa-sha256":
        selector, private = keys.rsa_selector, keys.rsa_private_pem
    else:
        key = serialization.load_pem_private_key(keys.ed25519_private_pem, password=None)
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        selector, private = keys.ed25519_selector, base64.b64encode(seed)
    return dkim.sign(
        message,
        selector.encode(),
        keys.domain.encode(),
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=algorithm,
        include_headers=list(include),
    )


def _tag(signed: bytes, tag: bytes, index: int = 0) -> bytes:
    headers, _ = dkim.rfc822_parse(signed)
    signatures = [value for name, value in headers if name.lower() == b"dkim-signature"]
    return dkim.util.parse_tag_value(signatures[index])[tag]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_rsa_signature_verifies_and_equals_stock_dkimpy_byte_for_byte(
    name: str, rsa_signer: DkimSigner, keys: DkimKeys, frozen_dkimpy_clock: None
) -> None:
    message = MESSAGES[name]
    signed = rsa_signer.sign(message, timestamp=T)

    include = rsa_signer.signed_header_names(dkim.rfc822_parse(message)[0])
    assert signed == _stock(message, keys, include) + message
    assert signed.endswith(message) and signed.count(b"DKIM-Signature:") == 1
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert _verify(signed, keys)
    assert dkim.verify(signed, dnsfunc=_dns(keys))


def test_signed_headers_are_the_ones_present_with_from_oversigned(rsa_signer: DkimSigner) -> None:
    signed = rsa_signer.sign(MESSAGES["multipart-non-ascii"], timestamp=T)
    h = [name.strip() for name in re.split(rb"\s*:\s*", _tag(signed, b"h"))]
    assert h == BUILT_H  # no Cc (absent), no X-Campaign-Id (ours, not for receivers), From twice
    assert _tag(signed, b"a") == b"rsa-sha256" and _tag(signed, b"c") == b"relaxed/relaxed"
    assert (_tag(signed, b"d"), _tag(signed, b"s"), _tag(signed, b"t")) == (DOMAIN.encode(), b"cc2025r", b"%d" % T)


def test_double_signature_rsa_on_top_both_verify_and_equal_stock(
    double_signer: DkimSigner, keys: DkimKeys, dkimpy_ed25519: None, frozen_dkimpy_clock: None
) -> None:
    message = MESSAGES["multipart-non-ascii"]
    signed = double_signer.sign(message, timestamp=T)

    include = double_signer.signed_header_names(dkim.rfc822_parse(message)[0])
    # Ed25519 is deterministic: the whole output is stock dkimpy's two headers, RSA stacked on top
    assert signed == _stock(message, keys, include) + _stock(message, keys, include, b"ed25519-sha256") + message
    assert _tag(signed, b"a", 0) == b"rsa-sha256" and _tag(signed, b"a", 1) == b"ed25519-sha256"
    assert _tag(signed, b"s", 1) == ED_SELECTOR.encode()
    assert _verify(signed, keys, 0) and _verify(signed, keys, 1)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Ref 1", b"Ref 9"), id="body"),
        pytest.param(lambda m: m.replace(b"Subject: ", b"Subject: RE: "), id="subject"),
        pytest.param(lambda m: m.replace(b"tok3n", b"evil1"), id="list-unsubscribe"),
        pytest.param(lambda m: m.replace(b"Date: Thu, 02", b"Date: Fri, 03"), id="date"),
        pytest.param(lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: x@evil.test\r\n\r\n", 1), id="added-from"),
    ],
)
def test_tampering_with_body_or_a_signed_header_breaks_both_signatures(
    tamper, double_signer: DkimSigner, keys: DkimKeys, dkimpy_ed25519: None
) -> None:
    signed = double_signer.sign(MESSAGES["multipart-non-ascii"])
    tampered = tamper(signed)
    assert tampered != signed
    assert _verify(signed, keys, 0) and _verify(signed, keys, 1)
    assert not _verify(tampered, keys, 0)
    assert not _verify(tampered, keys, 1)


def test_headers_outside_the_signed_list_may_change(rsa_signer: DkimSigner, keys: DkimKeys) -> None:
    signed = rsa_signer.sign(MESSAGES["multipart-non-ascii"])
    relayed = signed.replace(b"X-Campaign-Id: flu-2025", b"X-Campaign-Id: other")
    relayed = b"Received: from relay.example by mx.example; Thu, 2 Jan 2025 03:04:06 +0000\r\n" + relayed
    assert _verify(relayed, keys)


def test_another_domain_key_does_not_verify(
    double_signer: DkimSigner, keys: DkimKeys, stored: tuple[LocalKms, DkimKeys], dkimpy_ed25519: None
) -> None:
    other = stored[1]  # generated apart, published under the same names
    signed = double_signer.sign(MESSAGES["ascii-only"])
    assert _verify(signed, keys, 0) and _verify(signed, keys, 1)
    assert not _verify(signed, other, 0) and not _verify(signed, other, 1)


def test_refuses_unsignable_messages_without_revealing_them(rsa_signer: DkimSigner) -> None:
    message = MESSAGES["multipart-non-ascii"]
    without_from = re.sub(rb"(?m)^From: .*\r\n", b"", message)
    cases = [without_from, message.replace(b"\r\n", b"\n"), b"From: a@b.test\r\n" + message]
    for case in cases:
        with pytest.raises(DkimError) as raised:
            rsa_signer.sign(case)
        assert RECIPIENT not in str(raised.value) and "care@" not in str(raised.value)


def test_signer_pickles_for_worker_processes(double_signer: DkimSigner) -> None:
    revived = pickle.loads(pickle.dumps(double_signer))
    message = MESSAGES["whitespace-runs"]
    assert revived.sign(message, timestamp=T) == double_signer.sign(message, timestamp=T)
    assert "PRIVATE" not in repr(double_signer.keys())


def test_dns_records_name_the_selectors_and_carry_the_public_keys(keys: DkimKeys) -> None:
    records = dns_txt_records(keys)
    assert sorted(records) == [f"{ED_SELECTOR}._domainkey.{DOMAIN}", f"{RSA_SELECTOR}._domainkey.{DOMAIN}"]
    rsa_record = records[f"{RSA_SELECTOR}._domainkey.{DOMAIN}"]
    ed_record = records[f"{ED_SELECTOR}._domainkey.{DOMAIN}"]
    assert rsa_record.startswith("v=DKIM1; k=rsa; p=") and ed_record.startswith("v=DKIM1; k=ed25519; p=")
    public = serialization.load_der_public_key(base64.b64decode(rsa_record.split("p=")[1]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert len(base64.b64decode(ed_record.split("p=")[1])) == 32


def test_keys_are_stored_only_sealed_with_mode_0600(stored: tuple[LocalKms, DkimKeys]) -> None:
    kms, keys = stored
    files = [path for path in kms.keys_dir.rglob("*") if path.is_file()]
    key_files = sorted(path.relative_to(kms.keys_dir).as_posix() for path in (kms.keys_dir / "dkim").rglob("*.json"))
    assert key_files == [f"dkim/{DOMAIN}/{ED_SELECTOR}.json", f"dkim/{DOMAIN}/{RSA_SELECTOR}.json"]
    for pem in (keys.rsa_private_pem, keys.ed25519_private_pem):
        lines = [line for line in pem.splitlines() if not line.startswith(b"-----")]
        der = base64.b64decode(b"".join(lines))
        for path in files:
            content = path.read_bytes()
            assert b"".join(lines) not in content and der not in content
            assert not [line for line in lines if line in content]
    for name in key_files:
        assert stat.S_IMODE(os.stat(kms.keys_dir / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(kms.keys_dir / "dkim" / DOMAIN).st_mode) == 0o700
    assert not [path for path in files if path.name.endswith(".tmp")]


def test_reloading_gives_the_same_keys_and_the_access_log_records_dkim_use(
    stored: tuple[LocalKms, DkimKeys],
) -> None:
    kms, created = stored
    fresh_kms = LocalKms(kms.keys_dir)
    with fresh_kms.access_log.observe() as seen:
        reloaded = ensure_dkim_keys(fresh_kms, kms.keys_dir, DOMAIN.upper(), RSA_SELECTOR, ED_SELECTOR)
    assert reloaded == created
    assert dns_txt_records(reloaded) == dns_txt_records(created)
    assert [(entry["op"], entry["class"]) for entry in seen] == [("unwrap", "dkim"), ("unwrap", "dkim")]
    logged = [(entry["op"], entry["class"], entry["key_id"]) for entry in fresh_kms.access_log.entries()]
    assert logged[:2] == [("wrap", "dkim", "local/dkim/v1")] * 2
    assert fresh_kms.access_log.verify() is None


def test_a_key_file_moved_to_another_selector_or_altered_does_not_open(
    stored: tuple[LocalKms, DkimKeys], tmp_path: Path
) -> None:
    kms, _ = stored
    keys_dir = tmp_path / "keys"
    shutil.copytree(kms.keys_dir, keys_dir)
    copy = LocalKms(keys_dir)
    shutil.copy(key_path(keys_dir, DOMAIN, RSA_SELECTOR), key_path(keys_dir, DOMAIN, "moved"))
    with pytest.raises(KeyBindingError):
        ensure_dkim_keys(copy, keys_dir, DOMAIN, "moved")
    path = key_path(keys_dir, DOMAIN, ED_SELECTOR)
    other = base64.b64encode(b"\x01" * 32).decode()
    public = dns_txt_records(stored[1])[f"{ED_SELECTOR}._domainkey.{DOMAIN}"].split("p=")[1]
    path.write_text(path.read_text().replace(public, other))
    with pytest.raises(DkimError):
        ensure_dkim_keys(copy, keys_dir, DOMAIN, RSA_SELECTOR, ED_SELECTOR)


def test_rewrap_moves_keys_to_the_rotated_master_key(stored: tuple[LocalKms, DkimKeys], tmp_path: Path) -> None:
    kms, created = stored
    keys_dir = tmp_path / "keys"
    shutil.copytree(kms.keys_dir, keys_dir)
    copy = LocalKms(keys_dir)
    copy.rotate("dkim")
    assert rewrap_dkim_keys(copy, keys_dir) == 2
    copy.destroy("dkim", 1)
    assert ensure_dkim_keys(LocalKms(keys_dir), keys_dir, DOMAIN, RSA_SELECTOR, ED_SELECTOR) == created
    assert stat.S_IMODE(os.stat(key_path(keys_dir, DOMAIN, RSA_SELECTOR)).st_mode) == 0o600


def test_names_that_are_not_dns_names_are_refused(stored: tuple[LocalKms, DkimKeys]) -> None:
    kms, _ = stored
    for domain, selector in [("../etc", "s1"), (DOMAIN, "a/b"), (DOMAIN, ".."), ("josé.example", "s1")]:
        with pytest.raises(DkimError):
            ensure_dkim_keys(kms, kms.keys_dir, domain, selector)
    with pytest.raises(DkimError):
        ensure_dkim_keys(kms, kms.keys_dir, DOMAIN, "same", "same")


_WS = st.lists(st.sampled_from([b"a", b"Z", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"=", b"\xc3\xa9"]), max_size=40)


@settings(max_examples=400, deadline=None)
@given(_WS)
def test_fast_relaxed_body_equals_dkimpy(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert _relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"Subject", b"subject ", b"X-A"]), _WS)
def test_fast_relaxed_headers_equal_dkimpy(name: bytes, parts: list[bytes]) -> None:
    value = b"".join(parts) + b"\r\n"
    assert _relaxed_headers([[name, value]]) == Relaxed.canonicalize_headers([[name, value]])


def test_headers_the_path_rewrites_can_be_left_unsigned(keys: DkimKeys) -> None:
    # SES replaces Message-ID and Date on raw messages: a signature over them would break in transit.
    signer = keys.signer(unsigned=("Message-ID", "Date"))
    signed = signer.sign(MESSAGES["multipart-non-ascii"], timestamp=T)
    h = [name.strip() for name in re.split(rb"\s*:\s*", _tag(signed, b"h"))]
    assert (
        b"message-id" not in h and b"date" not in h and h == [n for n in BUILT_H if n not in (b"message-id", b"date")]
    )
    rewritten = re.sub(rb"Message-ID: <[^>]+>", b"Message-ID: <0100abc@email.amazonses.com>", signed)
    assert rewritten != signed and _verify(rewritten, keys)
    assert pickle.loads(pickle.dumps(signer)).unsigned == ("message-id", "date")


def test_keys_dkim_prints_each_streams_records_and_keeps_the_keys(tmp_path: Path, capsys) -> None:
    from carecast.cli import main

    assert main(["keys", "dkim", "--home", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert main(["keys", "dkim", "--home", str(tmp_path)]) == 0
    assert capsys.readouterr().out == first, "keys are made once, then reused"
    records = dict(line.split(" TXT ", 1) for line in first.splitlines())
    assert "cc-rsa-2026._domainkey.riverside-health.example.org" in records
    assert "cc-ed-2026._domainkey.riverside-health.example.org" in records
    assert all("PRIVATE" not in value for value in records.values())
