"""The cron gives back the quota of generations whose Worker died mid-request, judged from
when each was reserved, by the cron's own clock (run ahead, never by back-dating rows)."""

import uuid

import pytest

from helpers import Api, now_ms, run_cron, tag, usage_today


@pytest.fixture(scope="module")
def reconcile_api(worker_factory):
    return Api(worker_factory("reconcile"))


def abandon(api, key: dict, user_id: str, n: int, reserved_ms: int) -> str:
    """What a Worker that died after reserving leaves behind: a pending row and its
    reservation, on the UTC day of `reserved_ms`."""
    gen_id = f"gen_{uuid.uuid4()}"
    row = api.worker.sql("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000.0, 'unixepoch') AS at", (reserved_ms,))[0]
    at = row["at"]
    api.worker.sql(
        "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at, "
        "reserved_at) VALUES (?, ?, ?, 'died', 'm', '1024x1024', 'natural', ?, 'pending', ?, ?); "
        "INSERT INTO usage (api_key_id, usage_date, image_count) VALUES (?, ?, ?) "
        "ON CONFLICT (api_key_id, usage_date) DO UPDATE SET image_count = image_count + excluded.image_count",
        (gen_id, key["id"], user_id, n, at, at, key["id"], at[:10], n))
    return gen_id


def test_abandoned_reservations_are_released_and_recent_ones_kept(reconcile_api):
    api = reconcile_api
    token = api.token()
    key = api.create_key(token, mode="test")
    user_id = api.get("/v1/auth/me", token=token).json()["id"]
    assert api.post("/v1/generate", {"prompt": f"delivered {tag()}"}, token=key["key"]).status_code == 200
    now = now_ms()
    old = abandon(api, key, user_id, 2, now - 20 * 60_000)
    recent = abandon(api, key, user_id, 1, now - 60_000)
    assert usage_today(api, key["key"]) == 4

    run_cron(api)

    rows = {row["id"]: row for row in api.worker.sql(
        "SELECT id, status, error_code FROM generations WHERE id IN (?, ?)", (old, recent))}
    assert rows[old]["status"] == "failed" and rows[old]["error_code"] == "abandoned"
    assert rows[recent]["status"] == "pending", "a generation still within its deadline is left alone"
    assert usage_today(api, key["key"]) == 2, "the delivered image and the recent reservation stay counted"
    # Running it again changes nothing: the release rides on the status change, once.
    run_cron(api)
    assert usage_today(api, key["key"]) == 2


def test_a_slow_request_is_judged_from_its_reservation_not_its_start(reconcile_api):
    """A request whose body took long to arrive was created long before it was reserved:
    the cron must not give it up (and release its charge) while its Worker still draws."""
    api = reconcile_api
    token = api.token()
    key = api.create_key(token, mode="test")
    user_id = api.get("/v1/auth/me", token=token).json()["id"]
    now = now_ms()
    slow = abandon(api, key, user_id, 1, now - 60_000)
    api.worker.sql("UPDATE generations SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000.0, 'unixepoch') "
                   "WHERE id = ?", (now - 30 * 60_000, slow))
    run_cron(api)
    assert api.worker.sql("SELECT status FROM generations WHERE id = ?", (slow,))[0]["status"] == "pending"
    assert usage_today(api, key["key"]) == 1
