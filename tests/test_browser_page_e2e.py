"""
The status page in a real headless Chromium against a real ``twistd``: a client's log
pane follows its newest line unless the person scrolled up (then it stays and says how
many lines arrived), and the first render waits for one consistent snapshot.
"""

import json
import socket
import threading
import time

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.pages import card, needsChromium

pytestmark = needsChromium

PANE = """
const list = document.querySelector(`.client[data-client="${arguments[0]}"] .lines`);
const more = list.parentElement.querySelector(".more");
const box = list.getBoundingClientRect();
const visible = [...list.children].filter((li) => {
  const r = li.getBoundingClientRect();
  return r.bottom > box.top + 1 && r.top < box.bottom - 1;
}).map((li) => li.querySelector(".msg").textContent);
return {scrollTop: list.scrollTop,
        atBottom: list.scrollHeight - list.scrollTop - list.clientHeight < 8,
        scrollable: list.scrollHeight > list.clientHeight + 8, visible,
        last: list.lastElementChild.querySelector(".msg").textContent,
        more: !more || more.hidden ? null : more.textContent};
"""


def pane(browser, name: str) -> dict:
    return browser.execute_script(PANE, name)


def ticks(start: int, stop: int) -> bytes:
    return b"".join(b"LOG tick %d\n" % n for n in range(start, stop))


def waitFor(browser, condition, timeout: float = 10):
    return WebDriverWait(browser, timeout).until(lambda _: condition())


def test_paneFollowsNewestLineUnlessScrolledUp(pageServer, browser, tmp_path):
    client = socket.create_connection(("127.0.0.1", pageServer.ports["port"]))
    try:
        client.sendall(b"IAM ticker\n" + ticks(0, 100))
        browser.get(f"http://127.0.0.1:{pageServer.ports['http']}/")
        waitFor(browser, lambda: browser.find_elements(*card("ticker"))
                and pane(browser, "ticker")["last"] == "tick 99")
        shown = waitFor(browser, lambda: (p := pane(browser, "ticker"))["atBottom"] and p)
        assert shown["scrollable"] and shown["visible"][-1] == "tick 99", shown
        assert shown["more"] is None

        client.sendall(ticks(100, 105))
        shown = waitFor(browser, lambda: (p := pane(browser, "ticker"))["last"] == "tick 104"
                        and p["atBottom"] and p)
        assert shown["visible"][-1] == "tick 104", shown

        # The person scrolls up: the pane stays where they put it.
        lines = browser.find_element(By.CSS_SELECTOR, f'{card("ticker")[1]} .lines')
        origin = ScrollOrigin.from_element(lines)
        ActionChains(browser).scroll_from_origin(origin, 0, -300).perform()
        before = waitFor(browser, lambda: (p := pane(browser, "ticker"))["scrollTop"] > 0
                         and not p["atBottom"] and p)
        client.sendall(ticks(105, 110))
        # The lines may come in more than one message: the count grows to 5.
        held = waitFor(browser, lambda: (p := pane(browser, "ticker"))["more"]
                       == "5 new lines \u2193" and p)
        assert (held["scrollTop"], held["visible"]) == (before["scrollTop"], before["visible"])
        assert "tick 109" not in held["visible"]
        browser.save_screenshot(str(tmp_path / "scrolled-up.png"))

        # Back to the newest line: it follows again.
        browser.find_element(By.CSS_SELECTOR, f'{card("ticker")[1]} .more').click()
        back = waitFor(browser, lambda: (p := pane(browser, "ticker"))["visible"][-1:]
                       == ["tick 109"] and p)
        assert back["more"] is None and back["atBottom"], back
        client.sendall(ticks(110, 112))
        waitFor(browser, lambda: pane(browser, "ticker")["visible"][-1:] == ["tick 111"])
        browser.save_screenshot(str(tmp_path / "following.png"))
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        client.close()


RECORD_RENDERS = """
window.__renders = [];
new MutationObserver(() => {
  if (!document.body) return;
  const text = (id) => (document.getElementById(id) || {}).textContent;
  const state = JSON.stringify({
    page: document.body.dataset.state || null,
    cards: document.querySelectorAll(".client").length,
    onlineCards: document.querySelectorAll(".client.online").length,
    online: text("stat-online"), offline: text("stat-offline"),
    loading: document.querySelectorAll(".placeholder.loading").length,
  });
  if (window.__renders[window.__renders.length - 1] !== state) window.__renders.push(state);
}).observe(document, {childList: true, subtree: true, characterData: true, attributes: true});
"""


class Ticker(threading.Thread):
    """A client that logs C{tick N} every few milliseconds until stopped."""

    def __init__(self, port: int, name: str):
        super().__init__(daemon=True)
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.socket.sendall(f"IAM {name}\n".encode() + ticks(0, 20))
        self.sent = 20
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.socket.sendall(ticks(self.sent, self.sent + 1))
            self.sent += 1
            time.sleep(0.003)


def test_firstRenderIsOneConsistentSnapshot(pageServer, browser):
    tickers = [Ticker(pageServer.ports["port"], name) for name in ("alpha", "beta")]
    for ticker in tickers:
        ticker.start()
    try:
        time.sleep(0.3)
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                {"source": RECORD_RENDERS})
        browser.get(f"http://127.0.0.1:{pageServer.ports['http']}/")
        waitFor(browser, lambda: browser.execute_script(
            "return document.body.dataset.state") == "ready")
        time.sleep(0.5)     # live lines keep coming on top of the snapshot
    finally:
        for ticker in tickers:
            ticker.stopping.set()
            ticker.join(10)
    renders = [json.loads(r) for r in browser.execute_script("return window.__renders")]
    loading = {"page": "loading", "cards": 0, "onlineCards": 0, "online": "\u2013",
               "offline": "\u2013", "loading": 1}
    ready = {"page": "ready", "cards": 2, "onlineCards": 2, "online": "2", "offline": "0",
             "loading": 0}
    seen = [r for r in renders if r["page"] is not None]
    assert seen and seen[0] == loading, renders
    assert all(r in (loading, ready) for r in seen), renders
    assert seen[-1] == ready

    # Every line once, in order, with none missing: the events that came while the
    # snapshot was on its way were neither lost nor applied twice.
    for ticker, name in zip(tickers, ("alpha", "beta")):
        last = f"tick {ticker.sent - 1}"
        waitFor(browser, lambda: pane(browser, name)["last"] == last)
        texts = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
            f'.client[data-client="{name}"] .lines .msg')
        numbers = [int(t.split()[1]) for t in texts]
        assert numbers == list(range(ticker.sent - len(numbers), ticker.sent)), numbers
        ticker.socket.close()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
