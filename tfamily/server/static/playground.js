// tfamily playground: streams a completion or a chat reply from this server's OpenAI-style
// API, shades every token by its probability, shows a token's top alternatives on hover or
// click, and the whole next-token distribution at a clicked step under temperature / top-k /
// top-p. Plain JS, no build step. A server started with --api-key wants the key on every API
// call: the page takes it from its field or from /?key=KEY, keeps it in sessionStorage (this tab
// only), drops it from the address bar, and sends it as "Authorization: Bearer KEY".
// The page knows no model family: it reads only OpenAI's logprobs format and the token ids the
// server returns, and says where the prompt ends (prompt_length) when it asks for a step's
// distribution, so a decoder, an encoder-decoder (the prompt is the source) and a GLM (the
// prompt's blanks) are shown the same way. A clicked token's attention comes from
// /tfamily/attention, given the same prompt ids and generated ids: the server replays the
// family's decoding and says which tokens each kind of attention looked at (an encoder-decoder's
// source through cross-attention, its own output through self-attention), so the page shades
// whatever tokens it is told about without knowing why.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { model: null, tokens: [], promptIds: [], selected: null, abort: null, distTimer: null,
                attention: null };

// ------------------------------------------------------------------ helpers
function shade(p) {  // red (unlikely) -> yellow -> green (likely)
  return `hsl(${Math.round(120 * p)}, 85%, 72%)`;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.style.color = isError ? "#c00" : "";
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

// ------------------------------------------------------------------ the API key
const KEY_ITEM = "tfamily-api-key";

function apiKey() {
  try { return sessionStorage.getItem(KEY_ITEM) || ""; } catch (_) { return $("api-key").value.trim(); }
}

function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
  } catch (_) { /* storage disabled: the field still holds it */ }
  $("api-key").value = key;
}

// ?key=KEY: remember it for this tab, and take it out of the address bar (and out of history)
function keyFromAddress() {
  const url = new URL(window.location.href);
  const key = url.searchParams.get("key");
  if (key === null) return;
  setApiKey(key.trim());
  url.searchParams.delete("key");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}

function apiHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function postJSON(path, body, signal) {
  const r = await fetch(path, { method: "POST", headers: apiHeaders({ "Content-Type": "application/json" }),
                               body: JSON.stringify(body), signal });
  if (!r.ok) {
    let message = `HTTP ${r.status}`, param = null;
    try { ({ message, param } = (await r.json()).error); } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.param = param;  // the field the server named
    throw error;
  }
  return r;
}

// Server-sent events from a fetch body: yields each `data:` payload parsed as JSON.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

// ------------------------------------------------------------------ generation
function requestBody() {
  const chat = document.querySelector("input[name=mode]:checked").value === "chat";
  const alternatives = Number($("alternatives").value) || 0;
  const body = {
    model: state.model, stream: true, return_token_ids: true,
    temperature: Number($("temperature").value), top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  const topK = Number($("top_k").value);
  if (topK > 0) body.top_k = topK;
  const seed = numberOrNull("seed");
  if (seed !== null) body.seed = seed;
  if (chat) {
    body.messages = [];
    if ($("system").value.trim()) body.messages.push({ role: "system", content: $("system").value });
    body.messages.push({ role: "user", content: $("user").value });
    body.logprobs = true;
    body.top_logprobs = alternatives;
  } else {
    body.prompt = $("prompt").value;
    body.logprobs = alternatives;
  }
  return { chat, body };
}

// Tokens of one chunk as {text, prob, top: [{token, prob}]} whichever endpoint sent it.
function chunkTokens(choice, chat) {
  if (!choice.logprobs) return [];
  if (chat) {
    return choice.logprobs.content.map((t) => ({
      text: t.token, prob: Math.exp(t.logprob),
      top: t.top_logprobs.map((a) => ({ token: a.token, prob: Math.exp(a.logprob) })),
    }));
  }
  const lp = choice.logprobs;
  return lp.tokens.map((text, i) => ({
    text, prob: Math.exp(lp.token_logprobs[i]),
    top: Object.entries(lp.top_logprobs[i] || {}).map(([token, l]) => ({ token, prob: Math.exp(l) })),
  }));
}

async function generate() {
  const { chat, body } = requestBody();
  state.tokens = [];
  state.promptIds = [];
  state.selected = null;
  const out = $("output");
  out.textContent = "";
  if (!chat) {
    const p = document.createElement("span");
    p.className = "prompt";
    p.textContent = body.prompt;
    out.appendChild(p);
  }
  $("alternatives-card").hidden = true;
  $("distribution-card").hidden = true;
  $("attention-card").hidden = true;
  state.attention = null;
  state.abort = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus("generating…");
  const t0 = performance.now();
  let finish = null;
  try {
    const response = await postJSON(chat ? "/v1/chat/completions" : "/v1/completions", body, state.abort.signal);
    for await (const event of sseEvents(response)) {
      if (event.error) throw new Error(event.error.message);
      for (const choice of event.choices || []) {
        if (choice.prompt_token_ids) state.promptIds = choice.prompt_token_ids;
        const ids = choice.token_ids || [];
        chunkTokens(choice, chat).forEach((tok, i) => addToken({ ...tok, id: ids[i] }));
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    const secs = (performance.now() - t0) / 1000;
    setStatus(`done: ${state.tokens.length} tokens in ${secs.toFixed(2)} s (${finish})`);
  } catch (e) {
    setStatus(e.name === "AbortError" ? "stopped" : `error: ${e.message}`, e.name !== "AbortError");
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

function addToken(tok) {
  tok.index = state.tokens.length;
  state.tokens.push(tok);
  const span = document.createElement("span");
  span.className = "tok";
  span.dataset.index = tok.index;
  span.textContent = tok.text;
  span.style.background = shade(tok.prob);
  span.title = `p = ${tok.prob.toFixed(3)}`;
  span.addEventListener("mouseenter", () => showAlternatives(tok));
  span.addEventListener("mouseleave", () => { if (state.selected) showAlternatives(state.selected); });
  span.addEventListener("click", () => selectToken(tok, span));
  $("output").appendChild(span);
}

// ------------------------------------------------------------------ one token's alternatives
function showAlternatives(tok) {
  $("alternatives-card").hidden = false;
  $("alt-token").textContent = JSON.stringify(tok.text);
  $("alt-prob").textContent = `p = ${tok.prob.toFixed(4)}`;
  const rows = tok.top.length ? tok.top : [{ token: tok.text, prob: tok.prob }];
  drawBars($("alt-chart"), rows.map((a) => ({
    label: a.token, values: [a.prob], classes: [a.token === tok.text ? "bar-alt chosen alt-bar" : "bar-alt alt-bar"],
  })));
}

function selectToken(tok, span) {
  document.querySelectorAll("#output .tok.selected").forEach((s) => s.classList.remove("selected"));
  span.classList.add("selected");
  state.selected = tok;
  showAlternatives(tok);
  $("d-temperature").value = $("temperature").value;
  $("d-top_p").value = $("top_p").value;
  $("d-top_k").value = $("top_k").value;
  loadDistribution();
  loadAttention();
}

// ------------------------------------------------------------------ what a token's step attended to
async function loadAttention() {
  const tok = state.selected;
  if (!tok || tok.id === undefined || !state.promptIds.length) return;
  const body = { model: state.model, prompt: state.promptIds, steps: [tok.index],
                 completion_ids: state.tokens.slice(0, tok.index + 1).map((t) => t.id) };
  try {
    const a = await (await postJSON("/tfamily/attention", body)).json();
    if (state.selected !== tok) return;  // another token was clicked meanwhile
    state.attention = a;
    fillChoices($("attn-layer"), a.layers, "layer");
    fillChoices($("attn-head"), a.heads, "head");
    $("attn-token").textContent = JSON.stringify(tok.text);
    $("attention-card").hidden = false;
    drawAttention();
  } catch (e) {
    if (e.param !== "model") { setStatus(`attention: ${e.message}`, true); return; }
    // the model has none to show (a recurrent network): say so in the card, not as an error
    state.attention = null;
    $("attn-token").textContent = JSON.stringify(tok.text);
    $("attn-tokens").textContent = "";
    $("attn-summary").textContent = e.message;
    $("attention-card").hidden = false;
  }
}

function fillChoices(select, n, name) {  // "all (mean)" then 0 .. n-1; keeps the choice when it still exists
  const keep = Number(select.value);
  while (select.options.length > 1) select.remove(1);
  for (let i = 0; i < n; i++) select.add(new Option(`${name} ${i}`, String(i)));
  select.value = keep < n ? String(keep) : "-1";
}

// One kind of attention's weights over its keys, for a layer and head (-1: the mean over all).
function meanWeights(weights, layer, head) {
  const out = new Array(weights[0][0].length).fill(0);
  let rows = 0;
  weights.forEach((perHead, l) => {
    if (layer >= 0 && l !== layer) return;
    perHead.forEach((row, h) => {
      if (head >= 0 && h !== head) return;
      row.forEach((w, s) => { out[s] += w; });
      rows += 1;
    });
  });
  return out.map((w) => w / Math.max(rows, 1));
}

function drawAttention() {
  const a = state.attention;
  if (!a) return;
  const step = a.steps[0];
  const layer = Number($("attn-layer").value), head = Number($("attn-head").value);
  const box = $("attn-tokens");
  box.textContent = "";
  const maps = step.attention.map((m) => {
    const w = meanWeights(m.weights, layer, head);
    return { kind: m.kind, start: m.keys[0], end: m.keys[1], w, max: Math.max(...w) };
  });
  const summary = [];
  for (let i = 0; i <= step.token; i++) {
    const t = a.tokens[i];
    const map = maps.find((m) => m.start <= i && i < m.end);
    if (map && i === map.start) {
      const label = document.createElement("span");
      label.className = "attn-label muted small";
      label.textContent = `${map.kind}-attention:`;
      box.appendChild(label);
    }
    const span = document.createElement("span");
    span.textContent = t.text === "" ? "\u2205" : t.text;
    if (i === step.token) {  // the token this step drew
      span.className = "attn-target";
      span.title = "the token drawn at this step";
    } else if (map) {
      const w = map.w[i - map.start], alpha = map.max > 0 ? w / map.max : 0;
      span.className = "attn-tok";
      span.dataset.weight = w.toFixed(6);
      span.dataset.kind = map.kind;
      span.style.background = `rgba(31, 111, 235, ${alpha.toFixed(3)})`;
      if (alpha > 0.55) span.style.color = "#fff";
      span.title = `${map.kind}-attention ${w.toFixed(4)}${i === step.query ? " (the query's own position)" : ""}`;
    } else {  // a key this step could not see (dropped from Transformer-XL's memory)
      span.className = "attn-unseen";
      span.title = "not among this step's keys";
    }
    if (t.part === "start") span.classList.add("attn-start");
    box.appendChild(span);
  }
  maps.forEach((m) => {
    const top = m.w.indexOf(m.max);
    summary.push(`${m.kind}-attention: strongest ${JSON.stringify(a.tokens[m.start + top].text)} ` +
                 `(${m.max.toFixed(3)}) of ${m.end - m.start} tokens`);
  });
  const which = `${layer < 0 ? `mean of ${a.layers} layers` : `layer ${layer}`}, ` +
                `${head < 0 ? `mean of ${a.heads} heads` : `head ${head}`}`;
  $("attn-summary").textContent = `${which}; ${summary.join("; ")}`;
}

// ------------------------------------------------------------------ the whole distribution
function sliderLabels() {
  $("d-temperature-v").textContent = $("d-temperature").value;
  $("d-top_k-v").textContent = Number($("d-top_k").value) ? $("d-top_k").value : "off";
  $("d-top_p-v").textContent = $("d-top_p").value;
}

async function loadDistribution() {
  const tok = state.selected;
  if (!tok || tok.id === undefined) return;
  sliderLabels();
  const ids = state.promptIds.concat(state.tokens.slice(0, tok.index).map((t) => t.id));
  const body = { model: state.model, token_ids: ids, temperature: Number($("d-temperature").value),
                 top_p: Number($("d-top_p").value), top_n: 25 };
  if (state.promptIds.length) body.prompt_length = state.promptIds.length;  // the rest was generated
  if (Number($("d-top_k").value) > 0) body.top_k = Number($("d-top_k").value);
  try {
    const d = await (await postJSON("/tfamily/distribution", body)).json();
    $("distribution-card").hidden = false;
    $("dist-step").textContent = tok.index + 1;
    $("dist-token").textContent = JSON.stringify(tok.text);
    $("dist-summary").textContent = `vocabulary ${d.vocab_size}; the sampler keeps ${d.kept} token${d.kept === 1 ? "" : "s"}; ` +
      `entropy ${d.entropy.toFixed(2)} nats; showing the ${d.tokens.length} most likely`;
    drawBars($("dist-chart"), d.tokens.map((t) => ({
      label: t.token, values: [t.prob, t.sampled_prob], classes: ["bar-model dist-bar", "bar-sampled dist-bar"],
      bold: t.id === tok.id,
    })));
  } catch (e) {
    setStatus(`distribution: ${e.message}`, true);
  }
}

function scheduleDistribution() {  // sliders fire often: ask once they settle
  sliderLabels();
  clearTimeout(state.distTimer);
  state.distTimer = setTimeout(loadDistribution, 120);
}

// ------------------------------------------------------------------ a small SVG bar chart
// rows: [{label, values: [v0, v1?] in [0, 1], classes: [...], bold}]: one bar per value, stacked in a row.
function drawBars(svg, rows) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = svg.clientWidth || 300, labelW = 70, rowH = 18, gap = 4;
  const per = rows.length ? rows[0].values.length : 1;
  const barH = (rowH - 2) / per;
  svg.setAttribute("height", rows.length * (rowH + gap) + 4);
  rows.forEach((row, r) => {
    const y = r * (rowH + gap) + 2;
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", 0);
    label.setAttribute("y", y + rowH - 5);
    label.textContent = JSON.stringify(row.label).slice(0, 10);
    if (row.bold) label.setAttribute("font-weight", "bold");
    svg.appendChild(label);
    row.values.forEach((v, i) => {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", labelW);
      rect.setAttribute("y", y + i * barH);
      rect.setAttribute("width", Math.max(1, v * (width - labelW - 50)));
      rect.setAttribute("height", barH - 1);
      rect.setAttribute("class", row.classes[i]);
      svg.appendChild(rect);
    });
    const value = document.createElementNS(SVG, "text");
    value.setAttribute("x", width - 46);
    value.setAttribute("y", y + rowH - 5);
    value.textContent = row.values[row.values.length - 1].toFixed(3);
    svg.appendChild(value);
  });
}

// ------------------------------------------------------------------ wiring
async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: apiHeaders() });
    if (r.status === 401) {
      $("model-name").textContent = "API key needed";
      setStatus("this server needs an API key: enter it above (or open the page as /?key=KEY)", true);
      $("api-key").focus();
      return;
    }
    const models = await r.json();
    state.model = models.data[0].id;
    $("model-name").textContent = `${state.model} · context ${models.data[0].context_length} tokens`;
    setStatus("");
    document.body.dataset.ready = "1";
  } catch (e) {
    setStatus(`cannot reach the server: ${e.message}`, true);
  }
}

async function init() {
  keyFromAddress();
  $("api-key").value = apiKey();
  $("api-key").addEventListener("change", () => { setApiKey($("api-key").value.trim()); loadModel(); });
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
    const chat = document.querySelector("input[name=mode]:checked").value === "chat";
    $("completion-box").hidden = chat;
    $("chat-box").hidden = !chat;
  }));
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  ["d-temperature", "d-top_k", "d-top_p"].forEach((id) => $(id).addEventListener("input", scheduleDistribution));
  ["attn-layer", "attn-head"].forEach((id) => $(id).addEventListener("change", drawAttention));
  await loadModel();
}

init();
