"""What each kind of request costs the Worker's host: CPU seconds of the workerd process
(read from /proc/<pid>/stat before and after a run of N requests, less what workerd burns
idle over the same time) and wall-clock p50/p99, under `wrangler dev` with the release
build and the fake Gemini. Prints figures, asserts nothing: `bash scripts/bench.sh`.

The asynchronous kind asks with `Prefer: wait=20`, so each request's CPU includes its
queue consumer's work and the polls. `health` (one D1 query, little else) is the floor
the others compare with: what workerd spends on any request before this Worker's code.

BENCH_COMPARE=DIR also starts DIR's build (another checkout, already built) and measures
both, kind by kind, in interleaved rounds: before/after figures from one run on the same
machine. BENCH_ONLY="name-or-prefix|..." measures only those kinds (names hold commas, so
"|" separates); BENCH_ROUNDS sets how many interleaved rounds (3); BENCH_RATE_LIMIT sets
RATE_LIMIT_PER_MINUTE (0: the limiter is off).

Then the largest edit (issue 12): 14 inputs of about 1.4 MB (20 MB together, the limit),
n=4 at 4K, with Gemini answering 12 MB PNGs, on a fresh Worker so its isolate starts
empty: the wasm linear memory after it (which never shrinks: the peak) and workerd's peak
resident memory.
"""

from __future__ import annotations

import gzip
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from conftest import JWT_SECRET, Api  # noqa: E402
from fake_gemini import GOOGLE_KEY, FakeGemini, noise_png, png_bytes  # noqa: E402
from harness import ROOT, WorkerInstance, workerd_pids  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
N = int(os.environ.get("BENCH_N", "60"))


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / TICKS


def measure(pids: list[int], idle_rate: float, work, count: int, offset: int) -> tuple[float, list[float]]:
    """CPU ms per request (idle subtracted) over `count` requests, and their wall times."""
    durations = []
    cpu_before, started = cpu_seconds(pids), time.monotonic()
    for i in range(offset, offset + count):
        t0 = time.monotonic()
        work(i)
        durations.append((time.monotonic() - t0) * 1000)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before - idle_rate * elapsed
    return max(cpu, 0) * 1000 / count, durations


VARS = {
    "BCRYPT_COST": "10", "RATE_LIMIT_PER_MINUTE": os.environ.get("BENCH_RATE_LIMIT", "1000000"),
    "DAILY_IMAGE_QUOTA": "1000000", "MAX_KEY_DAILY_IMAGE_QUOTA": "1000000", "ACCOUNT_DAILY_IMAGE_QUOTA": "1000000",
    "DEPLOYMENT_DAILY_LIVE_IMAGES": "100000000", "REGISTER_MAX_PER_IP": "1000000",
    "LOGIN_MAX_FAILURES": "1000", "LOGIN_MAX_FAILURES_PER_IP": "1000000",
}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


class Target:
    """One build under wrangler dev, warmed, with its keys and request kinds."""

    def __init__(self, label: str, root: Path, fake: FakeGemini):
        self.label, self.root = label, root
        self.worker = WorkerInstance(f"bench-{label}", vars={"GEMINI_API_BASE": fake.base_url, **VARS},
                                     secrets_={"JWT_SECRET": JWT_SECRET, "GOOGLE_API_KEY": GOOGLE_KEY}, root=root).start()
        api = self.api = Api(self.worker)
        self.pids = workerd_pids(self.worker.proc.pid)
        assert self.pids, "no workerd process found under wrangler dev"
        account = api.register(password="correct horse battery")
        token = account["access_token"]
        test_key = api.create_key(token, mode="test")["key"]
        live_key = self.live_key = api.create_key(token, mode="live")["key"]
        for _ in range(10):  # warm the isolate, the D1 files and the rate limiter objects
            api.get("/v1/generations?limit=1", token=test_key)
            api.post("/v1/generate", {"prompt": "warm"}, token=test_key)
            api.post("/v1/generate", {"prompt": "warm"}, token=live_key)
        source_id = self.source_id = api.post("/v1/generate", {"prompt": "source"}, token=live_key).json()["id"]
        idle_before, idle_start = cpu_seconds(self.pids), time.monotonic()
        time.sleep(3)
        self.idle_rate = (cpu_seconds(self.pids) - idle_before) / (time.monotonic() - idle_start)

        def ok(r, status=200):
            assert r.status_code == status, r.text[:300]

        self.kinds = {
            # No D1 and no auth: the floor of any request (runtime, routing, the log line).
            "models (no D1)": lambda i: ok(api.get("/v1/models")),
            # One D1 query and little else.
            "health": lambda i: ok(api.get("/health")),
            "API-key GET (history)": lambda i: ok(api.get("/v1/generations?limit=5", token=test_key)),
            "generate, test key": lambda i: ok(api.post("/v1/generate", {"prompt": f"bench {i}"}, token=test_key)),
            "generate, live key": lambda i: ok(api.post("/v1/generate", {"prompt": f"bench {i}"}, token=live_key)),
            # Gemini's answers are 1-2 MB of base64 per 1024x1024 image, not the fake's 8x8.
            "generate, live key, 1.5 MB answer": lambda i: ok(api.post(
                "/v1/generate", {"prompt": f"bench {i} #bigpng:1500"}, token=live_key)),
            "edit, two inputs": lambda i: ok(api.post("/v1/generate", {"prompt": f"bench edit {i}", "images": [
                {"b64_json": SMALL_A, "mime_type": "image/png"}, {"b64_json": SMALL_B, "mime_type": "image/png"}]},
                token=live_key)),
            "edit of a generation_id": lambda i: ok(api.post("/v1/generate", {
                "prompt": f"bench iterate {i}", "images": [{"generation_id": source_id}]}, token=live_key)),
            # Prefer: wait, so each request includes its queue consumer's work (and the polls).
            "async generation": lambda i: ok(api.post("/v1/generate", {"prompt": f"bench async {i}"},
                                                      token=test_key, headers={"Prefer": "wait=20"})),
            "register (bcrypt 10)": lambda i: ok(api.post(
                "/v1/auth/register", {"email": f"b-{uuid.uuid4().hex[:12]}@example.com", "password": "password123"}), 201),
            "login (bcrypt 10)": lambda i: ok(api.post(
                "/v1/auth/login", {"email": account["user"]["email"], "password": "correct horse battery"})),
        }

    def bundle(self) -> str:
        wasm = (self.root / "build" / "index_bg.wasm").read_bytes()
        return f"wasm {len(wasm):,} bytes raw, {len(gzip.compress(wasm, 9)):,} gzipped"


def main() -> None:
    fake = FakeGemini()
    roots = [("this", ROOT)]
    if os.environ.get("BENCH_COMPARE"):
        roots = [("before", Path(os.environ["BENCH_COMPARE"]).resolve()), ("after", ROOT)]
    targets: list[Target] = []
    try:
        for label, root in roots:
            targets.append(Target(label, root, fake))
        only = [k.strip() for k in os.environ.get("BENCH_ONLY", "").split("|") if k.strip()]
        # A kind named exactly is that kind alone; otherwise a prefix picks every kind it starts.
        names = [n for n in targets[0].kinds
                 if not only or any(n == k or (k not in targets[0].kinds and n.startswith(k)) for k in only)]
        per_round = max(N // ROUNDS, 1)
        cpu = {(t.label, n): [] for t in targets for n in names}
        wall = {(t.label, n): [] for t in targets for n in names}
        # Interleaved rounds: every kind, on every build, in turn, three times; the median
        # of the rounds is reported, so a noisy moment on the machine hits both builds.
        for r in range(ROUNDS):
            for name in names:
                for target in targets:
                    ms, durations = measure(target.pids, target.idle_rate, target.kinds[name], per_round, r * per_round)
                    cpu[(target.label, name)].append(ms)
                    wall[(target.label, name)].extend(durations)
        print(f"workerd CPU per request, idle subtracted; median of {ROUNDS} interleaved rounds of {per_round} "
              f"sequential requests each (N={N})")
        header = f"{'request':<24}" + "".join(f" {t.label + ' CPU ms':>16} {'p50':>7} {'p99':>7}" for t in targets)
        if len(targets) == 2:
            header += f" {'change':>8}"
        print(header)
        for name in names:
            line = f"{name:<24}"
            for target in targets:
                durations = sorted(wall[(target.label, name)])
                line += (f" {statistics.median(cpu[(target.label, name)]):>16.2f} {statistics.median(durations):>7.1f}"
                         f" {durations[min(len(durations) - 1, int(len(durations) * 0.99))]:>7.1f}")
            if len(targets) == 2:
                before = statistics.median(cpu[("before", name)])
                after = statistics.median(cpu[("after", name)])
                line += f" {(after - before) / before * 100 if before else 0:>+7.0f}%"
            print(line)
        for target in targets:
            print(f"bundle ({target.label}): {target.bundle()}")
        last = targets[-1]
        d1 = last.worker.request_log(last.api.post("/v1/generate", {"prompt": "iterate", "images": [
            {"generation_id": last.source_id}]}, token=last.live_key).headers["x-request-id"])["d1_queries"]
        text = last.worker.request_log(last.api.post("/v1/generate", {"prompt": "count"}, token=last.live_key)
                                       .headers["x-request-id"])["d1_queries"]
        print(f"D1 round trips: a text generation makes {text}; an edit reading one generation_id input makes {d1}")
    finally:
        for target in targets:
            target.worker.stop()
    try:
        if not os.environ.get("BENCH_ONLY"):
            largest_edit(fake)
    finally:
        fake.close()


SMALL_A = __import__("base64").b64encode(png_bytes(64, 64, (200, 30, 90))).decode()
SMALL_B = __import__("base64").b64encode(png_bytes(48, 64, (30, 90, 200))).decode()
MB = 1024 * 1024


def peak_rss(pids: list[int]) -> tuple[int, int]:
    """Resident and peak resident bytes of workerd (VmRSS, VmHWM)."""
    rss = hwm = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) * 1024
    return rss, hwm


def largest_edit(fake: FakeGemini) -> None:
    import base64
    worker = WorkerInstance("bench-memory", vars={
        "GEMINI_API_BASE": fake.base_url, "RATE_LIMIT_PER_MINUTE": "1000", "DAILY_IMAGE_QUOTA": "100",
    }, secrets_={"JWT_SECRET": JWT_SECRET, "GOOGLE_API_KEY": GOOGLE_KEY}).start()
    try:
        api = Api(worker)
        pids = workerd_pids(worker.proc.pid)
        key = api.live_key()
        first = api.post("/v1/generate", {"prompt": "warm"}, token=key)
        before = worker.request_log(first.headers["x-request-id"])["wasm_memory_bytes"]
        rss_before, _ = peak_rss(pids)
        inputs = [{"b64_json": base64.b64encode(noise_png(1_420_000)).decode(), "mime_type": "image/png"} for _ in range(14)]
        decoded = sum(len(base64.b64decode(i["b64_json"])) for i in inputs)
        started = time.monotonic()
        r = api.post("/v1/generate", {"prompt": "the largest edit #bigpng:12000", "images": inputs, "n": 4,
                                      "resolution": "4K"}, token=key)
        wall = time.monotonic() - started
        assert r.status_code == 200, r.text[:300]
        line = worker.request_log(r.headers["x-request-id"])
        rss_after, hwm = peak_rss(pids)
        print(f"largest edit: 14 inputs, {decoded / MB:.1f} MiB decoded; n=4 at 4K, four 12 MB answers; {wall:.1f} s")
        print(f"  wasm linear memory: {before / MB:.1f} MiB after a text-only request, "
              f"{line['wasm_memory_bytes'] / MB:.1f} MiB after the largest edit (the peak: it never shrinks)")
        print(f"  workerd resident: {rss_before / MB:.0f} MiB before, {rss_after / MB:.0f} MiB after, "
              f"peak {hwm / MB:.0f} MiB (the whole process: runtime, every isolate, both copies of the bodies)")
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
