"""What the end-to-end tests share: the HTTP client that reads like a user story, the
error-envelope assertion, and small helpers. Test files import from here (and from the
infrastructure modules harness.py and fake_gemini.py), never from each other."""

from __future__ import annotations

import base64
from decimal import ROUND_HALF_UP, Decimal
import hashlib
import hmac
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from harness import ROOT, WorkerInstance, new_secret

JWT_SECRET = new_secret()
# Short, so that deadline and retry tests run in seconds; bcrypt at its cheapest.
# The suite registers many accounts from 127.0.0.1: registration throttling is tested on an
# instance of its own.
# Every statement's text is logged (LOG_SQL) for the query-plan check. The suite's spend
# ceilings are high: each limit is tested on an instance of its own.
TEST_VARS = {"BCRYPT_COST": "4", "GEMINI_DEADLINE_MS": "8000", "REGISTER_MAX_PER_IP": "1000000",
             "LOGIN_MAX_FAILURES_PER_IP": "1000000", "ACCOUNT_DAILY_IMAGE_QUOTA": "100000",
             "DEPLOYMENT_DAILY_LIVE_IMAGES": "1000000", "LOG_SQL": "true",
             "WEBHOOK_ALLOW_HTTP_LOCALHOST": "true", "WEBHOOK_RETRY_DELAYS_SECONDS": "1,1,1,1"}


class Api:
    """A thin HTTP client bound to one Worker, with the steps most tests start from."""

    def __init__(self, worker: WorkerInstance):
        self.worker = worker
        self.base = worker.base_url
        self.http = requests.Session()

    def request(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, self.base + path, headers=headers, **kwargs)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token, **kw)

    def post(self, path, json=None, token=None, **kw):
        return self.request("POST", path, token, json=json, **kw)

    def delete(self, path, token=None, **kw):
        return self.request("DELETE", path, token, **kw)

    # --- user-story steps ---

    def register(self, email: str | None = None, password: str = "correct horse battery") -> dict:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        r = self.post("/v1/auth/register", {"email": email, "password": password})
        assert r.status_code == 201, r.text
        body = r.json()
        body["password"] = password
        return body

    def token(self) -> str:
        return self.register()["access_token"]

    def create_key(self, token: str, **fields) -> dict:
        r = self.post("/v1/keys", fields, token=token)
        assert r.status_code == 201, r.text
        return r.json()

    def test_key(self, **fields) -> str:
        return self.create_key(self.token(), mode="test", **fields)["key"]

    def live_key(self, **fields) -> str:
        return self.create_key(self.token(), mode="live", **fields)["key"]


def assert_error(response: requests.Response, status: int, code: str, type_: str | None = None,
                 param: str | None = None) -> dict:
    """Asserts the error envelope (README, "Errors") and returns its `error` object."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}, error
    assert error["code"] == code, error
    assert error["message"], error
    assert error["request_id"] == response.headers["x-request-id"]
    if type_ is not None:
        assert error["type"] == type_, error
    if param is not None:
        assert error["param"] == param, error
    return error


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def usage_today(api: Api, key: str) -> int:
    """The images charged to the key, as stored. Every day's: each test makes its own key,
    so this is the day's count whatever the clock says (a test that runs across midnight
    UTC reads the same figure), and a charge given back on the wrong day shows too."""
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    rows = api.worker.sql(
        "SELECT COALESCE(SUM(u.image_count), 0) AS n FROM usage u JOIN api_keys k ON k.id = u.api_key_id "
        "WHERE k.key_hash = ?", (key_hash,))
    return rows[0]["n"]


def generations_of(api: Api, key: str) -> list[dict]:
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    return api.worker.sql(
        "SELECT g.* FROM generations g JOIN api_keys k ON k.id = g.api_key_id "
        "WHERE k.key_hash = ? ORDER BY g.created_at", (key_hash,))


def sign(image_id: str, expires: int) -> str:
    url_key = hmac.new(JWT_SECRET.encode(), b"nanobanana/image-url/v1", hashlib.sha256).digest()
    return hmac.new(url_key, f"{image_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def unsigned(value):
    """A response body with every signed image URL cut at its query: a replay signs its URLs afresh,
    so two answers for one generation differ in `expires` whenever a second ticks between them."""
    if isinstance(value, dict):
        return {k: unsigned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsigned(v) for v in value]
    if isinstance(value, str) and "/v1/images/" in value and "?expires=" in value:
        return value.split("?", 1)[0]
    return value


def fetch(api: Api, url: str, **kwargs):
    return api.http.get(url, timeout=30, **kwargs)


def png_at(api: Api, url: str) -> bytes:
    """The bytes of a served PNG; fails unless the download itself succeeded."""
    r = fetch(api, url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", f"{r.status_code} {r.text[:200]}"
    assert r.content.startswith(PNG_MAGIC)
    return r.content


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def promote(worker, email: str) -> None:
    """Makes an account an admin the documented way: scripts/admin.sh, over wrangler d1."""
    out = subprocess.run(
        ["bash", "scripts/admin.sh", "promote", email, "--",
         "-c", str(worker.config_path), "--persist-to", str(worker.state)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert f"{email} is now: admin" in out.stdout


def run_cron(api: Api) -> None:
    """Runs the scheduled work now."""
    r = api.get("/__scheduled?cron=*/10+*+*+*+*")
    assert r.status_code == 200, r.text


def now_ms() -> int:
    return int(time.time() * 1000)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every delivery and can fail the first
    few attempts."""

    def __init__(self, fail_first: int = 0, status: int = 500):
        self.deliveries: list[dict] = []
        self.fail_first, self.status = fail_first, status
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.deliveries.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                                "body": body.decode()})
                    failing = len(receiver.deliveries) <= receiver.fail_first
                self.send_response(receiver.status if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/nanobanana"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.deliveries) < count:
            time.sleep(0.1)
        assert len(self.deliveries) >= count, f"{len(self.deliveries)} deliveries, expected {count}"
        return self.deliveries

    def close(self):
        self.server.shutdown()


def poll(api: Api, key: str, generation_id: str, until=("succeeded", "failed", "canceled"), timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        record = api.get(f"/v1/generations/{generation_id}", token=key).json()
        if record["status"] in until:
            return record
        time.sleep(0.2)
    raise AssertionError(f"{generation_id} still {record['status']}")


def webhook_secret(api: Api, token: str) -> str:
    r = api.post("/v1/webhook_secret", token=token)
    assert r.status_code in (200, 201), r.text
    return r.json()["secret"]


def queue_lines(worker: WorkerInstance, generation_id: str) -> list[dict]:
    """The consumer's log lines (one per message) about a generation."""
    return [e for e in worker.log_entries(generation_id)
            if e.get("event") == "queue_message" and e.get("generation_id") == generation_id]


def wait_for_queue_lines(worker: WorkerInstance, generation_id: str, count: int, timeout: float = 60) -> list[dict]:
    """Blocks until the consumer has logged `count` messages about a generation."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = queue_lines(worker, generation_id)
        if len(lines) >= count:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{len(queue_lines(worker, generation_id))} queue line(s) for {generation_id}, expected {count}")


# --- metering: what Gemini reported, priced independently of the Worker ---

# Google's published prices (USD per million tokens), as the Worker's defaults.
PRICES = {
    "gemini-3.1-flash-image": {"input_text": "0.50", "input_image": "0.50", "output_image": "60", "output_text": "3"},
    "gemini-3-pro-image": {"input_text": "2", "input_image": "2", "output_image": "120", "output_text": "12"},
}
PRO = "gemini-3-pro-image"
FLASH = "gemini-3.1-flash-image"


def tokens_of(usage_metadata: list[dict]) -> dict:
    """The token kinds of some answers' usageMetadata, summed."""
    total = {"input_text": 0, "input_image": 0, "output_image": 0, "output_text": 0, "reasoning": 0}
    for u in usage_metadata:
        image_in = sum(d["tokenCount"] for d in u.get("promptTokensDetails", []) if d["modality"] == "IMAGE")
        image_out = sum(d["tokenCount"] for d in u.get("candidatesTokensDetails", []) if d["modality"] == "IMAGE")
        total["input_text"] += u["promptTokenCount"] - image_in
        total["input_image"] += image_in
        total["output_image"] += image_out
        total["output_text"] += u["candidatesTokenCount"] - image_out
        total["reasoning"] += u.get("thoughtsTokenCount", 0)
    return total


def cost_of(tokens: dict, model: str) -> str:
    p = {k: Decimal(v) for k, v in PRICES[model].items()}
    dollars = (tokens["input_text"] * p["input_text"] + tokens["input_image"] * p["input_image"]
               + tokens["output_image"] * p["output_image"]
               + (tokens["output_text"] + tokens["reasoning"]) * p["output_text"]) / Decimal(1_000_000)
    return str(dollars.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def expected_usage(tokens: dict, model: str, estimated: bool = False, test: bool = False) -> dict:
    input_tokens = tokens["input_text"] + tokens["input_image"]
    output_tokens = tokens["output_image"] + tokens["output_text"] + tokens["reasoning"]
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"text_tokens": tokens["input_text"], "image_tokens": tokens["input_image"]},
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": tokens["output_image"], "text_tokens": tokens["output_text"],
                                  "reasoning_tokens": tokens["reasoning"]},
        "total_tokens": input_tokens + output_tokens,
        "cost_usd": cost_of(tokens, model),
        "estimated": estimated,
        "test": test,
    }


