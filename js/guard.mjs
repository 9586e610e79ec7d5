// The last line of defence: whatever the Rust Worker throws (a JS exception, or a Rust
// panic, which traps the wasm), the client still gets the JSON error envelope and an
// x-request-id, never the runtime's bare 500. The Rust side already answers every error
// it knows about; this only catches what escapes it.

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function newRequestId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "req_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function internalErrorResponse(request) {
  const sent = request.headers.get("x-request-id");
  const requestId = sent && SANE_REQUEST_ID.test(sent) ? sent : newRequestId();
  const body = {
    error: {
      type: "api_error",
      code: "internal_error",
      message: "an internal error occurred",
      param: null,
      request_id: requestId,
    },
  };
  return new Response(JSON.stringify(body), {
    status: 500,
    headers: { "content-type": "application/json", "x-request-id": requestId },
  });
}

// A Rust panic traps the wasm instance inside a microtask: the request's promise never
// settles. The Rust panic hook (src/panic_hook.rs) calls this, and every request in flight
// on the dead instance is failed at once; the next request gets a fresh instance.
const inFlight = new Set();
globalThis.__nanobanana_on_panic = () => {
  for (const fail of inFlight) fail(new Error("the Worker panicked"));
  inFlight.clear();
};

// Wraps an entrypoint class (constructed as `new Worker(ctx, env)`) in a module worker
// whose fetch always answers.
export function guarded(WorkerClass) {
  return {
    async fetch(request, env, ctx) {
      let fail;
      const panicked = new Promise((_, reject) => {
        fail = reject;
      });
      inFlight.add(fail);
      try {
        return await Promise.race([new WorkerClass(ctx, env).fetch(request), panicked]);
      } catch (err) {
        console.error(JSON.stringify({ level: "error", event: "unhandled exception", detail: String(err && err.message) }));
        return internalErrorResponse(request);
      } finally {
        inFlight.delete(fail);
      }
    },
    // Cron triggers have no client to answer; errors are logged by the Rust side.
    async scheduled(event, env, ctx) {
      await new WorkerClass(ctx, env).scheduled(event);
    },
    // Queue batches: the Rust side acks or retries each message; a throw retries the batch.
    async queue(batch, env, ctx) {
      await new WorkerClass(ctx, env).queue(batch);
    },
  };
}
