"""What an operator controls: spend ceilings per key, per account and per deployment,
keys per account, sign-up, and the admin surface (made with scripts/admin.sh)."""

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from helpers import Api, assert_error, promote, tag
from harness import ROOT


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def limited(worker_factory):
    """Small ceilings, so each can be reached."""
    return Api(worker_factory("limited", vars={
        "MAX_KEY_DAILY_IMAGE_QUOTA": "50", "ACCOUNT_DAILY_IMAGE_QUOTA": "10",
        "DEPLOYMENT_DAILY_LIVE_IMAGES": "1000000", "MAX_ACTIVE_KEYS_PER_ACCOUNT": "5"}))


@pytest.fixture(scope="module")
def budgeted(worker_factory):
    """A deployment that may make 3 live images a day."""
    return Api(worker_factory("budgeted", vars={"DEPLOYMENT_DAILY_LIVE_IMAGES": "3"}))


@pytest.fixture(scope="module")
def closed(worker_factory):
    return Api(worker_factory("closed", vars={"REGISTRATION": "closed"}))


# --- per key ---

def test_a_key_may_not_ask_for_more_than_the_operators_maximum(limited):
    token = limited.token()
    r = limited.post("/v1/keys", {"daily_image_quota": 51}, token=token)
    error = assert_error(r, 422, "out_of_range", "invalid_request_error", param="daily_image_quota")
    assert "50" in error["message"]
    assert limited.post("/v1/keys", {"daily_image_quota": 50}, token=token).status_code == 201


def test_the_operators_maximum_also_caps_existing_keys(limited):
    """A key made before the maximum was lowered gets the maximum, not its own quota."""
    token = limited.token()
    key = limited.create_key(token, mode="test")
    limited.worker.sql("UPDATE api_keys SET daily_image_quota = 100000 WHERE id = ?", (key["id"],))
    r = limited.post("/v1/generate", {"prompt": f"capped {tag()}"}, token=key["key"])
    assert r.status_code == 200 and r.headers["x-quota-limit-images"] == "50"


# --- keys per account ---

def test_one_key_more_than_the_maximum_is_409_and_revoking_makes_room(limited):
    token = limited.token()
    keys = [limited.create_key(token, mode="test") for _ in range(5)]
    assert_error(limited.post("/v1/keys", {}, token=token), 409, "too_many_keys", "conflict_error")
    assert limited.delete(f"/v1/keys/{keys[0]['id']}", token=token).status_code == 204
    assert limited.post("/v1/keys", {}, token=token).status_code == 201


def test_thirty_concurrent_key_creations_cannot_pass_the_maximum(limited):
    token = limited.token()
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(lambda _: limited.post("/v1/keys", {"mode": "test"}, token=token).status_code,
                                 range(30)))
    assert sorted(statuses) == [201] * 5 + [409] * 25, statuses
    assert len(limited.get("/v1/keys", token=token).json()["data"]) == 5


# --- per account ---

def test_thirty_concurrent_live_requests_over_five_keys_give_exactly_the_account_ceiling(limited, fake_gemini):
    token = limited.token()
    keys = [limited.create_key(token, mode="live")["key"] for _ in range(5)]
    t = tag()
    before = len(fake_gemini.requests_with(t))

    def generate(i):
        return limited.post("/v1/generate", {"prompt": f"ceiling {t} {i}"}, token=keys[i % 5])

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(generate, range(30)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 10 + [429] * 20, statuses
    for r in answers:
        if r.status_code == 429:
            assert_error(r, 429, "account_quota_exceeded", "rate_limit_error")
            assert int(r.headers["retry-after"]) > 0
    user_id = limited.get("/v1/auth/me", token=token).json()["id"]
    [row] = limited.worker.sql("SELECT live_images FROM account_usage WHERE user_id = ? AND usage_date = ?",
                               (user_id, today()))
    assert row["live_images"] == 10
    counted = limited.worker.sql(
        "SELECT COALESCE(SUM(u.image_count), 0) AS n FROM usage u JOIN api_keys k ON k.id = u.api_key_id "
        "WHERE k.user_id = ? AND u.usage_date = ?", (user_id, today()))
    assert counted[0]["n"] == 10, "a refused reservation leaves no charge on the key either"
    assert len(fake_gemini.requests_with(t)) - before == 10, "refusals never reach Gemini"
    assert len(limited.worker.sql("SELECT id FROM generations WHERE user_id = ?", (user_id,))) == 10


def test_the_account_ceiling_counts_live_images_only(limited):
    token = limited.token()
    key = limited.create_key(token, mode="test", daily_image_quota=50)["key"]
    for i in range(3):
        r = limited.post("/v1/generate", {"prompt": f"free {tag()}", "n": 4}, token=key)
        assert r.status_code == 200, r.text


# --- per deployment ---

def test_thirty_concurrent_live_requests_spend_exactly_the_deployment_budget_and_test_keys_keep_working(budgeted):
    keys = [budgeted.live_key() for _ in range(3)]  # three accounts
    t = tag()
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(
            lambda i: budgeted.post("/v1/generate", {"prompt": f"budget {t} {i}"}, token=keys[i % 3]), range(30)))
    assert sorted(r.status_code for r in answers) == [200] * 3 + [503] * 27
    refused = next(r for r in answers if r.status_code == 503)
    assert_error(refused, 503, "deployment_budget_exhausted", "rate_limit_error")
    assert int(refused.headers["retry-after"]) > 0
    assert budgeted.post("/v1/generate", {"prompt": f"test {tag()}", "n": 4}, token=budgeted.test_key()).status_code == 200
    [row] = budgeted.worker.sql("SELECT live_images, test_images FROM deployment_usage WHERE usage_date = ?", (today(),))
    assert (row["live_images"], row["test_images"]) == (3, 4)


# --- sign-up ---

def test_closed_registration_is_403(closed):
    r = closed.post("/v1/auth/register", {"email": f"x-{tag()}@example.com", "password": "password123"})
    assert_error(r, 403, "registration_closed", "permission_error")
    assert closed.worker.sql("SELECT COUNT(*) AS n FROM users WHERE email LIKE 'x-%'")[0]["n"] == 0


# --- the admin surface ---

@pytest.fixture(scope="module")
def admin(limited):
    account = limited.register()
    promote(limited.worker, account["user"]["email"])
    return account["access_token"]


def test_admin_routes_are_404_to_everyone_else(limited, admin):
    user = limited.token()
    for method, path in [("GET", "/v1/admin/accounts"), ("POST", "/v1/admin/accounts"), ("GET", "/v1/admin/usage"),
                         ("DELETE", "/v1/admin/usage"), ("POST", "/v1/admin/accounts/abc"), ("GET", "/v1/admin/x")]:
        for token in (None, user, "not-a-token", limited.test_key()):
            r = limited.request(method, path, token, json={} if method == "POST" else None)
            assert_error(r, 404, "route_not_found", "not_found_error")
    # An admin gets the real answers, a wrong method included.
    assert limited.get("/v1/admin/accounts", token=admin).status_code == 200
    r = limited.request("DELETE", "/v1/admin/usage", admin)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"


def test_admin_lists_accounts_with_todays_images_and_keys_by_email_prefix(limited, admin):
    prefix = f"list-{tag()}"
    accounts = [limited.register(f"{prefix}-{i}@example.com") for i in range(3)]
    live = limited.create_key(accounts[0]["access_token"], mode="live")["key"]
    test = limited.create_key(accounts[0]["access_token"], mode="test")["key"]
    assert limited.post("/v1/generate", {"prompt": f"a {tag()}", "n": 2}, token=live).status_code == 200
    assert limited.post("/v1/generate", {"prompt": f"b {tag()}", "n": 3}, token=test).status_code == 200
    r = limited.get(f"/v1/admin/accounts?email_prefix={prefix}&limit=2", token=admin)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [a["email"] for a in page["data"]] == [f"{prefix}-0@example.com", f"{prefix}-1@example.com"]
    assert page["has_more"] is True and page["default_daily_image_quota"] == 10
    first = page["data"][0]
    assert (first["live_images_today"], first["test_images_today"], first["active_keys"], first["keys"]) == (2, 3, 2, 2)
    assert first["role"] == "user" and first["suspended_at"] is None
    rest = limited.get(f"/v1/admin/accounts?email_prefix={prefix}&starting_after={page['data'][-1]['id']}",
                       token=admin).json()
    assert [a["email"] for a in rest["data"]] == [f"{prefix}-2@example.com"] and rest["has_more"] is False


def test_suspension_stops_the_token_and_every_key_at_the_next_request_and_lifting_it_restores(limited, admin):
    account = limited.register()
    token, user_id = account["access_token"], account["user"]["id"]
    key = limited.create_key(token, mode="test")["key"]
    r = limited.post(f"/v1/admin/accounts/{user_id}", {"suspended": True}, token=admin)
    assert r.status_code == 200 and r.json()["suspended_at"]
    assert_error(limited.get("/v1/auth/me", token=token), 403, "account_suspended", "permission_error")
    assert_error(limited.post("/v1/generate", {"prompt": "x"}, token=key), 403, "account_suspended")
    assert_error(limited.get("/v1/usage", token=key), 403, "account_suspended")
    log = limited.worker.request_log(limited.get("/v1/generations", token=key).headers["x-request-id"])
    assert log["status"] == 403 and log["d1_queries"] == 1, "checked in the same single auth query"
    assert limited.post(f"/v1/admin/accounts/{user_id}", {"suspended": False}, token=admin).json()["suspended_at"] is None
    assert limited.get("/v1/auth/me", token=token).status_code == 200
    assert limited.post("/v1/generate", {"prompt": f"back {tag()}"}, token=key).status_code == 200


def test_an_admin_sets_an_accounts_own_ceiling(limited, admin):
    account = limited.register()
    key = limited.create_key(account["access_token"], mode="live")["key"]
    r = limited.post(f"/v1/admin/accounts/{account['user']['id']}", {"daily_image_quota": 1}, token=admin)
    assert r.status_code == 200 and r.json()["daily_image_quota"] == 1
    assert limited.post("/v1/generate", {"prompt": f"one {tag()}"}, token=key).status_code == 200
    assert_error(limited.post("/v1/generate", {"prompt": f"two {tag()}"}, token=key), 429, "account_quota_exceeded")
    r = limited.post(f"/v1/admin/accounts/{account['user']['id']}", {"daily_image_quota": None}, token=admin)
    assert r.json()["daily_image_quota"] is None
    assert limited.post("/v1/generate", {"prompt": f"three {tag()}"}, token=key).status_code == 200


def test_admin_update_validation(limited, admin):
    me = limited.get("/v1/auth/me", token=admin).json()
    assert_error(limited.post(f"/v1/admin/accounts/{me['id']}", {"suspended": True}, token=admin),
                 400, "invalid_value", param="suspended")
    assert_error(limited.post(f"/v1/admin/accounts/{uuid.uuid4()}", {"suspended": True}, token=admin), 404, "not_found")
    assert_error(limited.post(f"/v1/admin/accounts/{me['id']}", {"role": "admin"}, token=admin),
                 422, "unknown_parameter", param="role")


def test_an_admin_creates_accounts_and_sees_deployment_usage(limited, admin):
    email = f"made-{tag()}@example.com"
    r = limited.post("/v1/admin/accounts", {"email": email, "password": "password123"}, token=admin)
    assert r.status_code == 201 and r.json()["email"] == email and r.json()["role"] == "user"
    assert limited.post("/v1/auth/login", {"email": email, "password": "password123"}).status_code == 200
    assert_error(limited.post("/v1/admin/accounts", {"email": email, "password": "password123"}, token=admin),
                 409, "email_taken")
    usage = limited.get("/v1/admin/usage?days=7", token=admin).json()
    assert usage["daily_live_budget"] == 1000000
    [day] = [d for d in usage["data"] if d["date"] == today()]
    assert day["live_images"] >= 10 and day["test_images"] >= 3


def test_the_first_admin_of_a_closed_deployment_creates_accounts(closed, api):
    """The README's recipe: with sign-up closed, the operator's first account is inserted
    with `wrangler d1 execute` and promoted by scripts/admin.sh; it then creates the others."""
    seeded = f"root-{tag()}@example.com"
    # A bcrypt hash of the password, made by a Worker (the main one, where sign-up is open).
    donor = api.register(password="password123")
    [row] = api.worker.sql("SELECT password_hash FROM users WHERE id = ?", (donor["user"]["id"],))
    closed.worker.sql(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, '2026-01-01T00:00:00.000Z')",
        (str(uuid.uuid4()), seeded, row["password_hash"]))
    promote(closed.worker, seeded)
    r = closed.post("/v1/auth/login", {"email": seeded, "password": "password123"})
    assert r.status_code == 200, r.text
    email = f"new-{tag()}@example.com"
    made = closed.post("/v1/admin/accounts", {"email": email, "password": "password123"},
                       token=r.json()["access_token"])
    assert made.status_code == 201, made.text
    assert closed.post("/v1/auth/login", {"email": email, "password": "password123"}).status_code == 200


def test_admin_sh_refuses_what_is_not_an_email(limited):
    out = subprocess.run(["bash", "scripts/admin.sh", "promote", "x'; DROP TABLE users; --@a.b", "--",
                          "-c", str(limited.worker.config_path), "--persist-to", str(limited.worker.state)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not an email" in out.stderr
    assert limited.worker.sql("SELECT COUNT(*) AS n FROM users")[0]["n"] > 0
