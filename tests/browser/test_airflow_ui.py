"""The Airflow UI in a real browser: sign in, the nightly DAG's page, the promote DAG's trigger form.

Assertions are on the page's content (DAG ids, task ids, param fields, enum values, error
messages), never on pixels; the screenshots in ``test-artifacts/screenshots/`` are for people.
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.browser.conftest import (
    SERVE_PORT,
    STOPPED_NIGHT,
    UI_PASSWORD,
    UI_USER,
    AirflowUI,
    Browser,
)

pytestmark = pytest.mark.integration
STOPPED_DAY = STOPPED_NIGHT.isoformat()

NIGHTLY_TASKS = (
    "validate",
    "features",
    "refit",
    "fidelity",
    "algorithms",
    "train",
    "evaluate",
    "gate",
    "night_stopped",
)
PROMOTE_PARAMS = {
    "action": "Action",
    "version": "Version",
    "reason": "Reason",
    "dry_run": "Dry run",
}


def body_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


# True once the element and its container have no finite animation left (a modal's fade-in).
SETTLED_JS = """
return arguments[0].parentElement.getAnimations({subtree: true}).every(
    (a) => a.playState !== "running" || a.effect.getTiming().iterations === Infinity);
"""


def shown_dialog(title: str) -> Any:
    """A wait condition: the open dialog whose text starts with ``title``, done fading in."""

    def find(driver: WebDriver) -> WebElement | bool:
        for dialog in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]"):
            if dialog.is_displayed() and dialog.text.startswith(title):
                return dialog if driver.execute_script(SETTLED_JS, dialog) else False
        return False

    return find


def sign_in(browser: Browser, screenshots: bool = False) -> None:
    """From the UI root through SimpleAuthManager's login page back to the UI's home page."""
    browser.open("/")
    user = browser.wait(
        "login-page",
        lambda d: "/auth/login" in d.current_url and d.find_element(By.NAME, "username"),
    )
    user.send_keys(UI_USER)
    browser.driver.find_element(By.NAME, "password").send_keys(UI_PASSWORD)
    if screenshots:
        browser.screenshot("01-login.png")
    browser.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.wait(
        "home-page",
        lambda d: "/auth/login" not in d.current_url and "Welcome" in body_text(d),
    )


def open_dag(browser: Browser, dag_id: str, name: str) -> str:
    """The DAG's page, once its header and its Trigger button are rendered; returns the page text."""
    browser.open(f"/dags/{dag_id}")
    browser.wait(
        name,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").is_displayed()
            and dag_id in body_text(d)
        ),
    )
    return body_text(browser.driver)


def open_promote_form(browser: Browser) -> WebElement:
    open_dag(browser, "pricing_promote", "promote-dag-page")
    browser.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").click()
    dialog: WebElement = browser.wait(
        "promote-trigger-form", shown_dialog("Trigger Dag - pricing_promote")
    )
    browser.wait(
        "promote-param-fields",
        lambda d: all(d.find_elements(By.NAME, f"element_{p}") for p in PROMOTE_PARAMS),
    )
    return dialog


def trigger_button(dialog: WebElement) -> WebElement:
    buttons = [b for b in dialog.find_elements(By.TAG_NAME, "button") if b.text == "Trigger"]
    assert len(buttons) == 1, f"expected one Trigger button in the form, found {len(buttons)}"
    return buttons[0]


def test_sign_in_lands_on_the_home_page(browser: Browser) -> None:
    sign_in(browser, screenshots=True)
    # the health panel, rendered from the API with our token once the page has fetched it
    browser.wait("home-health", lambda d: "MetaDatabase" in body_text(d))
    browser.screenshot("02-home.png")
    assert "Welcome" in body_text(browser.driver)


def test_nightly_dag_page_shows_its_tasks_and_docs(browser: Browser) -> None:
    sign_in(browser)
    text = open_dag(browser, "pricing_nightly", "nightly-dag-page")
    browser.wait("nightly-task-list", lambda d: all(t in body_text(d) for t in NIGHTLY_TASKS))
    text = body_text(browser.driver)
    assert "pricing_nightly" in text
    for tag in ("pricing", "nightly", "training"):
        assert tag in text
    browser.screenshot("03-nightly-dag.png")

    browser.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Dag Docs']").click()
    docs = browser.wait("nightly-docs", shown_dialog("Dag Documentation"))
    browser.wait("nightly-docs-text", lambda d: "Pricing: the nightly retrain" in docs.text)
    assert "Which day." in docs.text
    assert "pricing_promotion" in docs.text  # the pool the docs tell operators to create
    browser.screenshot("03b-nightly-docs.png")


def test_promote_trigger_form_shows_the_params(browser: Browser) -> None:
    sign_in(browser)
    dialog = open_promote_form(browser)
    driver = browser.driver
    # One field per param, named after it (`element_<param>`), titled with the param's title.
    for name, title in PROMOTE_PARAMS.items():
        assert len(dialog.find_elements(By.NAME, f"element_{name}")) == 1, name
        assert title in dialog.text, f"the form shows no field titled {title!r}"
    # The params' descriptions come through as the fields' help texts.
    assert "promote a version, or roll back to the previous champion" in dialog.text
    assert "why, for the promotion ledger" in dialog.text
    # Defaults: promote the challenger, for real.
    assert driver.find_element(By.NAME, "element_version").get_attribute("value") == "challenger"
    assert not driver.find_element(By.NAME, "element_dry_run").is_selected()
    # `reason` has no default: the form flags it and refuses to submit until it is filled.
    assert "This field is required" in dialog.text
    assert not trigger_button(dialog).is_enabled()
    browser.screenshot("04-promote-form.png")

    # The action's enum: open the select, read its options, pick `promote` again to close it.
    action = driver.find_element(
        By.XPATH, "//input[@name='element_action']/..//input[@type='text']"
    )
    action.click()
    options = browser.wait(
        "promote-action-options",
        lambda d: [
            o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.is_displayed()
        ],
    )
    assert [o.text for o in options] == ["promote", "rollback"]
    next(o for o in options if o.text == "promote").click()
    browser.wait(
        "promote-action-closed",
        lambda d: (
            not [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]") if o.is_displayed()]
        ),
    )


def test_promote_form_refuses_a_short_reason(browser: Browser, airflow_ui: AirflowUI) -> None:
    sign_in(browser)
    dialog = open_promote_form(browser)
    driver = browser.driver
    driver.find_element(By.NAME, "element_reason").send_keys("too short")  # minLength is 10
    button = trigger_button(dialog)
    browser.wait("promote-trigger-enabled", lambda d: button.is_enabled())
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    browser.wait("promote-schema-error", lambda d: "Invalid input for param reason" in dialog.text)
    assert "is too short" in dialog.text
    assert "minLength" in dialog.text
    error = dialog.find_element(By.XPATH, ".//*[contains(text(), 'Invalid input for param')]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", error)
    browser.screenshot("05-promote-invalid-reason.png")
    runs = airflow_ui.query("SELECT count(*) FROM dag_run WHERE dag_id = ?", "pricing_promote")
    assert runs == [(0,)], "a refused trigger must not create a run"


def test_make_up_prints_the_urls_and_the_login_and_serves_mlflow(airflow_ui: AirflowUI) -> None:
    import urllib.request

    printed = " ".join(airflow_ui.log.read_text().split())  # rich wraps long lines
    assert f"http://localhost:{airflow_ui.url.rsplit(':', 1)[1]}" in printed
    assert f"login {UI_USER} / {UI_PASSWORD}" in printed
    assert "admin token generated for this session" in printed, printed
    with urllib.request.urlopen(f"{airflow_ui.mlflow_url}/health", timeout=10) as resp:
        assert resp.status == 200
    pools = airflow_ui.query("SELECT slots FROM slot_pool WHERE pool = 'pricing_promotion'")
    assert pools == [(1,)]


def test_make_up_serves_prices(airflow_ui: AirflowUI) -> None:
    """The pricing service of `pricing up` answers over the same data: no champion was promoted
    (the night stopped), so the rule-based pricer answers, and /readyz says why."""
    import json
    import urllib.request

    assert f"http://localhost:{SERVE_PORT}" in " ".join(airflow_ui.log.read_text().split())
    with urllib.request.urlopen(f"http://127.0.0.1:{SERVE_PORT}/readyz", timeout=10) as resp:
        ready = json.loads(resp.read())
    assert ready["policy"] == "fallback" and "@champion" in ready["reason"]
    from sim.world import load_world

    sku = load_world(None).skus[0].id  # no catalogue in this lake: the default world's
    body = json.dumps({"sku": sku, "customer_id": "c1", "inventory": 5}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{SERVE_PORT}/v1/price", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["price"] > 0 and resp.headers["X-Pricing-Policy"] in ("rule", "fallback")


def test_a_stopped_night_explains_itself(browser: Browser, airflow_ui: AirflowUI) -> None:
    """The grid shows the failed gate step and the night_stopped task; its XCom gives the step,
    the reason and the quarantine path (README: "Read why a night stopped")."""
    ((run_id, state),) = airflow_ui.query(
        "SELECT run_id, state FROM dag_run WHERE dag_id = 'pricing_nightly'"
    )
    assert state == "failed"
    sign_in(browser)
    browser.open(f"/dags/pricing_nightly/runs/{run_id}")
    browser.wait(
        "stopped-run", lambda d: "night_stopped" in body_text(d) and "validate" in body_text(d)
    )
    browser.screenshot("06-stopped-night.png")
    browser.open(f"/dags/pricing_nightly/runs/{run_id}/tasks/night_stopped/xcom")

    def explained(driver: WebDriver) -> str | bool:
        text = body_text(driver)
        return text if "quarantine" in text and "price shown must be > 0" in text else False

    text = browser.wait("stopped-xcom", explained)
    browser.screenshot("07-night-stopped-xcom.png")
    assert "validate" in text and STOPPED_DAY in text
