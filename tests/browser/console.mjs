// Drives the web console in headless Chromium (Debian's, through playwright-core), using
// the keyboard for every action, and screenshots each page into the output directory.
// Usage: node tests/browser/console.mjs BASE_URL OUTPUT_DIR   (run by tests/e2e/test_console.py)
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, outDir, adminEmail, adminPassword] = process.argv.slice(2);
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"], // a fresh, empty profile is Playwright's default
});
const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
const page = await context.newPage();
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(String(error)));
page.on("dialog", (dialog) => dialog.accept()); // the revoke confirmation

const shot = (name) => page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });

// Presses Tab until `selector` has focus: proves it is reachable by keyboard.
async function tabTo(selector) {
  for (let i = 0; i < 60; i++) {
    if (await page.evaluate((s) => document.activeElement === document.querySelector(s), selector)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`${selector} cannot be reached with Tab`);
}

async function press(selector, key = "Enter") {
  await tabTo(selector);
  await page.keyboard.press(key);
}

async function typeInto(selector, text) {
  await tabTo(selector);
  await page.keyboard.type(text);
}

async function navigate(view) {
  await press(`nav [data-view="${view}"]`);
  await page.waitForSelector(`#view-${view}:not([hidden])`);
}

async function everyControlHasALabel() {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label"))
      .map((el) => el.id || el.name));
  assert.deepEqual(unlabelled, [], "every form control has a label");
}

// 1. Sign up.
await page.goto(base);
await everyControlHasALabel();
await shot("1-sign-in");
const email = `browser-${Date.now()}@example.com`;
await typeInto("#email", email);
await typeInto("#password", "correct horse battery");
await press("#sign-up");
await page.waitForSelector("#view-keys:not([hidden])");
assert.equal(await page.evaluate(() => sessionStorage.getItem("nb_console_token")?.split(".").length), 3, "JWT kept in sessionStorage");
assert.equal(await page.isHidden("#nav-admin"), true, "no Admin page for an ordinary account");
assert.ok(!page.url().includes("ey"), "no token in the URL");

// 2. Create a test key; see it once; copy it.
await typeInto("#key-name", "browser key");
await tabTo("#key-mode");
assert.equal(await page.inputValue("#key-mode"), "test");
await press("#key-form button[type=submit]");
await page.waitForSelector("#new-key:not([hidden])");
const key = await page.inputValue("#new-key-value");
assert.match(key, /^nb_test_[0-9a-f]{32}$/);
await press("#copy-key");
await page.waitForFunction(() => document.querySelector("#status").textContent.includes("copied"));
assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
await page.waitForSelector("#keys-table tbody tr td code");
assert.equal(await page.textContent("#keys-table tbody tr td code"), `${key.slice(0, 12)}…`);
// The webhook signing secret: none yet, then created and shown once.
await page.waitForFunction(() => document.querySelector("#webhook-state").textContent.includes("None yet"));
await press("#rotate-secret");
await page.waitForSelector("#new-secret:not([hidden])");
assert.match(await page.inputValue("#new-secret-value"), /^whsec_[A-Za-z0-9+/]{43}=$/);
await page.waitForFunction(() => /Current secret whsec_.{6}… \(version 1\)/.test(document.querySelector("#webhook-state").textContent));
await shot("2-keys");

// 3. Generate in the playground and see the image rendered.
await navigate("playground");
assert.equal(await page.inputValue("#api-key"), key, "the new key is offered in the playground");
await typeInto("#prompt", "a banana in a spacesuit");
await press("#generate");
await page.waitForFunction(() => {
  const img = document.querySelector("#results img");
  return img && img.complete && img.naturalWidth > 0;
}, null, { timeout: 30000 });
const naturalWidth = await page.evaluate(() => document.querySelector("#results img").naturalWidth);
assert.equal(naturalWidth, 1024);
assert.match(await page.textContent("#results figcaption"), /gen_[0-9a-f-]{36}_0/);
assert.match(await page.getAttribute("#results figcaption a", "download"), /\.png$/);
await shot("3-playground");

// 4. Usage chart and history.
await navigate("usage");
await page.waitForSelector("#usage-charts svg:not(#cost-chart)");
assert.match(await page.textContent("#usage-charts svg:not(#cost-chart) title"), /1 images in 30 days, 1 today of a daily quota of 100/);
// The cost chart: one bar per day and model, each as tall as GET /v1/usage says it cost.
const usage = await page.evaluate(async () => (await fetch("/v1/usage", {
  headers: { authorization: `Bearer ${sessionStorage.getItem("nb_console_token")}` },
})).json());
const toMicros = (usd) => Number(usd.replace(".", ""));
const expected = new Map();
for (const row of usage.costs) expected.set(`${row.date} ${row.model}`, (expected.get(`${row.date} ${row.model}`) || 0) + toMicros(row.cost_usd));
assert.ok(expected.size >= 1, "the generation above cost something");
const scale = Number(await page.getAttribute("#cost-chart", "data-scale"));
const bars = await page.$$eval("#cost-chart rect", (rects) => rects.map((r) => ({
  key: `${r.dataset.date} ${r.dataset.model}`, height: Number(r.getAttribute("height")),
})));
assert.equal(bars.length, expected.size);
for (const bar of bars) {
  assert.ok(expected.has(bar.key), `${bar.key} is in /v1/usage`);
  assert.ok(Math.abs(bar.height - expected.get(bar.key) * scale) < 0.01, `${bar.key}: ${bar.height} px`);
}
assert.ok(Math.max(...bars.map((b) => b.height)) > 100, "the tallest bar fills the chart");
assert.match(await page.textContent("#cost-chart title"), /Cost per day: \$\d+\.\d\d in 30 days/);
await shot("4-usage");
await navigate("history");
await page.waitForFunction(() => {
  const img = document.querySelector("#history-list img");
  return img && img.complete && img.naturalWidth > 0;
});
await shot("5-history");

// 4b. Edit: attach a PNG (keyboard: Enter on the file control opens the chooser), edit
// it, edit the result again with "Edit this", and see the chain in history. The ratio and
// resolution pickers follow the model (GET /v1/models).
await navigate("playground");
await page.waitForFunction(() => document.querySelector("#resolution").options.length > 0);
const options = (s) => page.$$eval(`${s} option`, (list) => list.map((o) => o.value));
assert.deepEqual(await options("#resolution"), ["512", "1K", "2K", "4K"]);
await tabTo("#model");
await page.keyboard.press("ArrowDown"); // gemini-3-pro-image: no 512, no extreme ratios
await page.waitForFunction(() => document.querySelector("#resolution").options.length === 3);
assert.ok(!(await options("#aspect-ratio")).includes("8:1"));
await page.keyboard.press("ArrowUp");
await page.waitForFunction(() => document.querySelector("#resolution").options.length === 4);
await tabTo("#input-files");
// Enter opens a file control's chooser (Space too: Chromium sometimes drops the first
// activation after a <select> changed, so Space is the keyboard fallback).
async function openChooser() {
  for (const key of ["Enter", "Space", "Enter"]) {
    const opened = page.waitForEvent("filechooser", { timeout: 3000 }).catch(() => null);
    await page.keyboard.press(key);
    const chooser = await opened;
    if (chooser) return chooser;
  }
  throw new Error("the file control does not open from the keyboard");
}
const chooser = await openChooser();
await chooser.setFiles(join(outDir, "1-sign-in.png"));
await page.waitForFunction(() => document.querySelectorAll("#inputs-list li").length === 1);
assert.match(await page.textContent("#inputs-list"), /1-sign-in\.png/);
await page.fill("#prompt", "");
await typeInto("#prompt", "make the sky blue");
await press("#generate");
await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("Generated"));
assert.equal(await page.evaluate(() => document.querySelectorAll("#inputs-list li").length), 0, "inputs are used once");
const firstEdit = (await page.textContent("#results figcaption")).match(/gen_[0-9a-f-]{36}/)[0];
await press("#results button.edit");
await page.waitForSelector("#view-playground:not([hidden])");
assert.match(await page.textContent("#inputs-list"), new RegExp(`${firstEdit}_0`));
await typeInto("#prompt", " and add a moon");
await press("#generate");
await page.waitForFunction((first) => {
  const caption = document.querySelector("#results figcaption");
  return caption && !caption.textContent.includes(first) && document.querySelector("#status").textContent.startsWith("Generated");
}, firstEdit);
await shot("5b-edited");
await navigate("history");
await page.waitForSelector("#history-list .made-from");
const madeFrom = await page.$$eval("#history-list figure", (figures) => figures.map((f) => f.querySelector(".made-from")?.textContent || ""));
assert.match(madeFrom[0], new RegExp(`Made from ${firstEdit}\\[0\\]`), "the second edit was made from the first");
assert.match(madeFrom[1], /Made from an upload \([0-9a-f]{12}…\)/, "the first edit from the uploaded file");
assert.equal(madeFrom[2], "", "the first generation was drawn from text");
await shot("5c-chain");

// 4c. Run one in the background: the queued generation is watched until it succeeds.
await navigate("playground");
await typeInto("#prompt", "a banana on a queue");
await tabTo("#run-async");
await page.keyboard.press("Space");
assert.equal(await page.isChecked("#run-async"), true);
await press("#generate");
await page.waitForFunction(() => document.querySelector("#async-status")?.textContent.endsWith(": succeeded"), null, { timeout: 30000 });
await page.waitForFunction(() => {
  const img = document.querySelector("#results img");
  return img && img.complete && img.naturalWidth > 0;
});
await shot("5d-async");
await tabTo("#run-async");
await page.keyboard.press("Space");

// 4d. Continue that result twice (a conversation): the strip shows the turns so far, and
// the API keeps the chain (previous_generation_id, conversation_id).
const generationOf = async () => (await page.textContent("#results figcaption")).match(/gen_[0-9a-f-]{36}/)[0];
const start = await generationOf();
const turns = [start];
for (const [prompt, expected] of [["now at night", 1], ["and in the rain", 2]]) {
  await press("#results button.continue");
  await page.waitForFunction((n) => !document.querySelector("#conversation").hidden
    && document.querySelectorAll("#conversation-strip li").length === n, expected);
  await typeInto("#prompt", prompt);
  if (expected === 2) await shot("5e-conversation"); // the strip of the turns so far
  await press("#generate");
  await page.waitForFunction((last) => {
    const caption = document.querySelector("#results figcaption");
    return caption && !caption.textContent.includes(last) && document.querySelector("#status").textContent.startsWith("Generated");
  }, turns.at(-1));
  turns.push(await generationOf());
}
assert.equal(await page.isHidden("#conversation"), true, "a generation ends the continuing");
const conversation = await page.evaluate(async ([first, key]) => (await fetch(`/v1/generations?conversation_id=${first}`, {
  headers: { authorization: `Bearer ${key}` },
})).json(), [start, key]);
assert.deepEqual(conversation.data.map((g) => g.id), [...turns].reverse(), "the conversation, newest first");
assert.deepEqual(conversation.data.map((g) => g.previous_generation_id), [turns[1], turns[0], null]);

// 5. Revoke the key (confirming), then the playground refuses it in plain words.
await navigate("keys");
await page.waitForSelector("#keys-table tbody button");
await press("#keys-table tbody button");
await page.waitForFunction(() => document.querySelector("#keys-table tbody").textContent.includes("revoked"));
await shot("6-revoked");
await navigate("playground");
await press("#generate");
await page.waitForSelector("#error:not([hidden])");
assert.match(await page.textContent("#error"), /revoked/);
await shot("7-refused");

// 6. Sign out.
await press("#sign-out");
await page.waitForSelector("#view-account:not([hidden])");
assert.equal(await page.evaluate(() => sessionStorage.getItem("nb_console_token")), null);

// 7. An admin signs in, finds that account, suspends it and lifts the suspension.
await typeInto("#email", adminEmail);
await typeInto("#password", adminPassword);
await press("#sign-in");
await page.waitForSelector("#view-keys:not([hidden])");
await page.waitForSelector("#nav-admin:not([hidden])");
await navigate("admin");
await typeInto("#admin-prefix", email.split("@")[0]);
await press("#admin-search button[type=submit]");
// The search narrows the table to that one account.
await page.waitForFunction((e) => {
  const rows = document.querySelectorAll("#admin-table tbody tr");
  return rows.length === 1 && rows[0].textContent.includes(e);
}, email);
assert.match(await page.textContent("#admin-table tbody tr"), /active/);
assert.match(await page.textContent("#admin-budget"), /live images/);
await shot("8-admin");
await press("#admin-table tbody button");
await page.waitForFunction(() => document.querySelector("#admin-table tbody").textContent.includes("suspended"));
await shot("9-suspended");
await press("#admin-table tbody button");
await page.waitForFunction(() => document.querySelector("#status").textContent.includes("active again"));
await everyControlHasALabel();
await press("#sign-out");
await page.waitForSelector("#view-account:not([hidden])");

assert.deepEqual(pageErrors, [], "no script errors");
await browser.close();
console.log(JSON.stringify({ ok: true, email, screenshots: outDir }));
