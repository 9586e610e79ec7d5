"""The cron gives back the quota of generations whose Worker died mid-request."""

import uuid
from datetime import datetime, timedelta, timezone

from test_generate import tag, usage_today


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def abandon(api, key: dict, user_id: str, n: int, age: timedelta) -> str:
    """What a Worker that died after reserving leaves behind: a pending row and its reservation."""
    started = datetime.now(timezone.utc) - age
    gen_id = f"gen_{uuid.uuid4()}"
    api.worker.sql(
        "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at) "
        "VALUES (?, ?, ?, 'died', 'm', '1024x1024', 'natural', ?, 'pending', ?); "
        "INSERT INTO usage (api_key_id, usage_date, image_count) VALUES (?, ?, ?) "
        "ON CONFLICT (api_key_id, usage_date) DO UPDATE SET image_count = image_count + excluded.image_count",
        (gen_id, key["id"], user_id, n, iso(started), key["id"], f"{started:%Y-%m-%d}", n))
    return gen_id


def test_abandoned_reservations_are_released_and_recent_ones_kept(api):
    token = api.token()
    key = api.create_key(token, mode="test")
    user_id = api.get("/v1/auth/me", token=token).json()["id"]
    assert api.post("/v1/generate", {"prompt": f"delivered {tag()}"}, token=key["key"]).status_code == 200
    old = abandon(api, key, user_id, 2, timedelta(minutes=20))
    recent = abandon(api, key, user_id, 1, timedelta(minutes=1))
    assert usage_today(api, key["key"]) == 4

    r = api.get("/__scheduled?cron=*/10+*+*+*+*")
    assert r.status_code == 200, r.text

    rows = {row["id"]: row for row in api.worker.sql(
        "SELECT id, status, error_code FROM generations WHERE id IN (?, ?)", (old, recent))}
    assert rows[old]["status"] == "failed" and rows[old]["error_code"] == "abandoned"
    assert rows[recent]["status"] == "pending", "a generation still within its deadline is left alone"
    assert usage_today(api, key["key"]) == 2, "the delivered image and the recent reservation stay counted"
    # Running it again changes nothing.
    assert api.get("/__scheduled?cron=*/10+*+*+*+*").status_code == 200
    assert usage_today(api, key["key"]) == 2
