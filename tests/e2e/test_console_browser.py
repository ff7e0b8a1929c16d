"""The web console (/ui) in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver (both installed by `bash scripts/browser`; both paths are given, so Selenium downloads nothing),
against a real `gateway serve` process whose providers are the built-in emulators.

- The journey: log in with the master key, create a team (name, budget, period) and a key (shown once), send a
  chat request with that key through the gateway and find it in the requests table with its cost as money, open
  its page, edit the team's budget and see it, and replay the eu-only policy over the team's traffic.
- What the browser itself must not do: run a team named `<script>...` (it shows as text, no script element is
  created, no alert opens), or accept a form whose CSRF token was removed from the page (403, nothing changed).

Every page of the journey is photographed at 1400x1000 into the test's temporary folder; with
GATEWAY_UPDATE_SCREENSHOTS=1 the overview and the replay page go to tests/e2e/screenshots/console-<page>.png instead,
the pictures the README shows. Every wait is Selenium's WebDriverWait on a condition of the page, never a sleep.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.console.formats import money
from gateway.emulators import EmulatorOptions, start_emulator
from gateway.money import usd_to_nanos
from tests.support.admin import MASTER_KEY
from tests.support.emulators import MISTRAL_KEY, MOONSHOT_KEY, provider_env
from tests.support.limits import GatewayProcess, chat, chat_body, start_gateway_process
from tests.support.store import make_team

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1000)
WAIT = 30  # seconds: a condition of the page not met by then fails the test
ROOT = Path(__file__).resolve().parents[2]
KEPT_SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
KEPT = {"overview", "replay"}  # the pages the README shows
TEAM = "research"
# The eu-only policy as the team's (default) policy: the Kimi request would be refused, the Mistral ones stay.
EU_ONLY_AS_DEFAULT = (ROOT / "policies" / "eu-only.yaml").read_text().replace("name: eu-only", "name: default")
SCRIPT = "<script>alert(1)</script>"
# Money as the console writes it: $1,234.56, or exactly when a part is below a cent ($0.0000405, $74.9995824).
MONEY = re.compile(r"^\$\d{1,3}(,\d{3})*\.\d{2,9}$")


# -- the gateway and the browser ------------------------------------------------------------------------------


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """`gateway serve` on a SQLite database of the test's own, its providers the two emulators."""
    with ExitStack() as stack:
        mistral = stack.enter_context(start_emulator("mistral", EmulatorOptions(api_key=MISTRAL_KEY)))
        moonshot = stack.enter_context(start_emulator("moonshot", EmulatorOptions(api_key=MOONSHOT_KEY)))
        data = tmp_path / "data"
        data.mkdir()
        env = {**provider_env(mistral, moonshot), "GATEWAY_DATA_DIR": str(data)}
        process = start_gateway_process(f"sqlite:///{data / 'gateway.db'}", env)
        stack.callback(process.stop)
        yield process


@pytest.fixture()
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium through chromedriver, both Debian's. Fails (never skips) when they are missing."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is missing: run `bash scripts/browser` (installs Debian's chromium and chromium-driver)"
            )
    # Both paths are given, so Selenium Manager is skipped; offline too, should anything still call it.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # (tests run as root in CI, where Chromium's sandbox cannot start)
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Nothing but the gateway on 127.0.0.1: no update checks, no sync, no metrics.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        # The window's inside (what a screenshot holds) at WINDOW: the outer size less the browser's own frame.
        frame = driver.execute_script(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];"
        )
        driver.set_window_size(WINDOW[0] + frame[0], WINDOW[1] + frame[1])
        yield driver
    finally:
        driver.quit()


def waiting(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT)


def element(driver: WebDriver, css: str) -> WebElement:
    """The element once it is on the page."""
    return waiting(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)), f"no {css} on the page")


def heading(driver: WebDriver) -> str:
    return element(driver, "h1").text


def visit(driver: WebDriver, url: str, title: str) -> None:
    driver.get(url)
    waiting(driver).until(lambda d: heading(d) == title, f"{url} did not show '{title}'")


def fill(driver: WebDriver, css: str, text: str) -> None:
    field = element(driver, css)
    field.clear()
    field.send_keys(text)


def click(driver: WebDriver, button: str, then: str) -> None:
    """Click a link or a form's button and wait until the page that answers is loaded and has `then`. The old page
    is marked before the click; the new one has no mark. (Errors while the browser is between the two pages are
    those of a document going away: the wait goes on.)"""
    driver.execute_script("window.consoleTestOldPage = true;")
    element(driver, button).click()
    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return window.consoleTestOldPage !== true && document.readyState === 'complete';"),
        f"{button} did not load a page",
    )
    element(driver, then)


def screenshot(driver: WebDriver, page: str, tmp_path: Path, scroll_to: str | None = None) -> Path:
    """The page as the window shows it (from the top, or from `scroll_to`), kept when the README shows it."""
    if scroll_to is not None:
        driver.execute_script("arguments[0].scrollIntoView(true);", element(driver, scroll_to))
    else:
        driver.execute_script("window.scrollTo(0, 0);")
    # The README's two pictures are rewritten only on purpose (GATEWAY_UPDATE_SCREENSHOTS=1): a test run leaves the
    # tracked files alone; every page is photographed into the test's own folder either way.
    keep = page in KEPT and os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1"
    directory = KEPT_SCREENSHOTS if keep else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"console-{page}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000, path  # a page, not a blank window
    return path


def login(driver: WebDriver, url: str, master_key: str = MASTER_KEY) -> None:
    driver.get(url + "/ui")
    waiting(driver).until(lambda d: "/ui/login" in d.current_url, "the console did not ask to log in")
    fill(driver, "#master_key", master_key)
    click(driver, "#login-submit", "h1")


def cell(row: WebElement, table: WebElement, column: str) -> str:
    """The text of a row's cell under the column headed `column`."""
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    cells = row.find_elements(By.CSS_SELECTOR, "th, td")
    return cells[headers.index(column)].text


def scripts_on(driver: WebDriver) -> list[str]:
    """Every script element of the page: its src, or its text when inline."""
    found: list[str] = driver.execute_script(
        "return Array.from(document.scripts, s => s.src || ('inline: ' + s.textContent));"
    )
    return found


def assert_no_alert(driver: WebDriver) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a page opened an alert: {text!r}")


# -- the journey ------------------------------------------------------------------------------------------------


def test_log_in_create_a_team_and_a_key_see_a_request_edit_the_budget_and_replay(
    gateway: GatewayProcess, browser: WebDriver, tmp_path: Path
) -> None:
    url = gateway.url
    driver = browser

    # A wrong master key is refused on the form; the right one opens the overview.
    login(driver, url, "not-the-master-key")
    assert "not the gateway's master key" in element(driver, "#form-error").text
    assert heading(driver) == "Log in"
    fill(driver, "#master_key", MASTER_KEY)
    click(driver, "#login-submit", "#no-teams")
    assert heading(driver) == "Overview"

    # A team, through the teams page's form.
    click(driver, "#nav-teams", "#create-team-form")
    assert heading(driver) == "Teams and keys"
    fill(driver, "#team-name", TEAM)
    fill(driver, "#team-budget", "50")
    Select(element(driver, "#team-period")).select_by_value("monthly")
    click(driver, "#create-team-submit", "#team-created")
    assert element(driver, "#team-title").text == TEAM
    assert element(driver, "#team-budget-value").text == "$50.00"
    assert element(driver, "#team-spent").text == "$0.00"

    # A key: shown once, on its own page; the team's page shows only its prefix.
    fill(driver, "#key-name", "notebook")
    click(driver, "#create-key-submit", "#new-key")
    key = element(driver, "#new-key").get_attribute("value") or ""
    assert len(key) > 20, key
    assert "once" in element(driver, "#key-note").text.lower()
    click(driver, "#key-done", "#keys-table")
    keys = element(driver, "#keys-table")
    assert "notebook" in keys.text and key not in driver.page_source
    assert len(keys.find_elements(By.CSS_SELECTOR, "tbody tr[data-key]")) == 1

    # Requests through the gateway with that key: two on Mistral Medium, one naming Kimi K2.6.
    costs: list[Decimal] = []
    for model in ("mistral-medium-3.5", "mistral-medium-3.5", "kimi-k2.6"):
        answer = chat(url, key, chat_body(model, "Summarise the quarterly report in three lines.", 64))
        assert answer.status == 200, answer.body
        costs.append(Decimal(answer.headers["x-gateway-cost-usd"]))
    assert all(cost > 0 for cost in costs), costs

    # They appear in the requests table (the ledger is written after the answer: reload until they are there),
    # each with its cost as money: exactly what the gateway told the caller.
    driver.get(url + "/ui/requests?order=oldest")

    def three_rows(d: WebDriver) -> list[WebElement]:
        found = d.find_elements(By.CSS_SELECTOR, "#requests-table tbody tr[data-request]")
        if len(found) == 3:
            return found
        d.refresh()
        return []  # (not yet: the wait goes on)

    rows = waiting(driver).until(three_rows, "the requests did not appear in the requests table")
    table = element(driver, "#requests-table")
    shown = [cell(row, table, "Cost") for row in rows]
    for text in shown:
        assert MONEY.match(text), text
    assert shown == [money(usd_to_nanos(cost)) for cost in costs], (shown, costs)
    assert [cell(row, table, "Model") for row in rows] == ["mistral-medium-3.5", "mistral-medium-3.5", "kimi-k2.6"]
    assert {cell(row, table, "Team") for row in rows} == {TEAM}
    assert {cell(row, table, "Status") for row in rows} == {"200"}
    assert element(driver, "#requests-count").text == "Requests 1\u20133 of 3"
    screenshot(driver, "requests", tmp_path)

    # A request's page: its cost and its route reason.
    first = rows[0].get_attribute("data-request")
    click(driver, f"[id='request-link-{first}']", "#request-details")
    assert element(driver, "#request-cost").text == shown[0]
    assert element(driver, "#request-route-reason").text.strip()
    assert element(driver, "#request-id").text == first
    screenshot(driver, "request", tmp_path)

    # The team's budget, edited on its page, and the spend it now has.
    visit(driver, f"{url}/ui/teams/{TEAM}", f"Team {TEAM}")
    fill(driver, "#team-budget", "75")
    click(driver, "#edit-team-submit", "#team-updated")
    assert element(driver, "#team-budget-value").text == "$75.00"
    assert element(driver, "#team-spent").text == money(usd_to_nanos(sum(costs)))
    screenshot(driver, "team", tmp_path)
    visit(driver, url + "/ui/teams", "Teams and keys")
    team_row = element(driver, f"#teams-table tr[data-team='{TEAM}']")
    assert cell(team_row, element(driver, "#teams-table"), "Budget") == "$75.00"
    screenshot(driver, "teams", tmp_path)

    # The overview: the team's spend against its new budget, and the traffic.
    click(driver, "#nav-overview", "#budgets-table")
    assert heading(driver) == "Overview"
    budgets = element(driver, "#budgets-table")
    team_row = budgets.find_element(By.CSS_SELECTOR, f"tr[data-team='{TEAM}']")
    assert cell(team_row, budgets, "Budget") == "$75.00"
    assert cell(team_row, budgets, "This period") == money(usd_to_nanos(sum(costs)))
    assert element(driver, "#stat-requests").text == "3"
    screenshot(driver, "overview", tmp_path)

    # The replay: the eu-only policy pasted as the team's policy, over the team's traffic.
    click(driver, "#nav-routing", "#replay-form")
    assert heading(driver) == "Routing"
    screenshot(driver, "routing", tmp_path)
    policy = element(driver, "#replay-policy")
    policy.clear()
    # (set as the field's value: typing the YAML would let the browser's key events reflow its indentation)
    driver.execute_script("arguments[0].value = arguments[1];", policy, EU_ONLY_AS_DEFAULT)
    Select(element(driver, "#replay-team")).select_by_value(TEAM)
    fill(driver, "#replay-since", "1d")
    click(driver, "#replay-submit", "#replay-result")
    assert element(driver, "#replay-replayed").text == "3"
    assert element(driver, "#replay-refused").text == "1"  # Kimi K2.6 is outside the EU: refused, not rerouted
    assert element(driver, "#replay-changed").text == "0"
    assert element(driver, "#replay-cost-before").text == money(usd_to_nanos(sum(costs)))
    models = element(driver, "#replay-models")
    by_model = {
        cell(row, models, "Model"): (cell(row, models, "Requests, happened"), cell(row, models, "Requests, replayed"))
        for row in models.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert by_model == {"mistral-medium-3.5": ("2", "2"), "kimi-k2.6": ("1", "0")}, by_model
    refusals = element(driver, "#replay-refusals")
    assert "model_not_allowed" in refusals.text, refusals.text
    element(driver, "#chart-replay-requests svg")
    # What was pasted and chosen stays in the form.
    assert element(driver, "#replay-policy").get_attribute("value") == EU_ONLY_AS_DEFAULT
    assert Select(element(driver, "#replay-team")).first_selected_option.get_attribute("value") == TEAM
    screenshot(driver, "replay", tmp_path, scroll_to="#replay-result")
    assert_no_alert(driver)


# -- what the browser must refuse ---------------------------------------------------------------------------------


def test_a_hostile_team_name_is_text_and_a_form_without_its_csrf_token_is_refused(
    gateway: GatewayProcess, browser: WebDriver, tmp_path: Path
) -> None:
    url = gateway.url
    driver = browser
    database = f"sqlite:///{tmp_path / 'data' / 'gateway.db'}"
    # Straight into the database (the admin API refuses such a name, but a database may hold one).
    make_team(database, SCRIPT, "10")
    login(driver, url)
    own_scripts = scripts_on(driver)
    assert len(own_scripts) == 1 and "/ui/static/console.js" in own_scripts[0], own_scripts

    for path, title in (("/ui", "Overview"), ("/ui/teams", "Teams and keys")):
        visit(driver, url + path, title)
        link = element(driver, f"tr[data-team='{SCRIPT}'] a")
        assert link.text == SCRIPT  # the name, as text
        assert scripts_on(driver) == own_scripts, "the page holds a script element of the team's name"
        assert_no_alert(driver)

    click(driver, f"tr[data-team='{SCRIPT}'] a", "#team-title")
    assert heading(driver) == f"Team {SCRIPT}"
    assert element(driver, "#team-title").text == SCRIPT
    assert scripts_on(driver) == own_scripts
    assert_no_alert(driver)

    # The teams page's form, its browser-side checks turned off, posting the name: refused by the service, and what
    # was typed comes back as text (in the field's value, never as markup).
    visit(driver, url + "/ui/teams", "Teams and keys")
    driver.execute_script("document.getElementById('create-team-form').noValidate = true;")
    fill(driver, "#team-name", SCRIPT)
    click(driver, "#create-team-submit", "#form-error")
    assert element(driver, "#team-name").get_attribute("value") == SCRIPT
    assert scripts_on(driver) == own_scripts
    assert_no_alert(driver)

    # A form posted without its CSRF token (the hidden field removed in the page): 403, and nothing changed.
    visit(driver, url + "/ui/teams", "Teams and keys")
    fill(driver, "#team-name", "no-token")
    removed = driver.execute_script(
        "const field = document.querySelector('#create-team-form input[name=csrf_token]');"
        "if (!field) { return false; } field.remove(); return true;"
    )
    assert removed
    click(driver, "#create-team-submit", "#error-message")
    assert heading(driver) == "Refused"
    assert "CSRF token" in element(driver, "#error-message").text
    visit(driver, url + "/ui/teams", "Teams and keys")
    assert not driver.find_elements(By.CSS_SELECTOR, "tr[data-team='no-token']")

    # The same form with its token creates the team (the refusal was the token's, not the form's).
    fill(driver, "#team-name", "no-token")
    click(driver, "#create-team-submit", "#team-created")
    assert element(driver, "#team-title").text == "no-token"
