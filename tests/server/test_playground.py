"""The playground page in a real headless Chromium (Debian's chromium + chromium-driver, via
Selenium): load it, generate, open a token's alternatives and the step's distribution, and
save a screenshot."""

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    # make install puts them there (apt-get install chromium chromium-driver); not a skip: the page must be tested
    assert CHROMIUM and DRIVER, "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=ChromeService(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=30):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def test_page_generates_shades_tokens_and_shows_alternatives(server, browser, tmp_path):
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "tiny" in browser.find_element(By.ID, "model-name").text
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    tokens = browser.find_elements(By.CSS_SELECTOR, "#output .tok")
    status = browser.find_element(By.ID, "status").text  # "done: N tokens in ... (stop|length)"
    assert len(tokens) == int(status.split()[1]) >= 5
    shades = {t.value_of_css_property("background-color") for t in tokens}
    assert len(shades) > 1  # shaded by probability, not one flat colour

    tokens[2].click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alt-chart rect.alt-bar")) == 5)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#alt-chart rect.chosen")) <= 1
    assert browser.find_element(By.ID, "alt-prob").text.startswith("p = ")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dist-chart rect.bar-sampled")) == 25)
    summary = browser.find_element(By.ID, "dist-summary").text
    assert "keeps" in summary

    # top-k = 3 at this step: the sampler keeps exactly three tokens, the chart shows it
    browser.execute_script("const s = document.getElementById('d-top_k'); s.value = 3;"
                           "s.dispatchEvent(new Event('input'));")
    _wait(browser, lambda d: "keeps 3 tokens" in d.find_element(By.ID, "dist-summary").text)
    widths = [float(r.get_attribute("width")) for r in browser.find_elements(By.CSS_SELECTOR, "#dist-chart rect.bar-sampled")]
    assert sum(w > 1 for w in widths) == 3

    shot = tmp_path / "playground.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_page_reports_a_bad_request_from_the_server(server, browser):
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    browser.execute_script("document.getElementById('max_tokens').value = 100000;")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("error"))
    assert "max_tokens" in browser.find_element(By.ID, "status").text


PAGE_KEY = "sk-page-key-42"


@pytest.fixture(scope="module")
def keyed_server(checkpoint):
    from server.conftest import LiveServer
    with LiveServer(checkpoint, max_batch=8, api_key=PAGE_KEY) as s:
        yield s


def test_page_works_with_an_api_key(keyed_server, browser):
    """Without a key the page says so; /?key=KEY is kept in sessionStorage (and dropped from the
    address bar) and sent on every API call, generation and distribution alike; the field works too."""
    url = keyed_server.url
    browser.get(url + "/")
    _wait(browser, lambda d: "API key" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") != "1"

    browser.get(url + "/?key=" + PAGE_KEY)
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "key=" not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('tfamily-api-key')") == PAGE_KEY
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    browser.find_elements(By.CSS_SELECTOR, "#output .tok")[1].click()  # /tfamily/distribution needs the key too
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dist-chart rect.bar-sampled")) > 0)

    browser.get(url + "/")  # same tab: the key is remembered
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    _wait(browser, lambda d: "API key" in d.find_element(By.ID, "status").text)
    browser.execute_script("const k = document.getElementById('api-key'); k.value = arguments[0];"
                           "k.dispatchEvent(new Event('change'));", PAGE_KEY)
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))


# The page knows no family: it reads OpenAI's logprobs format and the token ids the server returns
# (playground.js), so what it shows for a decoder it shows for any family. This checks it does, in
# the browser, for an encoder-decoder (the prompt is the source) and a GLM (the prompt's blank).
@pytest.fixture(scope="module", params=[("t5-tiny", "The quick brown fox"), ("glm-tiny", "The quick [MASK] fox")],
                ids=["encoder-decoder", "glm"])
def family_server(request, tmp_path_factory):
    from server.conftest import LiveServer
    from server.helpers import preset_checkpoint
    preset, prompt = request.param
    ck = preset_checkpoint(tmp_path_factory.mktemp(preset) / "ck", preset)
    with LiveServer(ck, max_batch=4) as s:
        yield s, prompt


def test_page_shows_every_familys_token_probabilities(family_server, browser):
    server, prompt = family_server
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    browser.execute_script("document.getElementById('prompt').value = arguments[0];", prompt)
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.execute_script("document.getElementById('max_tokens').value = 12;")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    tokens = browser.find_elements(By.CSS_SELECTOR, "#output .tok")
    assert len(tokens) == int(browser.find_element(By.ID, "status").text.split()[1]) >= 2
    assert all(t.get_attribute("title").startswith("p = ") for t in tokens)  # each token's probability
    tokens[1].click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alt-chart rect.alt-bar")) == 5)
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dist-chart rect.bar-sampled")) == 25)
    assert "keeps" in browser.find_element(By.ID, "dist-summary").text
