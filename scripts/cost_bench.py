"""What each kind of request costs the Worker's host: CPU seconds of the workerd process
(read from /proc/<pid>/stat before and after a run of N requests, less what workerd burns
idle over the same time) and wall-clock p50/p99, under `wrangler dev` with the release
build and the fake Gemini. Prints figures, asserts nothing: `bash scripts/bench.sh`.

Kinds that the Worker does not serve yet (asynchronous generations) are listed as such,
so the table keeps its rows from one run to the next.

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
from harness import ROOT, WorkerInstance  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
N = int(os.environ.get("BENCH_N", "60"))


def descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children + [d for child in children for d in descendants(child)]


def workerd_pids(root_pid: int) -> list[int]:
    return [p for p in descendants(root_pid) if "workerd" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / TICKS


def measure(pids: list[int], idle_rate: float, work) -> tuple[float, float, float]:
    """CPU ms per request (idle subtracted), wall p50 and p99 ms, over N requests."""
    durations = []
    cpu_before, started = cpu_seconds(pids), time.monotonic()
    for i in range(N):
        t0 = time.monotonic()
        work(i)
        durations.append((time.monotonic() - t0) * 1000)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before - idle_rate * elapsed
    durations.sort()
    return max(cpu, 0) * 1000 / N, statistics.median(durations), durations[min(N - 1, int(N * 0.99))]


def main() -> None:
    fake = FakeGemini()
    worker = WorkerInstance("bench", vars={
        "GEMINI_API_BASE": fake.base_url, "BCRYPT_COST": "10", "RATE_LIMIT_PER_MINUTE": "1000000",
        "DAILY_IMAGE_QUOTA": "1000000", "MAX_KEY_DAILY_IMAGE_QUOTA": "1000000", "ACCOUNT_DAILY_IMAGE_QUOTA": "1000000",
        "DEPLOYMENT_DAILY_LIVE_IMAGES": "100000000", "REGISTER_MAX_PER_IP": "1000000",
        "LOGIN_MAX_FAILURES": "1000", "LOGIN_MAX_FAILURES_PER_IP": "1000000",
    }, secrets_={"JWT_SECRET": JWT_SECRET, "GOOGLE_API_KEY": GOOGLE_KEY}).start()
    try:
        api = Api(worker)
        pids = workerd_pids(worker.proc.pid)
        assert pids, "no workerd process found under wrangler dev"
        account = api.register(password="correct horse battery")
        token = account["access_token"]
        test_key = api.create_key(token, mode="test")["key"]
        live_key = api.create_key(token, mode="live")["key"]
        for _ in range(10):  # warm the isolate, the D1 files and the rate limiter objects
            api.get("/v1/generations?limit=1", token=test_key)
            api.post("/v1/generate", {"prompt": "warm"}, token=test_key)
            api.post("/v1/generate", {"prompt": "warm"}, token=live_key)

        source_id = api.post("/v1/generate", {"prompt": "source"}, token=live_key).json()["id"]

        idle_before, idle_start = cpu_seconds(pids), time.monotonic()
        time.sleep(3)
        idle_rate = (cpu_seconds(pids) - idle_before) / (time.monotonic() - idle_start)

        def ok(r, status=200):
            assert r.status_code == status, r.text[:300]

        kinds = [
            ("health", lambda i: ok(api.get("/health"))),
            ("API-key GET (history)", lambda i: ok(api.get("/v1/generations?limit=5", token=test_key))),
            ("generate, test key", lambda i: ok(api.post("/v1/generate", {"prompt": f"bench {i}"}, token=test_key))),
            ("generate, live key", lambda i: ok(api.post("/v1/generate", {"prompt": f"bench {i}"}, token=live_key))),
            ("edit, two inputs", lambda i: ok(api.post("/v1/generate", {"prompt": f"bench edit {i}", "images": [
                {"b64_json": SMALL_A, "mime_type": "image/png"}, {"b64_json": SMALL_B, "mime_type": "image/png"}]},
                token=live_key))),
            ("edit of a generation_id", lambda i: ok(api.post("/v1/generate", {
                "prompt": f"bench iterate {i}", "images": [{"generation_id": source_id}]}, token=live_key))),
            ("async generation", None),
            ("register (bcrypt 10)", lambda i: ok(api.post(
                "/v1/auth/register", {"email": f"b-{uuid.uuid4().hex[:12]}@example.com", "password": "password123"}), 201)),
            ("login (bcrypt 10)", lambda i: ok(api.post(
                "/v1/auth/login", {"email": account["user"]["email"], "password": "correct horse battery"}))),
        ]
        print(f"workerd CPU per request (idle {idle_rate * 1000:.1f} ms/s subtracted), N={N} sequential requests each")
        print(f"{'request':<24} {'CPU ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, work in kinds:
            if work is None:
                print(f"{name:<24} {'not served yet':>26}")
                continue
            cpu, p50, p99 = measure(pids, idle_rate, work)
            print(f"{name:<24} {cpu:>8.2f} {p50:>8.1f} {p99:>8.1f}")
        wasm = (ROOT / "build" / "index_bg.wasm").read_bytes()
        js = (ROOT / "build" / "index.js").read_bytes()
        print(f"bundle: wasm {len(wasm):,} bytes raw, {len(gzip.compress(wasm, 9)):,} gzipped; "
              f"js {len(js):,} raw, {len(gzip.compress(js, 9)):,} gzipped")
        d1 = worker.request_log(api.post("/v1/generate", {"prompt": "iterate", "images": [
            {"generation_id": source_id}]}, token=live_key).headers["x-request-id"])["d1_queries"]
        print(f"D1 round trips: an edit reading one generation_id input makes {d1}")
    finally:
        worker.stop()
    try:
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
