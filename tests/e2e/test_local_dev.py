"""Local development holds up under real image sizes: twenty 9 MB images from the fake
Gemini leave workerd's open descriptors flat (wrangler dev used to keep a socket per 4 KB
of every upstream answer: docs/decisions/0005-wrangler-dev-fd-leak.md)."""

import os

import pytest

from harness import workerd_pids
from helpers import Api


def open_descriptors(root_pid: int) -> int:
    total = 0
    for pid in workerd_pids(root_pid):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


@pytest.fixture(scope="module")
def big(worker_factory):
    return Api(worker_factory("local-dev", vars={"GEMINI_DEADLINE_MS": "60000"}))


def test_twenty_9_mb_images_leave_the_descriptor_count_flat(big):
    api = big
    key = api.live_key()
    assert api.post("/v1/generate", {"prompt": "warm"}, token=key).status_code == 200
    before = open_descriptors(api.worker.proc.pid)
    assert before > 0, "workerd was found"
    for _ in range(5):
        r = api.post("/v1/generate", {"prompt": "large #bigpng:9000", "n": 4}, token=key, timeout=120)
        assert r.status_code == 200, r.text[:200]
        assert len(r.json()["images"]) == 4
    after = open_descriptors(api.worker.proc.pid)
    # A few come and go (D1, R2, the queue); thousands per image was the leak.
    assert after - before < 100, f"{before} open descriptors before, {after} after twenty 9 MB images"
