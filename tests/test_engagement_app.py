"""The engagement endpoint over real HTTP on loopback: uvicorn in a thread, httpx as the client.

Covers RFC 8058 one-click, the no-JavaScript page and its confirm form, expired tokens (refused, an
opt-out mailbox offered), forged tokens (400, never echoed), replays (one event), GET never
unsubscribing, tracked clicks (only to declared URLs) and the open pixel, the security headers, and
that the next audience's input (``Ledger.suppressions_for``) excludes the patient.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from carecast.crypto.kms import LocalKms
from carecast.engagement.app import SECURITY_HEADERS, CampaignEndpoint, build_app
from carecast.home import CarecastHome
from carecast.ledger import Ledger
from carecast.link_tokens import LinkTokens

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
CAMPAIGN = "spring_newsletter"
PURPOSE = "marketing"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
JOIN_URL = "https://riverside-health.example.org/programs/join"
OPT_OUT_MAILBOX = "unsubscribe@news.riverside-health.example.org"


class Endpoint:
    def __init__(self, home: CarecastHome, tokens: LinkTokens, client: httpx.Client):
        self.home, self.tokens, self.client = home, tokens, client

    def token(self, patient: int, kind: str = "unsubscribe", issued: datetime = NOW, **extra) -> str:
        return self.tokens.issue(f"{patient:032x}", CAMPAIGN, PURPOSE, kind, now=issued, **extra)

    def suppressions(self, purpose: str = PURPOSE) -> dict[str, str]:
        with Ledger(self.home.state_db) as ledger:
            return ledger.suppressions_for(purpose)

    def rows(self, table: str, patient: int) -> list[tuple]:
        with sqlite3.connect(self.home.state_db) as connection:
            return connection.execute(f"select * from {table} where patient_key = ?", (f"{patient:032x}",)).fetchall()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    home = CarecastHome(tmp_path_factory.mktemp("engagement") / "home").ensure()
    kms = LocalKms(home.keys)
    campaign = CampaignEndpoint("Riverside Health", {"join": JOIN_URL}, OPT_OUT_MAILBOX)
    app = build_app(home, kms, now=lambda: NOW, campaigns={CAMPAIGN: campaign})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        yield Endpoint(home, LinkTokens.load_or_create(kms, home.keys), client)
    server.should_exit = True
    thread.join(timeout=5)


def _assert_secure(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def test_one_click_post_suppresses_the_purpose_and_the_next_audience_excludes_the_patient(endpoint):
    response = endpoint.client.post(f"/u/{endpoint.token(1)}", data=ONE_CLICK)
    assert response.status_code == 200
    _assert_secure(response)
    assert endpoint.suppressions()[f"{1:032x}"] == "unsubscribed"
    assert f"{1:032x}" not in endpoint.suppressions("treatment")  # only this purpose
    [event] = endpoint.rows("engagement_events", 1)
    assert event[1:] == (f"{1:032x}", CAMPAIGN, PURPOSE, "unsubscribe", "one_click_post", "purpose", NOW.isoformat())


def test_replay_changes_nothing_and_still_answers_200(endpoint):
    token = endpoint.token(2)
    for _ in range(3):
        assert endpoint.client.post(f"/u/{token}", data=ONE_CLICK).status_code == 200
    assert endpoint.client.post(f"/u/{token}/confirm", data={"scope": "purpose"}).status_code == 200
    assert len(endpoint.rows("engagement_events", 2)) == 1
    assert len(endpoint.rows("suppressions", 2)) == 1


def test_one_click_without_the_rfc_8058_body_is_refused(endpoint):
    response = endpoint.client.post(f"/u/{endpoint.token(3)}", data={"other": "x"})
    assert response.status_code == 400
    assert f"{3:032x}" not in endpoint.suppressions()


def test_get_shows_a_form_without_scripts_or_external_resources_and_does_not_unsubscribe(endpoint):
    token = endpoint.token(4)
    for _ in range(2):
        response = endpoint.client.get(f"/u/{token}")
        assert response.status_code == 200
    _assert_secure(response)
    page = response.text
    assert f'<form method="post" action="/u/{token}/confirm">' in page
    assert 'value="purpose"' in page and 'value="all"' in page
    assert "Riverside Health" in page and CAMPAIGN in page
    assert "<script" not in page.lower() and " on" not in re.sub(r">[^<]*<", "><", page)
    assert not re.search(r"https?:|//", page), "the page must load nothing from elsewhere"
    assert f"{4:032x}" not in page
    assert f"{4:032x}" not in endpoint.suppressions("all")
    assert endpoint.rows("engagement_events", 4) == [] and endpoint.rows("suppressions", 4) == []


def test_confirm_with_scope_all_suppresses_every_purpose(endpoint):
    token = endpoint.token(5)
    response = endpoint.client.post(f"/u/{token}/confirm", data={"scope": "all"})
    assert response.status_code == 200 and "unsubscribed" in response.text
    _assert_secure(response)
    [row] = endpoint.rows("suppressions", 5)
    assert row[1:3] == ("unsubscribed", "all")
    assert endpoint.suppressions("treatment")[f"{5:032x}"] == "unsubscribed"
    assert endpoint.rows("engagement_events", 5)[0][5:7] == ("page_post", "all")


def test_confirm_needs_a_scope(endpoint):
    response = endpoint.client.post(f"/u/{endpoint.token(6)}/confirm", data={"scope": "everything"})
    assert response.status_code == 400
    assert endpoint.rows("suppressions", 6) == []


def test_an_expired_token_is_refused_and_the_page_offers_another_way_out(endpoint):
    token = endpoint.token(7, issued=NOW - timedelta(days=40), ttl=timedelta(days=30))
    with pytest.raises(Exception, match="expired"):
        endpoint.tokens.verify(token, now=NOW)
    for response in (
        endpoint.client.post(f"/u/{token}", data=ONE_CLICK),
        endpoint.client.get(f"/u/{token}"),
        endpoint.client.post(f"/u/{token}/confirm", data={"scope": "all"}),
    ):
        assert response.status_code == 410 and OPT_OUT_MAILBOX in response.text and token not in response.text
        _assert_secure(response)
    assert endpoint.rows("suppressions", 7) == []


def test_a_click_is_recorded_once_and_redirects_only_to_the_declared_url(endpoint):
    token = endpoint.token(20, kind="click", link="join")
    for _ in range(2):  # a replay (or a scanner fetching it again) is the same event
        response = endpoint.client.get(f"/c/{token}")
        assert response.status_code == 303 and response.headers["location"] == JOIN_URL
        _assert_secure(response)
    assert endpoint.client.head(f"/c/{token}").status_code == 303  # link checkers: redirected, not counted
    clicks = endpoint.rows("engagement_log", 20)
    assert [(row[7], row[8]) for row in clicks] == [("click", "join")]


def test_a_click_token_for_an_undeclared_link_or_of_another_kind_never_redirects(endpoint):
    undeclared = endpoint.token(21, kind="click", link="https-evil-example")
    response = endpoint.client.get(f"/c/{undeclared}")
    assert response.status_code == 404 and "location" not in response.headers
    for token in (endpoint.token(21), endpoint.token(21, kind="open"), "not-a-token"):
        response = endpoint.client.get(f"/c/{token}")
        assert response.status_code == 400 and "location" not in response.headers
    expired = endpoint.token(21, kind="click", link="join", issued=NOW - timedelta(days=40), ttl=timedelta(days=30))
    assert endpoint.client.get(f"/c/{expired}").status_code == 410
    assert endpoint.rows("engagement_log", 21) == []


def test_the_open_pixel_is_a_gif_and_counts_once_but_never_for_treatment(endpoint):
    response = endpoint.client.get(f"/o/{endpoint.token(22, kind='open')}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    endpoint.client.get(f"/o/{endpoint.token(22, kind='open')}")
    assert [row[7] for row in endpoint.rows("engagement_log", 22)] == ["open"]
    treatment = endpoint.tokens.issue(f"{23:032x}", CAMPAIGN, "treatment", "open", now=NOW)
    assert endpoint.client.get(f"/o/{treatment}").status_code == 200
    assert endpoint.rows("engagement_log", 23) == []


@pytest.mark.parametrize("method", ["get", "one_click", "confirm"])
def test_forged_or_wrong_kind_tokens_get_a_plain_400_that_does_not_echo_them(endpoint, method):
    genuine = endpoint.token(8)
    flipped = genuine[:40] + ("A" if genuine[40] != "A" else "B") + genuine[41:]
    for token in (flipped, "not-a-token", endpoint.token(8, kind="open")):
        if method == "get":
            response = endpoint.client.get(f"/u/{token}")
        elif method == "one_click":
            response = endpoint.client.post(f"/u/{token}", data=ONE_CLICK)
        else:
            response = endpoint.client.post(f"/u/{token}/confirm", data={"scope": "all"})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/plain")
        assert "not valid" in response.text and token not in response.text
        _assert_secure(response)
    assert endpoint.rows("suppressions", 8) == [] and endpoint.rows("engagement_events", 8) == []


def test_other_paths_are_a_plain_404_with_the_headers(endpoint):
    response = endpoint.client.get("/admin")
    assert response.status_code == 404 and response.text == "Not found.\n"
    _assert_secure(response)
