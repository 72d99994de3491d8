"""The unsubscribe page in headless Chromium: it renders and works without JavaScript, and asks
nothing of anyone but the endpoint itself."""

from __future__ import annotations

from tests.browser import is_local, open_page
from tests.test_engagement_app import PURPOSE, endpoint  # noqa: F401  (endpoint is a fixture)


def test_the_page_unsubscribes_with_its_button_and_loads_nothing_from_elsewhere(browser, endpoint) -> None:  # noqa: F811
    token = endpoint.token(40)
    url = f"{endpoint.client.base_url}/u/{token}"
    with open_page(browser, url) as (page, requested):
        assert page.title() == "Unsubscribe"
        assert page.locator("script").count() == 0
        assert f"{40:032x}" not in endpoint.suppressions(), "showing the page changes nothing"
        page.get_by_role("button", name=f"Stop only {PURPOSE} email").click()
        page.wait_for_load_state("networkidle")
        assert page.title() == "You are unsubscribed"
        assert f"You will not receive {PURPOSE} email any more." in page.locator("body").inner_text()
    assert endpoint.suppressions()[f"{40:032x}"] == "unsubscribed"
    assert requested and all(is_local(seen) for seen in requested), requested
