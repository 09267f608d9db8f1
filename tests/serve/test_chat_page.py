"""The chat page at `/` in a real headless browser (Debian's chromium + chromedriver,
driven by selenium): a streamed reply, the stop button, a new chat, text shown as text."""

import shutil
import time

import pytest
from serving import health, raw, servers, sft_run, wait_idle  # noqa: F401  (fixtures)

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium drives the browser (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromedriver (apt-get install -y chromium "
           "chromium-driver; .ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout=60, what="the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def last_reply(browser):
    """(data-state, text) of the newest assistant message, or None; read in one script
    (the page may replace elements between two WebDriver calls)."""
    return browser.execute_script("""
        const replies = document.querySelectorAll("#messages .message.assistant");
        if (!replies.length) return null;
        const last = replies[replies.length - 1];
        return [last.dataset.state, last.querySelector(".content").textContent];""")


def texts(browser, kind):
    """Every message of `kind` ("user", "assistant", "error") exactly as the page holds
    it (whitespace and all)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#messages .message.' + arguments[0]),"
        " (m) => m.querySelector('.content').textContent);", kind)


def send(browser, text):
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys("\n")  # Enter sends


def test_a_reply_streams_in_and_text_stays_text(browser, servers):
    server = servers["slow"]  # 50 ms per token: the reply visibly grows
    browser.get(server.url + "/")
    wait_for(lambda: "tiny-sft" in browser.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "system").send_keys("Be <i>brief</i>.")
    browser.find_element(By.ID, "max-tokens").send_keys("16")
    message = "<b>Hi</b><img src=x>"
    send(browser, message)
    seen = set()

    def finished():
        reply = last_reply(browser)
        if reply is None:  # an error before the first words removes the reply
            return texts(browser, "error") and "error"
        state, text = reply
        if state == "streaming":
            seen.add(text)
        return state != "streaming" and state

    assert wait_for(finished, what="the reply") == "done", texts(browser, "error")
    shown = last_reply(browser)[1]
    # Several partial texts were on screen before the reply was complete.
    assert len({s for s in seen if s and s != shown}) >= 2
    conversation = [{"role": "system", "content": "Be <i>brief</i>."},
                    {"role": "user", "content": message}]
    status, body = raw(server, "POST", "/v1/chat/completions",
                       {"messages": conversation, "temperature": 0, "max_tokens": 16},
                       key=None)
    assert status == 200
    assert shown == body["choices"][0]["message"]["content"]
    assert texts(browser, "user") == [message]
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages b, #messages img, "
                                                      "#messages i")


def test_stop_ends_the_generation_on_the_server_and_new_chat_clears(browser, servers):
    server = servers["slow"]
    browser.get(server.url + "/")
    before = wait_idle(server)
    send(browser, "Tell me everything.")
    wait_for(lambda: (last_reply(browser) or ("", ""))[1], what="the first words")
    browser.find_element(By.ID, "stop").click()
    wait_for(lambda: last_reply(browser)[0] == "stopped", what="the stopped state")
    after = wait_idle(server)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completed"] == before["completed"]
    # The default reply is 32 tokens (half the context); far fewer were generated.
    assert after["tokens_generated"] - before["tokens_generated"] < 24
    assert browser.find_element(By.ID, "send").is_displayed()
    browser.find_element(By.ID, "new-chat").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages .message")
    assert health(server)["active"] == 0
