"""The scheduled work, bounded: abandoned generations give back their charge and their R2
objects, test-key images expire, expired revocations go; with 100,000 generations in the
table it still runs, and no statement it or a hot path issues scans a large table."""

import re
import sqlite3

import pytest

from helpers import Api, now_ms, png_at, PNG_MAGIC, run_cron, tag


@pytest.fixture(scope="module")
def cron_api(worker_factory):
    """An instance of its own: its cron runs days ahead of the clock, which would expire
    and prune what other tests' generations on the shared instance still hold."""
    return Api(worker_factory("cron"))


def abandon_after_storing(api: Api, n: int, stored: int) -> tuple[dict, dict, str]:
    """A live generation of `n` images whose Worker died after storing `stored` of them:
    pending, no object keys, the rest of its images never in R2. Returns the key, the
    generation and the day it is charged to."""
    key = api.create_key(api.token(), mode="live")
    body = api.post("/v1/generate", {"prompt": f"left behind {tag()}", "n": n}, token=key["key"]).json()
    assert len(api.worker.r2_objects(f"images/{body['id']}/")) == n
    for index in range(stored, n):
        assert api.worker.r2_forget(f"images/{body['id']}/{index}") == 1
    api.worker.sql("UPDATE generations SET status = 'pending', object_keys = NULL, failures = NULL WHERE id = ?",
                   (body["id"],))
    [row] = api.worker.sql("SELECT created_at FROM generations WHERE id = ?", (body["id"],))
    return key, body, row["created_at"][:10]


def reserved_ago(api: Api, generation_id: str, minutes: int) -> None:
    api.worker.sql("UPDATE generations SET reserved_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) WHERE id = ?",
                   (f"-{minutes} minutes", generation_id))


def counts(api: Api, key: dict, day: str) -> tuple[int, int, int]:
    user_id = api.worker.sql("SELECT user_id FROM api_keys WHERE id = ?", (key["id"],))[0]["user_id"]
    [usage] = api.worker.sql("SELECT image_count FROM usage WHERE api_key_id = ? AND usage_date = ?", (key["id"], day))
    [account] = api.worker.sql("SELECT live_images FROM account_usage WHERE user_id = ? AND usage_date = ?",
                               (user_id, day))
    [deployment] = api.worker.sql("SELECT live_images FROM deployment_usage WHERE usage_date = ?", (day,))
    return usage["image_count"], account["live_images"], deployment["live_images"]


def test_an_abandoned_generation_that_stored_nothing_gives_back_its_charge(cron_api):
    api = cron_api
    key, body, day = abandon_after_storing(api, n=2, stored=0)
    before = counts(api, key, day)
    assert before[:2] == (2, 2)
    # Reserved ten minutes ago, the cron leaves it alone; twenty minutes ago, it gives it up.
    # (created_at stays: it names the day the charge is on.)
    reserved_ago(api, body["id"], 10)
    run_cron(api)
    assert api.worker.sql("SELECT status FROM generations WHERE id = ?", (body["id"],))[0]["status"] == "pending"
    reserved_ago(api, body["id"], 20)
    run_cron(api)

    [row] = api.worker.sql("SELECT status, error_code FROM generations WHERE id = ?", (body["id"],))
    assert (row["status"], row["error_code"]) == ("failed", "abandoned")
    assert counts(api, key, day) == (0, 0, before[2] - 2), "key, account and deployment each get 2 back"


def test_an_abandoned_generation_whose_images_came_back_succeeds_with_them(cron_api):
    """Gemini answered (and billed) two of three calls before the Worker died: the user
    gets those two, is charged for two, and the third is given back."""
    api = cron_api
    key, body, day = abandon_after_storing(api, n=3, stored=2)
    before = counts(api, key, day)
    reserved_ago(api, body["id"], 20)
    run_cron(api)

    record = api.get(f"/v1/generations/{body['id']}", token=key["key"]).json()
    assert record["status"] == "succeeded" and len(record["images"]) == 2
    assert record["failures"] == [{"index": 2, "code": "abandoned", "message": record["failures"][0]["message"]}]
    for image in record["images"]:
        assert png_at(api, image["url"]).startswith(PNG_MAGIC)
    assert counts(api, key, day) == (before[0] - 1, before[1] - 1, before[2] - 1)
    assert len(api.worker.r2_objects(f"images/{body['id']}/")) == 2, "what it stored stays"


def test_test_key_images_live_under_their_own_prefix_and_expire(cron_api):
    api = cron_api
    key = api.test_key()
    body = api.post("/v1/generate", {"prompt": f"ephemeral {tag()}"}, token=key).json()
    assert "_t0?" in body["url"]
    assert [o["key"] for o in api.worker.r2_objects(f"test-images/{body['id']}/")] == [f"test-images/{body['id']}/0"]
    assert api.worker.r2_objects(f"images/{body['id']}/") == []
    assert api.http.get(body["url"], timeout=30).status_code == 200
    # Made eight days ago (TEST_IMAGE_RETENTION_DAYS is 7):
    api.worker.sql("UPDATE generations SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days') WHERE id = ?",
                   (body["id"],))
    run_cron(api)
    assert api.worker.r2_objects(f"test-images/{body['id']}/") == []
    [row] = api.worker.sql("SELECT status, object_keys FROM generations WHERE id = ?", (body["id"],))
    assert row == {"status": "succeeded", "object_keys": None}
    assert api.get(f"/v1/generations/{body['id']}", token=key).json()["images"] == []
    assert api.http.get(body["url"], timeout=30).status_code == 404


def test_expired_revocations_and_throttle_rows_are_pruned(api):
    api.worker.sql("INSERT INTO revoked_tokens (jti, expires_at_ms) VALUES (?, 1000), (?, 99999999999999)",
                   (f"old-{tag()}", f"live-{tag()}"))
    # A token is accepted for 60 s past its exp: its revocation must outlive that.
    in_leeway, past_leeway = f"leeway-{tag()}", f"past-{tag()}"
    api.worker.sql("INSERT INTO revoked_tokens (jti, expires_at_ms) VALUES (?, ?), (?, ?)",
                   (in_leeway, now_ms() - 20_000, past_leeway, now_ms() - 180_000))
    api.worker.sql("INSERT INTO auth_throttle (scope, subject, created_at_ms) VALUES ('login', ?, 1000)",
                   (f"stale-{tag()}@example.com",))
    run_cron(api)
    assert api.worker.sql("SELECT COUNT(*) AS n FROM revoked_tokens WHERE expires_at_ms = 1000")[0]["n"] == 0
    assert api.worker.sql("SELECT COUNT(*) AS n FROM revoked_tokens WHERE expires_at_ms = 99999999999999")[0]["n"] == 1
    assert [r["jti"] for r in api.worker.sql("SELECT jti FROM revoked_tokens WHERE jti IN (?, ?)",
                                             (in_leeway, past_leeway))] == [in_leeway]
    assert api.worker.sql("SELECT COUNT(*) AS n FROM auth_throttle WHERE created_at_ms = 1000")[0]["n"] == 0


# --- 100,000 generations, and the plans of every statement ---

BIG_TABLES = {"usage", "generations", "api_keys", "auth_throttle"}


@pytest.fixture(scope="module")
def seeded(worker_factory):
    """An instance whose generations table holds 100,000 rows: most old, some pending (the
    Worker died), some test generations whose images have expired."""
    api = Api(worker_factory("seeded", vars={"LOG_SQL": "true"}))
    token = api.token()
    key = api.create_key(token, mode="test")
    user_id = api.get("/v1/auth/me", token=token).json()["id"]
    api.worker.sql(
        "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < 100000) "
        "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at, "
        "object_keys, mode) "
        "SELECT 'gen_seed_' || n, ?, ?, 'seeded', 'm', '1024x1024', 'natural', 1, "
        "CASE WHEN n % 1000 = 0 THEN 'pending' ELSE 'succeeded' END, "
        "strftime('%Y-%m-%dT%H:%M:%S.000Z', 'now', '-' || (n % 90 + 1) || ' days'), "
        "CASE WHEN n % 500 = 1 THEN '[]' ELSE NULL END, 'test' FROM i",
        (key["id"], user_id))
    assert api.worker.sql("SELECT COUNT(*) AS n FROM generations")[0]["n"] == 100000
    return api, token, key


def statements(worker) -> set[str]:
    return {entry["detail"] for entry in worker.log_entries('"event":"sql"') if entry.get("event") == "sql"}


def full_scans(db: sqlite3.Connection, sql: str) -> list[str]:
    """The plan lines of `sql` that scan one of the big tables (aliases resolved)."""
    aliases = {}
    for table, alias in re.findall(r"(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", sql, re.IGNORECASE):
        aliases[table] = table
        if alias and alias.upper() not in {"WHERE", "ON", "JOIN", "LEFT", "ORDER", "GROUP", "LIMIT", "USING", "SET"}:
            aliases[alias] = table
    count = max([int(n) for n in re.findall(r"\?(\d+)", sql)] or [0])
    plan = db.execute("EXPLAIN QUERY PLAN " + sql, [None] * count).fetchall()
    found = []
    for *_, detail in plan:
        m = re.match(r"SCAN (\w+)", detail)
        if m and aliases.get(m.group(1), m.group(1)) in BIG_TABLES:
            found.append(detail)
    return found


def test_the_cron_and_the_hot_paths_use_indexes_with_100000_generations(seeded):
    api, token, key = seeded
    # The hot paths, then the cron, each at least once.
    account = api.register()
    ok = lambda r, status=200: r.status_code == status or pytest.fail(f"{r.request.method} {r.url}: {r.status_code} {r.text[:200]}")  # noqa: E731
    ok(api.post("/v1/auth/login", {"email": account["user"]["email"], "password": account["password"]}))
    ok(api.post("/v1/auth/login", {"email": account["user"]["email"], "password": "wrong password"}), 401)
    live = api.create_key(token, mode="live")["key"]
    ok(api.post("/v1/keys", {"mode": "test"}, token=token, headers={"Idempotency-Key": tag()}), 201)
    ok(api.get("/v1/keys", token=token))
    for credential in (key["key"], live):
        assert api.post("/v1/generate", {"prompt": f"plan {tag()}"}, token=credential,
                        headers={"Idempotency-Key": tag()}).status_code == 200
        # Without one, the key lookup and the reservation share a batch (by the key's hash).
        assert api.post("/v1/generate", {"prompt": f"plan {tag()}"}, token=credential).status_code == 200
    ok(api.post("/v1/generate", {"prompt": f"refused {tag()} #block"}, token=live), 400)
    page = api.get("/v1/generations?limit=5", token=token)
    ok(page)
    page = page.json()
    ok(api.get(f"/v1/generations?limit=5&starting_after={page['last_id']}", token=key["key"]))
    ok(api.get(f"/v1/generations/{page['data'][0]['id']}", token=token))
    ok(api.get("/v1/usage", token=token))
    ok(api.get("/v1/usage", token=key["key"]))
    ok(api.post("/v1/auth/password", {"current_password": "correct horse battery", "new_password": "another password"},
                token=token))
    ok(api.post("/v1/auth/logout", token=account["access_token"]), 204)

    run_cron(api)
    pending = api.worker.sql("SELECT COUNT(*) AS n FROM generations WHERE status = 'pending'")[0]["n"]
    assert pending == 100 - 50, "one run gives up a bounded batch of the 100 abandoned"
    run_cron(api)
    assert api.worker.sql("SELECT COUNT(*) AS n FROM generations WHERE status = 'pending'")[0]["n"] == 0

    issued = statements(api.worker)
    assert len(issued) > 30, issued
    [path] = [p for p in (api.worker.state / "v3" / "d1").rglob("*.sqlite") if p.name != "metadata.sqlite"]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        scans = {sql: found for sql in sorted(issued) if (found := full_scans(db, sql))}
    finally:
        db.close()
    assert scans == {}, "statements that scan a large table:\n" + "\n\n".join(
        f"{sql}\n  -> {found}" for sql, found in scans.items())


def test_the_plan_check_sees_a_full_scan(seeded):
    api, _, _ = seeded
    [path] = [p for p in (api.worker.state / "v3" / "d1").rglob("*.sqlite") if p.name != "metadata.sqlite"]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert full_scans(db, "SELECT id FROM generations g WHERE g.prompt = ?1") == ["SCAN g"]
        assert full_scans(db, "SELECT id FROM generations WHERE id = ?1") == []
    finally:
        db.close()
