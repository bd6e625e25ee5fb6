"""The playground page in a real headless Chromium (Debian's chromium + chromium-driver, via
Selenium): load it, generate, open a token's alternatives and the step's distribution, and
save a screenshot."""

import json
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


def _attention(driver) -> list[tuple[str, str, float]]:
    """(kind, text, weight) of every shaded token in the attention card."""
    rows = driver.execute_script(  # read in one go: the card is redrawn when a choice changes
        "return [...document.querySelectorAll('#attn-tokens .attn-tok')]"
        ".map((s) => [s.dataset.kind, s.textContent, s.dataset.weight]);")
    return [(kind, text, float(weight)) for kind, text, weight in rows]


def _choose(driver, select_id: str, value: str) -> None:
    driver.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1];"
                          "s.dispatchEvent(new Event('change'));", select_id, value)


def test_clicking_a_token_shades_the_tokens_its_step_attended_to(server, browser):
    """The attention card: every earlier token (the prompt's, then the output's so far) shaded by
    the weight the step that drew the clicked token gave it, mean of all layers and heads by
    default; choosing a layer and a head changes the shading."""
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    prompt = browser.find_element(By.ID, "prompt").get_attribute("value")
    browser.find_element(By.ID, "seed").send_keys("5")
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    tokens = browser.find_elements(By.CSS_SELECTOR, "#output .tok")
    assert len(tokens) >= 4
    tokens[3].click()
    _wait(browser, lambda d: len(_attention(d)) == len(prompt) + 3)  # a char tokenizer: one token a character
    shaded = _attention(browser)
    texts = [t.get_attribute("textContent") for t in tokens]
    assert "".join(text for _, text, _ in shaded) == prompt + "".join(texts[:3])
    assert {kind for kind, _, _ in shaded} == {"self"}
    mean = [w for _, _, w in shaded]
    assert sum(mean) == pytest.approx(1.0, abs=1e-4) and min(mean) > 0  # softmax over every earlier token
    target = browser.find_element(By.CSS_SELECTOR, "#attn-tokens .attn-target")
    assert target.get_attribute("textContent") == texts[3]
    assert json.loads(browser.find_element(By.ID, "attn-token").get_attribute("textContent")) == texts[3]
    backgrounds = {s.value_of_css_property("background-color")
                   for s in browser.find_elements(By.CSS_SELECTOR, "#attn-tokens .attn-tok")}
    assert len(backgrounds) > 1  # shaded by weight
    assert "mean of 2 layers, mean of 4 heads" in browser.find_element(By.ID, "attn-summary").text
    assert [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#attn-head option")] == [
        "-1", "0", "1", "2", "3"]

    seen = {tuple(mean)}
    for layer, head in (("1", "-1"), ("1", "2"), ("0", "0")):
        _choose(browser, "attn-layer", layer)
        _choose(browser, "attn-head", head)
        weights = tuple(w for _, _, w in _attention(browser))
        assert len(weights) == len(mean) and sum(weights) == pytest.approx(1.0, abs=1e-4)
        assert weights not in seen  # another layer / head, another shading
        seen.add(weights)
    assert "layer 0, head 0" in browser.find_element(By.ID, "attn-summary").text

    tokens[1].click()  # another token: fewer earlier tokens, the layer and head choice kept
    _wait(browser, lambda d: len(_attention(d)) == len(prompt) + 1)
    assert browser.find_element(By.ID, "attn-head").get_attribute("value") == "0"

    # chat: the prompt is the rendered conversation, whose ids the server returned
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=chat]").click()
    browser.execute_script("document.getElementById('max_tokens').value = 8;")  # the conversation fills most of 64
    browser.find_element(By.ID, "generate").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    browser.find_elements(By.CSS_SELECTOR, "#output .tok")[0].click()
    _wait(browser, lambda d: "hello there" in "".join(text for _, text, _ in _attention(d)))
    assert sum(w for _, _, w in _attention(browser)) == pytest.approx(1.0, abs=1e-4)


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

    # the attention of the step that drew token 1, as the family attends: an encoder-decoder's source
    # through cross-attention and its own <s> + token 0 through self-attention; a GLM's Part A
    # (with the [MASK]), the span's [S] and token 0 in one self-attention
    _wait(browser, lambda d: len(_attention(d)) > 0)
    shaded = _attention(browser)
    by_kind: dict[str, list] = {}
    for kind, text, weight in shaded:
        by_kind.setdefault(kind, []).append((text, weight))
    for pairs in by_kind.values():
        assert sum(w for _, w in pairs) == pytest.approx(1.0, abs=1e-4)
    first = tokens[0].get_attribute("textContent")
    if "[MASK]" in prompt:
        texts = [t for t, _ in by_kind["self"]]
        assert set(by_kind) == {"self"} and "[MASK]" in texts and texts[-2:] == ["[S]", first]
    else:
        assert set(by_kind) == {"cross", "self"}
        assert [t for t, _ in by_kind["self"]] == ["<s>", first]
        assert "".join(t for t, _ in by_kind["cross"]).startswith(prompt)  # the source, then its end token
    before = [w for _, _, w in shaded]
    _choose(browser, "attn-layer", "1")
    _choose(browser, "attn-head", "3")
    assert [w for _, _, w in _attention(browser)] != before
