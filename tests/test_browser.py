"""The status page in a real headless Chromium, against a real twistd."""

import shutil
import socket

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,900")

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (tools/test.sh installs them)")


@pytest.fixture
def server(twistd):
    return twistd(store="memory:", listeners=("port", "http"))


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def card(name: str) -> tuple:
    return By.CSS_SELECTOR, f'.client[data-client="{name}"]'


def test_pageShowsClientsAndLiveLines(server, browser, tmp_path):
    client = socket.create_connection(("127.0.0.1", server.ports["port"]))
    client.sendall(b"IAM checkout\nSET region eu-west\nLOG started\n")
    try:
        browser.get(f"http://127.0.0.1:{server.ports['http']}/")
        shown = WebDriverWait(browser, 10).until(expected_conditions.visibility_of_element_located(
            card("checkout")))
        WebDriverWait(browser, 10).until(
            lambda _: browser.find_element(By.ID, "live").get_attribute("data-state") == "live")
        assert "online" in shown.get_attribute("class")
        assert "eu-west" in shown.find_element(By.CSS_SELECTOR, ".state").text
        assert "started" in shown.find_element(By.CSS_SELECTOR, ".lines").text

        client.sendall(b"LOG order 1234 paid\n")
        WebDriverWait(browser, 2).until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, f'{card("checkout")[1]} .lines'), "order 1234 paid"))

        client.close()
        WebDriverWait(browser, 2).until(
            lambda _: "offline" in browser.find_element(*card("checkout")).get_attribute("class"))

        browser.find_element(By.ID, "filter").send_keys("nothing matches this")
        WebDriverWait(browser, 2).until(
            expected_conditions.invisibility_of_element_located(card("checkout")))

        browser.save_screenshot(str(tmp_path / "page.png"))
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        client.close()
