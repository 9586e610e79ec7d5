// The Worker's entry (wrangler.toml `main`): the Rust Worker built by worker-build,
// behind the guard that keeps even a panic inside the error envelope.
import RustWorker from "../build/index.js";
import { guarded } from "./guard.mjs";

export default guarded(RustWorker);

// The retired rate-limiter Durable Object (the limit is in D1 now: src/rate_limit.rs).
// Nothing binds it; it stays exported only for wrangler.toml's v1 migration (see there).
export class RateLimiter {
  fetch() {
    return new Response("gone", { status: 410 });
  }
}
