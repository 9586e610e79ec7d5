"""Fixtures: a fake Gemini, Worker instances under wrangler dev, and a client that reads
like a user story (register, make a key, generate)."""

from __future__ import annotations

import uuid

import pytest
import requests

from fake_gemini import GOOGLE_KEY, FakeGemini
from harness import WorkerInstance, build_once, new_secret

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


@pytest.fixture(scope="session")
def fake_gemini():
    fake = FakeGemini()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def worker_factory(fake_gemini):
    build_once()
    started: list[WorkerInstance] = []

    def start(name: str, vars: dict | None = None, secrets: dict | None = None, **kwargs) -> WorkerInstance:
        base_secrets = {"JWT_SECRET": JWT_SECRET, "GOOGLE_API_KEY": GOOGLE_KEY}
        instance = WorkerInstance(
            name,
            vars={**TEST_VARS, "GEMINI_API_BASE": fake_gemini.base_url, **(vars or {})},
            secrets_={k: v for k, v in {**base_secrets, **(secrets or {})}.items() if v is not None},
            **kwargs,
        )
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def worker(worker_factory) -> WorkerInstance:
    """The default Worker: D1, R2, a Google key pointing at the fake."""
    return worker_factory("main")


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


@pytest.fixture(scope="session")
def api(worker) -> Api:
    return Api(worker)


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
