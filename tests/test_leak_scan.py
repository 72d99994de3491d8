"""The leak scanner itself must be able to find what it looks for."""

import base64

from tests.integration.leak_scan import scan_for_canaries


def test_finds_plain_lowercase_base64_and_quoted_printable(tmp_path) -> None:
    (tmp_path / "plain.txt").write_text("xx Zebulon913 yy")
    (tmp_path / "lower.log").write_text("user=zebulon913")
    (tmp_path / "b64.bin").write_bytes(b"hdr" + base64.b64encode(b"..ann.lee@mail.test.."))
    (tmp_path / "qp.eml").write_bytes(b"To: ann.lee=40mail.test")
    (tmp_path / "clean.txt").write_text("nothing to see")
    hits = dict(scan_for_canaries([tmp_path], ["Zebulon913", "ann.lee@mail.test"]))
    assert {p.rsplit("/", 1)[1] for p in hits} == {"plain.txt", "lower.log", "b64.bin", "qp.eml"}


def test_short_canaries_are_ignored(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("Ann")
    assert scan_for_canaries([tmp_path], ["Ann"]) == []
