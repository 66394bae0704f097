"""The status page in a real headless Chromium, against a real twistd."""

import socket

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.pages import card, needsChromium


pytestmark = needsChromium


def test_pageShowsClientsAndLiveLines(pageServer, browser, tmp_path):
    client = socket.create_connection(("127.0.0.1", pageServer.ports["port"]))
    client.sendall(b"IAM checkout\nSET region eu-west\nLOG started\n")
    try:
        browser.get(f"http://127.0.0.1:{pageServer.ports['http']}/")
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


def test_filterMatchesNameStateAndLineText(pageServer, browser):
    """The filter shows the clients that match by name, key=value or a line's text."""
    clients = []
    for hello in (b"IAM checkout\nSET region eu-west\nLOG order 1234 paid\n",
                  b"IAM billing\nSET region us-east\nLOG invoice 77 sent\nLOG retry later\n",
                  b"IAM search\nLOG query ok\n"):
        clients.append(socket.create_connection(("127.0.0.1", pageServer.ports["port"])))
        clients[-1].sendall(hello)
    try:
        browser.get(f"http://127.0.0.1:{pageServer.ports['http']}/")
        WebDriverWait(browser, 10).until(
            lambda _: browser.find_element(By.ID, "live").get_attribute("data-state") == "live")
        WebDriverWait(browser, 10).until(lambda _: len(
            browser.find_elements(By.CSS_SELECTOR, ".client .lines .msg")) == 4)

        def shown():
            return sorted(node.get_attribute("data-client") for node in
                          browser.find_elements(By.CSS_SELECTOR, ".client"))

        search = browser.find_element(By.ID, "filter")
        for query, expected in (("CHECK", ["checkout"]), ("region=us-east", ["billing"]),
                                ("invoice", ["billing"]), ("nothing matches", []),
                                ("", ["billing", "checkout", "search"])):
            search.clear()
            search.send_keys(query or " ")
            # Cards are re-rendered as events arrive: a card read mid-render is stale.
            WebDriverWait(browser, 5, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda _: shown() == expected, f"{query!r} never showed {expected}")
        search.clear()
        search.send_keys("invoice")
        WebDriverWait(browser, 5, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda _: [m.text for m in browser.find_elements(
                By.CSS_SELECTOR, '.client[data-client="billing"] .lines .msg')]
            == ["invoice 77 sent"])
    finally:
        for client in clients:
            client.close()
