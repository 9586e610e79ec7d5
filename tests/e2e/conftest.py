"""Fixtures: a fake Gemini, Worker instances under wrangler dev, and a client that reads
like a user story (register, make a key, generate)."""

from __future__ import annotations

import pytest

from fake_gemini import GOOGLE_KEY, FakeGemini
from harness import WorkerInstance, build_once
from helpers import JWT_SECRET, TEST_VARS, Api


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

    start.started = started
    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="module", autouse=True)
def stop_module_workers(request):
    """Stops, when a test module ends, every Worker started for it (all but the shared
    `main`), so that at most a few `wrangler dev` instances run at any time."""
    factory = request.getfixturevalue("worker_factory")
    before = len(factory.started)
    yield
    for instance in factory.started[before:]:
        if instance.name != "main":
            instance.stop()


@pytest.fixture(scope="session")
def worker(worker_factory) -> WorkerInstance:
    """The default Worker: D1, R2, a Google key pointing at the fake."""
    return worker_factory("main")


@pytest.fixture(scope="session")
def api(worker) -> Api:
    return Api(worker)


