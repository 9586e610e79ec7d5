// NanoBanana Edge console: a small page over the public API, no framework, no build.
// The account token lives in sessionStorage (never in a URL); a new API key is kept only
// in memory for the playground, and shown once.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TOKEN = "nb_console_token";
const state = { token: sessionStorage.getItem(TOKEN), role: null, cursors: [], nextCursor: null, inputs: [], models: null, chain: [] };

class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `request failed (${status})`);
    this.status = status;
    this.code = error?.code;
  }
}

async function api(path, { method = "GET", body, credential = state.token, prefer } = {}) {
  const headers = {};
  if (prefer) headers.prefer = prefer;
  if (credential) headers.authorization = `Bearer ${credential}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error);
  return data;
}

function say(message) {
  $("#status").textContent = message;
}

function fail(error) {
  say("");
  const box = $("#error");
  box.textContent = error.message;
  box.hidden = false;
  if (error.status === 401 && ["invalid_token", "token_expired", "token_revoked"].includes(error.code) && state.token) signOut(error.message);
}

function clearMessages() {
  $("#error").hidden = true;
  $("#error").textContent = "";
  say("");
}

// Runs an action with its button disabled and any error shown in plain words.
async function act(button, work) {
  clearMessages();
  if (button) button.disabled = true;
  try {
    await work();
  } catch (error) {
    fail(error);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- views

const LOADERS = {
  admin: loadAdmin,
  playground: loadModels,
  keys: async () => {
    await loadKeys();
    await loadWebhookSecret();
  },
  usage: loadUsage,
  history: () => {
    state.cursors = [];
    return loadHistory(null);
  },
};

function show(view) {
  // A secret shown once leaves the page with the view.
  $("#new-secret").hidden = true;
  $("#new-secret-value").value = "";
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== `view-${view}`;
  for (const button of document.querySelectorAll("nav [data-view]")) {
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  $("#nav").hidden = !state.token;
  $("#nav-admin").hidden = state.role !== "admin";
  const section = $(`#view-${view}`);
  document.title = `${section.dataset.title} · NanoBanana Edge`;
  section.querySelector("h2").setAttribute("tabindex", "-1");
  section.querySelector("h2").focus();
  clearMessages();
  if (LOADERS[view]) act(null, LOADERS[view]);
}

// ---------------------------------------------------------------- account

async function signIn(path) {
  const email = $("#email").value;
  const password = $("#password").value;
  const data = await api(path, { method: "POST", body: { email, password }, credential: null });
  state.token = data.access_token;
  sessionStorage.setItem(TOKEN, state.token);
  $("#password").value = "";
  await loadRole();
  show("keys");
  say(path.endsWith("register") ? `Account created for ${email}.` : `Signed in as ${email}.`);
}

// The Admin page is offered to admins only (the API answers 404 to anyone else anyway).
async function loadRole() {
  state.role = state.token ? (await api("/v1/auth/me")).role : null;
}

function signOut(message) {
  if (state.token) api("/v1/auth/logout", { method: "POST" }).catch(() => {});
  state.role = null;
  state.token = null;
  sessionStorage.removeItem(TOKEN);
  $("#api-key").value = "";
  show("account");
  say(message || "Signed out.");
}

// ---------------------------------------------------------------- keys

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

async function loadKeys() {
  const { data } = await api("/v1/keys");
  const body = $("#keys-table tbody");
  body.replaceChildren();
  for (const key of data) {
    const row = document.createElement("tr");
    cell(row, key.name);
    const prefix = cell(row, "");
    prefix.append(Object.assign(document.createElement("code"), { textContent: `${key.prefix}…` }));
    cell(row, key.mode);
    cell(row, key.last_used_at ? new Date(key.last_used_at).toLocaleString() : "never");
    cell(row, key.is_active ? (key.expires_at && new Date(key.expires_at) < new Date() ? "expired" : "active") : "revoked");
    const actions = cell(row, "");
    if (key.is_active) {
      const revoke = Object.assign(document.createElement("button"), { type: "button", className: "secondary", textContent: "Revoke" });
      revoke.setAttribute("aria-label", `Revoke key ${key.name} (${key.prefix})`);
      revoke.addEventListener("click", () => act(revoke, async () => {
        if (!confirm(`Revoke "${key.name}" (${key.prefix}…)? Requests with it will fail from now on.`)) return;
        await api(`/v1/keys/${key.id}`, { method: "DELETE" });
        await loadKeys();
        say(`Key ${key.prefix}… revoked.`);
      }));
      actions.append(revoke);
    }
    body.append(row);
  }
  if (!data.length) {
    const row = document.createElement("tr");
    cell(row, "No keys yet.").colSpan = 6;
    body.append(row);
  }
}

// The webhook signing secret: its prefix, or none yet; Create/Rotate shows it once.
async function loadWebhookSecret() {
  try {
    const secret = await api("/v1/webhook_secret");
    $("#webhook-state").textContent = `Current secret ${secret.prefix}… (version ${secret.version}).`;
    $("#rotate-secret").textContent = "Rotate secret";
  } catch (error) {
    if (error.status !== 404) throw error;
    $("#webhook-state").textContent = "None yet.";
    $("#rotate-secret").textContent = "Create secret";
  }
}

async function rotateSecret() {
  const secret = await api("/v1/webhook_secret", { method: "POST" });
  $("#new-secret").hidden = false;
  $("#new-secret-value").value = secret.secret;
  $("#new-secret-value").focus();
  await loadWebhookSecret();
  say(secret.version === 1 ? "Webhook secret created." : "Webhook secret rotated: the previous one keeps signing for 24 hours.");
}

async function createKey(form) {
  const body = { mode: $("#key-mode").value };
  if ($("#key-name").value.trim()) body.name = $("#key-name").value.trim();
  if ($("#key-expiry").value) body.expires_in_days = Number($("#key-expiry").value);
  const created = await api("/v1/keys", { method: "POST", body });
  $("#new-key").hidden = false;
  $("#new-key-value").value = created.key;
  $("#api-key").value = created.key; // for the playground, this session only
  form.reset();
  await loadKeys();
  say(`Key ${created.prefix}… created. Copy it now: it will not be shown again.`);
  $("#copy-key").focus();
}

async function copyKey() {
  const value = $("#new-key-value").value;
  try {
    await navigator.clipboard.writeText(value);
  } catch {
    $("#new-key-value").select();
    document.execCommand("copy");
  }
  say("Key copied to the clipboard.");
}

// ---------------------------------------------------------------- playground

// `source` ({generation_id, index}) adds an "Edit this" button: the image becomes a
// reference image of the next request; `chain` (the turns that led to it) adds "Continue":
// the next request continues its conversation.
function figure(image, id, caption, source, chain) {
  const fig = document.createElement("figure");
  const img = Object.assign(document.createElement("img"), { src: image.url, alt: caption, loading: "lazy" });
  const text = document.createElement("figcaption");
  text.append(`${id} `);
  const extension = image.mime_type === "image/jpeg" ? "jpg" : image.mime_type === "image/webp" ? "webp" : "png";
  text.append(Object.assign(document.createElement("a"), { href: image.url, download: `${id}.${extension}`, textContent: "Download" }));
  fig.append(img, text);
  if (source) {
    const edit = Object.assign(document.createElement("button"), { type: "button", className: "secondary edit", textContent: "Edit this" });
    edit.setAttribute("aria-label", `Edit ${id}`);
    edit.addEventListener("click", () => {
      addInput({ label: id, url: image.url, image: source });
      show("playground");
      say(`${id} is attached as a reference image: describe the change and press Generate.`);
    });
    fig.append(edit);
  }
  if (source && chain) {
    const more = Object.assign(document.createElement("button"), { type: "button", className: "secondary continue", textContent: "Continue" });
    more.setAttribute("aria-label", `Continue from ${id}`);
    more.addEventListener("click", () => {
      state.chain = [...chain, { id, url: image.url, source, caption }];
      renderChain();
      show("playground");
      $("#prompt").value = "";
      $("#prompt").focus();
      say(`Continuing from ${id} (turn ${state.chain.length}): describe the change and press Generate.`);
    });
    fig.append(more);
  }
  return fig;
}

// The conversation being continued, as a strip of its pictures, oldest first.
function renderChain() {
  $("#conversation").hidden = state.chain.length === 0;
  $("#conversation-strip").replaceChildren(...state.chain.map((turn, i) => {
    const item = document.createElement("li");
    item.append(Object.assign(document.createElement("img"), { src: turn.url, alt: `turn ${i + 1}: ${turn.caption}` }), `${i + 1}`);
    return item;
  }));
}

// The ratio and resolution pickers offer what the chosen model offers (GET /v1/models).
async function loadModels() {
  if (!state.models) state.models = (await api("/v1/models", { credential: null })).data;
  const select = $("#model");
  if (!select.options.length) {
    for (const model of state.models) select.append(new Option(model.id, model.id, model.default, model.default));
  }
  fillPickers();
}

function fillPickers() {
  const model = state.models.find((m) => m.id === $("#model").value) || state.models[0];
  const caps = model.capabilities;
  const ratio = $("#aspect-ratio"), resolution = $("#resolution");
  const keepRatio = ratio.value, keepResolution = resolution.value || "1K";
  ratio.replaceChildren(new Option("auto: 1:1, or the first reference image's", ""), ...caps.aspect_ratios.map((r) => new Option(r, r)));
  resolution.replaceChildren(...caps.resolutions.map((r) => new Option(r, r)));
  ratio.value = caps.aspect_ratios.includes(keepRatio) ? keepRatio : "";
  resolution.value = caps.resolutions.includes(keepResolution) ? keepResolution : caps.resolutions[0];
  $("#inputs-hint").textContent = `(up to ${caps.max_input_images}; PNG, JPEG or WebP, 7 MB each)`;
}

function addInput(input) {
  state.inputs.push(input);
  renderInputs();
}

function renderInputs() {
  const list = $("#inputs-list");
  list.replaceChildren(...state.inputs.map((input, index) => {
    const item = document.createElement("li");
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "quiet", textContent: "Remove" });
    remove.setAttribute("aria-label", `Remove ${input.label}`);
    remove.addEventListener("click", () => {
      state.inputs.splice(index, 1);
      renderInputs();
      say(`Removed ${input.label}.`);
    });
    item.append(Object.assign(document.createElement("img"), { src: input.url, alt: "" }), input.label, remove);
    return item;
  }));
}

// Files become data: URLs (the API takes them inline; the thumbnail shows the same URL).
async function attachFiles(files) {
  for (const file of files) {
    if (!["image/png", "image/jpeg", "image/webp"].includes(file.type)) throw new Error(`${file.name} is not a PNG, JPEG or WebP image.`);
    const url = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error(`${file.name} could not be read.`));
      reader.readAsDataURL(file);
    });
    addInput({ label: file.name, url, image: url });
  }
  if (files.length) say(`Attached ${files.length} reference image${files.length > 1 ? "s" : ""}.`);
}

async function generate() {
  const results = $("#results");
  results.replaceChildren();
  const body = {
    prompt: $("#prompt").value,
    model: $("#model").value || undefined,
    resolution: $("#resolution").value || undefined,
    aspect_ratio: $("#aspect-ratio").value || undefined,
    style: $("#style").value,
    n: Number($("#n").value || 1),
  };
  if (state.inputs.length) body.images = state.inputs.map((input) => input.image);
  const chain = state.chain;
  if (chain.length) {
    body.previous_generation_id = chain.at(-1).source.generation_id;
    body.previous_image_index = chain.at(-1).source.index;
  }
  say(chain.length ? "Continuing…" : state.inputs.length ? "Editing…" : "Generating…");
  const credential = $("#api-key").value.trim();
  const background = $("#run-async").checked;
  let generation = await api("/v1/generate", { method: "POST", body, credential, prefer: background ? "respond-async" : undefined });
  if (background) generation = await watch(generation, credential);
  if (generation.status === "failed") throw new Error(`${generation.id} failed: ${generation.error?.message || generation.error?.code}`);
  generation.images.forEach((image, index) => {
    results.append(figure(image, `${generation.id}_${index}`, `${generation.prompt} (image ${index + 1} of ${generation.images.length})`,
      { generation_id: generation.id, index }, chain));
  });
  state.inputs = [];
  renderInputs();
  state.chain = [];
  renderChain();
  say(`Generated ${generation.images.length} image${generation.images.length > 1 ? "s" : ""} (${generation.id}).`);
}

// An asynchronous generation, polled until it is final, its status shown as it changes.
async function watch(generation, credential) {
  const line = Object.assign(document.createElement("p"), { className: "status", id: "async-status" });
  $("#results").append(line);
  while (!["succeeded", "failed", "canceled"].includes(generation.status)) {
    line.textContent = `${generation.id}: ${generation.status}…`;
    say(`${generation.id} is ${generation.status}.`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    generation = await api(`/v1/generations/${generation.id}`, { credential });
  }
  line.textContent = `${generation.id}: ${generation.status}`;
  return generation;
}

// "Made from gen_…[0], an upload (3f2a…)": the step back in an edit chain.
function madeFrom(inputs) {
  if (!inputs.length) return null;
  const names = inputs.map((i) => (i.generation_id ? `${i.generation_id}[${i.index}]` : `an upload (${i.sha256.slice(0, 12)}…)`));
  return Object.assign(document.createElement("p"), { className: "hint made-from", textContent: `Made from ${names.join(", ")}` });
}

// ---------------------------------------------------------------- usage

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(key) {
  const width = 600, height = 180, left = 36, bottom = 24, top = 10;
  const peak = Math.max(key.daily_image_quota, ...key.days.map((d) => d.images), 1);
  const y = (value) => top + (height - top - bottom) * (1 - value / peak);
  const slot = (width - left) / key.days.length;
  const titleId = `chart-${key.api_key_id}`;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": titleId });
  root.append(svg("title", { id: titleId },
    `${key.name} (${key.prefix}…): ${key.total_images} images in 30 days, ${key.images_today} today of a daily quota of ${key.daily_image_quota}`));
  root.append(svg("line", { x1: left, x2: width, y1: y(0), y2: y(0), stroke: "#8a8a94" }));
  key.days.forEach((day, i) => {
    // A day with any images stays visible (2 px at least) even far below the quota line.
    const barHeight = day.images > 0 ? Math.max(y(0) - y(day.images), 2) : 0;
    const bar = svg("rect", { x: left + i * slot + 1, y: y(0) - barHeight, width: Math.max(slot - 2, 1), height: barHeight, fill: "#7a4b00" });
    bar.append(svg("title", {}, `${day.date}: ${day.images} images`));
    root.append(bar);
  });
  root.append(svg("line", { x1: left, x2: width, y1: y(key.daily_image_quota), y2: y(key.daily_image_quota), stroke: "#a4001a", "stroke-dasharray": "6 4" }));
  root.append(svg("text", { x: left - 4, y: y(key.daily_image_quota) + 4, "text-anchor": "end", "font-size": 11 }, `${key.daily_image_quota}`));
  root.append(svg("text", { x: left, y: height - 6, "font-size": 11 }, key.days[0].date));
  root.append(svg("text", { x: width, y: height - 6, "font-size": 11, "text-anchor": "end" }, key.days.at(-1).date));
  const box = document.createElement("div");
  box.className = "chart";
  box.append(Object.assign(document.createElement("h3"), { textContent: `${key.name} · ${key.prefix}… · ${key.mode}` }), root);
  box.append(Object.assign(document.createElement("p"), {
    className: "hint",
    textContent: `Today ${key.images_today} of ${key.daily_image_quota} (${key.remaining_today} left). Dashed line: daily quota.`,
  }));
  return box;
}

// Money is exact decimal strings; whole micro-dollars are exact numbers in JS too.
const micros = (usd) => {
  const [whole, fraction = ""] = usd.split(".");
  return Number(whole) * 1e6 + Number(fraction.padEnd(6, "0"));
};
const dollars = (value) => `$${(value / 1e6).toFixed(2)}`;
const MODEL_COLOURS = ["#7a4b00", "#1a5fd0", "#2e7d32", "#a4001a", "#6a1b9a"];

// Cost per UTC day over the report's range, one bar per day split by model (stacked), and
// today's live spend against the account's budget (dashed) when it has one.
function costChart(usage) {
  const width = 600, height = 200, left = 56, bottom = 24, top = 10;
  const days = usage.data[0]?.days.map((d) => d.date) ?? [];
  const models = [...new Set(usage.costs.map((c) => c.model))].sort();
  const cost = new Map(); // "date model" -> micro-dollars, all keys together
  for (const row of usage.costs) cost.set(`${row.date} ${row.model}`, (cost.get(`${row.date} ${row.model}`) || 0) + micros(row.cost_usd));
  const perDay = days.map((date) => models.reduce((sum, model) => sum + (cost.get(`${date} ${model}`) || 0), 0));
  const budget = usage.daily_budget_usd === null ? null : micros(usage.daily_budget_usd);
  const peak = Math.max(...perDay, budget ?? 0, 1);
  const scale = (height - top - bottom) / peak; // pixels per micro-dollar
  const base = height - bottom;
  const slot = (width - left) / Math.max(days.length, 1);
  const root = svg("svg", { id: "cost-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "cost-title", "data-scale": scale });
  const total = micros(usage.total.cost_usd);
  root.append(svg("title", { id: "cost-title" },
    `Cost per day: ${dollars(total)} in ${days.length} days, ${dollars(micros(usage.live_cost_today_usd))} live today` +
    (budget === null ? " (no daily budget)" : ` of a daily budget of ${dollars(budget)}`)));
  root.append(svg("line", { x1: left, x2: width, y1: base, y2: base, stroke: "#8a8a94" }));
  days.forEach((date, i) => {
    let y = base;
    models.forEach((model, m) => {
      const value = cost.get(`${date} ${model}`) || 0;
      if (!value) return;
      const h = value * scale;
      y -= h;
      const bar = svg("rect", { x: left + i * slot + 1, y, width: Math.max(slot - 2, 1), height: h, fill: MODEL_COLOURS[m % MODEL_COLOURS.length],
        "data-date": date, "data-model": model, "data-micros": value });
      bar.append(svg("title", {}, `${date} ${model}: $${(value / 1e6).toFixed(6)}`));
      root.append(bar);
    });
  });
  if (budget !== null) {
    root.append(svg("line", { x1: left, x2: width, y1: base - budget * scale, y2: base - budget * scale, stroke: "#a4001a", "stroke-dasharray": "6 4" }));
    root.append(svg("text", { x: left - 4, y: base - budget * scale + 4, "text-anchor": "end", "font-size": 11 }, dollars(budget)));
  }
  root.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", "font-size": 11 }, dollars(peak)));
  if (days.length) {
    root.append(svg("text", { x: left, y: height - 6, "font-size": 11 }, days[0]));
    root.append(svg("text", { x: width, y: height - 6, "font-size": 11, "text-anchor": "end" }, days.at(-1)));
  }
  const box = document.createElement("div");
  box.className = "chart";
  box.append(Object.assign(document.createElement("h3"), { textContent: "Cost per day, by model" }), root);
  const legend = document.createElement("p");
  legend.className = "hint";
  legend.textContent = (models.length ? "" : "Nothing spent yet. ") +
    `Today: ${dollars(micros(usage.live_cost_today_usd))} live` + (budget === null ? ", no daily budget." : ` of ${dollars(budget)} (dashed line).`) +
    " Test keys' images are priced as live ones would be, and never billed.";
  box.append(legend);
  models.forEach((model, m) => {
    const swatch = Object.assign(document.createElement("span"), { textContent: `■ ${model}` });
    swatch.style.color = MODEL_COLOURS[m % MODEL_COLOURS.length];
    swatch.style.marginRight = "1rem";
    box.append(swatch);
  });
  return box;
}

async function loadUsage() {
  const usage = await api("/v1/usage");
  const charts = $("#usage-charts");
  charts.replaceChildren(costChart(usage), ...usage.data.map(chart));
  if (!usage.data.length) charts.append("No keys yet.");
}

// ---------------------------------------------------------------- history

async function loadHistory(cursor) {
  const query = new URLSearchParams({ limit: "12" });
  if (cursor) query.set("starting_after", cursor);
  const page = await api(`/v1/generations?${query}`);
  const list = $("#history-list");
  list.replaceChildren();
  for (const item of page.data) {
    let fig;
    if (item.images.length) fig = figure(item.images[0], item.id, item.prompt, { generation_id: item.id, index: 0 });
    else {
      fig = document.createElement("figure");
      fig.append(Object.assign(document.createElement("figcaption"), { className: `status-${item.status}`, textContent: `${item.id}: ${item.status}${item.error ? ` (${item.error.code})` : ""}, ${item.prompt}` }));
    }
    const from = madeFrom(item.inputs || []);
    if (from) fig.append(from);
    list.append(fig);
  }
  if (!page.data.length) list.textContent = "No generations yet.";
  // Queued and running generations update live: the page is read again until they end.
  clearTimeout(state.historyTimer);
  if (page.data.some((item) => ["pending", "queued", "running"].includes(item.status)) && !$("#view-history").hidden) {
    state.historyTimer = setTimeout(() => loadHistory(cursor).catch(fail), 2000);
  }
  state.nextCursor = page.has_more ? page.last_id : null;
  $("#history-next").disabled = !state.nextCursor;
  $("#history-prev").disabled = state.cursors.length === 0;
}

// ---------------------------------------------------------------- admin

async function loadAdmin() {
  const query = new URLSearchParams({ limit: "50" });
  const prefix = $("#admin-prefix").value.trim();
  if (prefix) query.set("email_prefix", prefix);
  const [page, usage] = await Promise.all([api(`/v1/admin/accounts?${query}`), api("/v1/admin/usage?days=1")]);
  const today = usage.data[0] || { live_images: 0, test_images: 0 };
  $("#admin-budget").textContent =
    `Today: ${today.live_images} of ${usage.daily_live_budget} live images, ${today.test_images} test images. ` +
    `Default account ceiling: ${page.default_daily_image_quota} live images a day.`;
  const body = $("#admin-table tbody");
  body.replaceChildren();
  for (const account of page.data) {
    const row = document.createElement("tr");
    cell(row, account.email);
    cell(row, account.role);
    cell(row, String(account.live_images_today));
    cell(row, String(account.test_images_today));
    cell(row, `${account.active_keys} of ${account.keys}`);
    cell(row, account.suspended_at ? "suspended" : "active");
    const actions = cell(row, "");
    const suspend = !account.suspended_at;
    const button = Object.assign(document.createElement("button"), {
      type: "button", className: "secondary", textContent: suspend ? "Suspend" : "Lift suspension",
    });
    button.setAttribute("aria-label", `${suspend ? "Suspend" : "Lift the suspension of"} ${account.email}`);
    button.addEventListener("click", () => act(button, async () => {
      if (suspend && !confirm(`Suspend ${account.email}? Its token and every key stop working at once.`)) return;
      await api(`/v1/admin/accounts/${account.id}`, { method: "POST", body: { suspended: suspend } });
      await loadAdmin();
      say(`${account.email} is ${suspend ? "suspended" : "active again"}.`);
    }));
    actions.append(button);
    body.append(row);
  }
  if (!page.data.length) {
    const row = document.createElement("tr");
    cell(row, "No accounts match.").colSpan = 7;
    body.append(row);
  }
}

// ---------------------------------------------------------------- wiring

$("#account-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act($("#sign-in"), () => signIn("/v1/auth/login"));
});
$("#sign-up").addEventListener("click", () => act($("#sign-up"), () => signIn("/v1/auth/register")));
$("#sign-out").addEventListener("click", () => signOut());
for (const button of document.querySelectorAll("nav [data-view]")) button.addEventListener("click", () => show(button.dataset.view));
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(event.submitter, () => createKey(event.target));
});
$("#copy-key").addEventListener("click", () => act($("#copy-key"), copyKey));
$("#conversation-clear").addEventListener("click", () => {
  state.chain = [];
  renderChain();
  say("The next generation starts a new conversation.");
});
$("#rotate-secret").addEventListener("click", () => act($("#rotate-secret"), rotateSecret));
$("#generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act($("#generate"), generate);
});
$("#model").addEventListener("change", fillPickers);
$("#input-files").addEventListener("change", (event) => act(null, async () => {
  await attachFiles([...event.target.files]);
  event.target.value = "";
}));
const drop = $("#drop-zone");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  act(null, () => attachFiles([...event.dataTransfer.files]));
});
$("#history-next").addEventListener("click", () => act($("#history-next"), async () => {
  state.cursors.push(state.nextCursor);
  await loadHistory(state.nextCursor);
}));
$("#history-prev").addEventListener("click", () => act($("#history-prev"), async () => {
  state.cursors.pop();
  await loadHistory(state.cursors.at(-1) || null);
}));

$("#admin-search").addEventListener("submit", (event) => {
  event.preventDefault();
  act(event.submitter, loadAdmin);
});

// A stored token that no longer works (expired, revoked, suspended) signs out quietly.
(async () => {
  try {
    await loadRole();
  } catch {
    state.token = null;
    sessionStorage.removeItem(TOKEN);
  }
  show(state.token ? "keys" : "account");
})();
