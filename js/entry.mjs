// The Worker's entry (wrangler.toml `main`): the Rust Worker built by worker-build,
// behind the guard that keeps even a panic inside the error envelope.
import RustWorker from "../build/index.js";
import { guarded } from "./guard.mjs";

export default guarded(RustWorker);
// The Durable Object class behind the RATE_LIMITER binding (src/rate_limit.rs).
export { RateLimiter } from "../build/index.js";
