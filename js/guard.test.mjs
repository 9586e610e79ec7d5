// node --test js/: the guard turns anything thrown into the 500 envelope.
import { test } from "node:test";
import assert from "node:assert/strict";
import { guarded } from "./guard.mjs";

class Panics {
  async fetch() {
    throw new WebAssembly.RuntimeError("unreachable");
  }
}

class Answers {
  constructor(ctx, env) {
    this.env = env;
  }
  async fetch() {
    return new Response("ok", { status: 201, headers: { "x-env": this.env.NAME } });
  }
}

test("a panic becomes a 500 envelope with a fresh request id", async () => {
  const res = await guarded(Panics).fetch(new Request("http://x/v1/keys"), {}, {});
  assert.equal(res.status, 500);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = await res.json();
  assert.equal(body.error.type, "api_error");
  assert.equal(body.error.code, "internal_error");
  assert.match(body.error.request_id, /^req_[0-9a-f]{24}$/);
  assert.equal(res.headers.get("x-request-id"), body.error.request_id);
});

test("a sane caller request id is echoed; an insane one is replaced", async () => {
  const kept = await guarded(Panics).fetch(new Request("http://x/", { headers: { "x-request-id": "trace-42" } }), {}, {});
  assert.equal(kept.headers.get("x-request-id"), "trace-42");
  const replaced = await guarded(Panics).fetch(new Request("http://x/", { headers: { "x-request-id": "<bad id>" } }), {}, {});
  assert.match(replaced.headers.get("x-request-id"), /^req_[0-9a-f]{24}$/);
});

test("normal responses pass through untouched, with env and ctx handed over", async () => {
  const res = await guarded(Answers).fetch(new Request("http://x/"), { NAME: "nb" }, {});
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("x-env"), "nb");
  assert.equal(await res.text(), "ok");
});

class NeverSettles {
  fetch() {
    // What a panicking Rust future looks like from JS: a promise that never settles.
    setTimeout(() => globalThis.__nanobanana_on_panic(), 5);
    return new Promise(() => {});
  }
}

test("a panic reported by the Rust hook fails the hung request with the envelope", async () => {
  const res = await guarded(NeverSettles).fetch(new Request("http://x/v1/generate"), {}, {});
  assert.equal(res.status, 500);
  assert.equal((await res.json()).error.code, "internal_error");
});
