"""`make ui`: the provider in Airflow's own UI, as a user sees it, in headless Chromium driven by Selenium.

Airflow's API server (which serves the UI) runs on SQLite in a temporary ``AIRFLOW_HOME``, and the
TableFlow example DAG runs there to success against the emulator with ``airflow dags test``. Then the
browser:

- opens *Add Connection* for each platform's connection type and checks the form: the relabelled standard
  fields, every extra field of the platform filled with its default, and *Verify TLS* a checked switch;
- opens the finished task's details and checks the *Open flow run* link points at the run's URL.

Every page checked is saved as a screenshot (``--screenshots``, default ``ui-screenshots/``). Exits
non-zero, naming what was missing, when a check fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from airflow_flowruns.emulator import EmulatorServer
from airflow_flowruns.links import FLOW_RUN_URL_KEY
from airflow_flowruns.platforms import facts_of, registered
from e2e.stack import BIN, AirflowApi, E2EError, Stack, read_only, wait_for

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "tableflow_invoice_reconciliation"
API_KEY = "emulator-key"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)
PAGE_TIMEOUT = 120  # seconds for a page of the UI to render on a busy 2-core machine


@contextmanager
def browser(profile: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: WebDriver, what: str, find: Any) -> Any:
    try:
        return WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: find(d) or None)
    except TimeoutException:
        raise E2EError(f"the UI never showed {what} within {PAGE_TIMEOUT} s") from None


def by_text(driver: WebDriver, tag: str, text: str) -> list[WebElement]:
    return driver.find_elements(By.XPATH, f"//{tag}[normalize-space(.)={json.dumps(text)}]")


def check_connection_form(driver: WebDriver, url: str, conn_type: str, shots: Path) -> list[str]:
    """Open Add Connection, pick the platform's type, and list what the form does not show as it should."""
    form = facts_of(conn_type).form
    driver.get(f"{url}/connections")
    wait_until(driver, "the Add Connection button", lambda d: by_text(d, "button", "Add Connection"))[0].click()
    dialog = wait_until(driver, "the Add Connection form", lambda d: d.find_elements(By.CSS_SELECTOR, "[role=dialog]"))[
        0
    ]
    chooser = dialog.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    chooser.click()
    chooser.send_keys(form.label)
    wait_until(driver, f"the connection type {form.label}", lambda d: by_text(d, "*[@role='option']", form.label))[
        0
    ].click()
    # The form's sections fold one another: the standard fields first, then the extra fields.
    first = next(iter(form.relabeling.values()))
    wait_until(driver, f"the {form.label} standard fields", lambda d: first in dialog.text)
    standard = dialog.text
    driver.save_screenshot(str(shots / f"add-connection-{conn_type}-standard-fields.png"))
    wait_until(driver, "the Extra Fields section", lambda d: by_text(d, "button", "Extra Fields"))[0].click()
    fields = wait_until(
        driver,
        f"the {form.label} extra fields",
        lambda d: (
            {e.get_attribute("name"): e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog] input")}
            if d.find_elements(By.CSS_SELECTOR, f"[role=dialog] input[name=element_{form.extras[0].name}]")
            else None
        ),
    )
    driver.save_screenshot(str(shots / f"add-connection-{conn_type}-extra-fields.png"))
    problems = [
        f"{form.label} form: no field labelled {label!r}" for label in form.relabeling.values() if label not in standard
    ]
    extra = dialog.text
    problems += [f"{form.label} form: no field labelled {f.label!r}" for f in form.extras if f.label not in extra]
    for field in form.extras:
        element = fields.get(f"element_{field.name}")
        if element is None:
            problems.append(f"{form.label} form: no input for the extra {field.name!r}")
        elif field.type == "boolean":
            if element.get_attribute("type") != "checkbox" or element.is_selected() is not bool(field.default):
                problems.append(f"{form.label} form: {field.label!r} is not a switch set to {field.default}")
        elif (element.get_attribute("value") or "") != ("" if field.default is None else str(field.default)):
            problems.append(
                f"{form.label} form: {field.label!r} shows {element.get_attribute('value')!r}, not {field.default!r}"
            )
    return problems


def check_task_link(driver: WebDriver, url: str, run_id: str, run_url: str, shots: Path) -> list[str]:
    """Open the finished task's details and list what is wrong with its Open flow run link."""
    driver.get(f"{url}/dags/{DAG_ID}/runs/{run_id}/tasks/reconcile/details")
    links = wait_until(driver, "the Open flow run link", lambda d: by_text(d, "a", "Open flow run"))
    driver.save_screenshot(str(shots / "task-details-open-flow-run.png"))
    hrefs = [link.get_attribute("href") for link in links]
    return [] if hrefs == [run_url] else [f"Open flow run links to {hrefs}, not {run_url!r}"]


def finished_run(stack: Stack, emulator_url: str, data: Path) -> tuple[str, str]:
    """Run the example DAG to success with ``airflow dags test``: its run id and the flow run's URL."""
    stack.env["AIRFLOW_VAR_FLOWRUNS_DATA_DIR"] = str(data)
    stack.env["AIRFLOW_CONN_TABLEFLOW_DEFAULT"] = json.dumps(
        {"conn_type": "tableflow", "password": API_KEY, "host": emulator_url}
    )
    stack.run("dags-test", [str(BIN / "airflow"), "dags", "test", DAG_ID], timeout=600)
    with read_only(stack.home / "airflow.db") as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
        (url,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'reconcile' AND key = ?",
            (DAG_ID, run_id, FLOW_RUN_URL_KEY),
        ).fetchone()
    if state != "success":
        raise E2EError(f"the example DAG ended {state}:\n{stack.tail('dags-test')}")
    return run_id, json.loads(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshots", type=Path, default=ROOT / "ui-screenshots", help="where screenshots go")
    args = parser.parse_args()
    shots: Path = args.screenshots.resolve()
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):  # its own only: make e2e-review keeps its screenshots in review/
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="flowruns-ui-") as tmp, EmulatorServer() as emulator:
        root = Path(tmp)
        stack = Stack(root, parallelism=2)
        shutil.copy(ROOT / "example_dags" / f"{DAG_ID}.py", stack.dags)
        data = root / "data"
        data.mkdir()
        for name in ("po.pdf", "inv.pdf", "a.pdf", "b.pdf"):
            (data / name).write_bytes(b"%PDF-1.4\n% ui check " + name.encode() + b"\n%%EOF\n")
        try:
            stack.run("db-migrate", [str(BIN / "airflow"), "db", "migrate"], timeout=600)
            stack.airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(stack.api_port))
            wait_for("the API server", AirflowApi(stack.api_url).healthy, timeout=300)
            run_id, run_url = finished_run(stack, emulator.url, data)
            with browser(root / "chromium-profile") as driver:
                problems = [
                    p for facts in registered() for p in check_connection_form(driver, stack.api_url, facts.name, shots)
                ]
                problems += check_task_link(driver, stack.api_url, run_id, run_url, shots)
        except (E2EError, WebDriverException) as exc:
            print(f"ui: could not run the checks: {exc}", file=sys.stderr)
            return 1
        finally:
            stack.stop()
    for problem in problems:
        print(f"ui: {problem}")
    print(f"ui: {len(registered())} connection forms and the task's Open flow run link checked; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
