"""Ops staff in a real browser: a campaign created through the admin's add form, then paused
from the campaign list (headless Chromium, the `staff_browser` fixture of tests/conftest.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from campaigns.models import Campaign
from campaigns.services import templates_default_ensure

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_it_creates_a_campaign_through_the_form_and_pauses_it(staff_browser, live_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    template = templates_default_ensure()[0]
    browser = staff_browser
    browser.get(f"{live_server.url}/admin/campaigns/campaign/add/")
    assert "Add campaign" in browser.title

    def wait_for_message(text: str) -> None:
        """A submit's click can return before its page loads: wait for the admin's message."""

        def shown(b) -> bool:
            return any(text in m.text for m in b.find_elements(By.CSS_SELECTOR, "ul.messagelist"))

        WebDriverWait(browser, 10).until(shown, message=f"no message {text!r} in the page")

    def fill(name: str, value: str) -> None:
        field = browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    fill("name", "Spring win-back")
    Select(browser.find_element(By.NAME, "model_kind")).select_by_value("m2m")
    fill("top_n", "40")
    fill("budget", "500")
    fill("reward_cap", "50")
    fill("starts_at_0", "2024-04-01")
    fill("starts_at_1", "00:00:00")
    # Templates are picked from a list (the admin's two-box selector), not typed as ids.
    option = browser.find_element(
        By.CSS_SELECTOR, f"#id_templates_from option[value='{template.pk}']"
    )
    ActionChains(browser).double_click(option).perform()
    chosen = browser.find_elements(By.CSS_SELECTOR, "#id_templates_to option")
    assert [o.get_attribute("value") for o in chosen] == [str(template.pk)]
    browser.find_element(By.NAME, "_save").click()

    wait_for_message("was added successfully")
    campaign = Campaign.objects.get(name="Spring win-back")
    assert (campaign.status, campaign.budget, campaign.top_n) == (
        Campaign.Status.DRAFT,
        Decimal("500.00"),
        40,
    )
    assert list(campaign.templates.values_list("pk", flat=True)) == [template.pk]

    # The list page: budget columns, then the pause action on the selected campaign.
    browser.get(f"{live_server.url}/admin/campaigns/campaign/")
    row = browser.find_element(By.XPATH, "//tr[.//a[text()='Spring win-back']]")
    assert "500" in row.text
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("pause_campaigns")
    browser.find_element(By.NAME, "index").click()

    wait_for_message("Spring win-back: paused.")
    campaign.refresh_from_db()
    assert campaign.is_paused and campaign.status == Campaign.Status.DRAFT
    row = browser.find_element(By.XPATH, "//tr[.//a[text()='Spring win-back']]")
    assert "paused" in row.text
