"""What an attacker tries: huge and malformed input, bodies that never end, hostile
upstream answers, replays across keys, stolen tokens, and hunting for secrets at rest."""

import base64
import hashlib
import re
import time

import pytest
import requests

from fake_gemini import SVG_BYTES
from helpers import Api, assert_error, PNG_MAGIC, tag, usage_today


def throttle_rows(api: Api) -> int:
    return api.worker.sql("SELECT COUNT(*) AS n FROM auth_throttle")[0]["n"]


# --- login and sign-up input ---

def test_huge_and_malformed_login_emails_are_refused_before_anything_is_stored(api):
    before = throttle_rows(api)
    for email in ["a" * 60_000 + "@example.com", "x" * 300, "not an email", "a@b", "<script>@x.com", ""]:
        r = api.post("/v1/auth/login", {"email": email, "password": "password123"})
        assert r.status_code in (413, 422), (email[:20], r.status_code)
        if r.status_code == 422:
            assert r.json()["error"]["code"] in ("invalid_email", "email_required")
    assert throttle_rows(api) == before, "nothing was stored for them"


def test_an_email_of_255_bytes_is_refused_and_254_is_an_ordinary_failure(api):
    domain = "b" * 63 + "." + "b" * 63 + "." + "c" * 57 + ".com"
    email_254 = "a" * 64 + "@" + domain
    assert len(email_254) == 254
    assert_error(api.post("/v1/auth/login", {"email": email_254, "password": "password123"}), 401, "invalid_credentials")
    assert_error(api.post("/v1/auth/login", {"email": "d" + email_254, "password": "password123"}), 422, "invalid_email")


@pytest.fixture(scope="module")
def strict(worker_factory):
    """Login throttling per address that trips after 3 failures."""
    return Api(worker_factory("strict-login", vars={"LOGIN_MAX_FAILURES_PER_IP": "3"}))


def test_failed_logins_are_throttled_per_address_whatever_the_emails(strict):
    address = {"cf-connecting-ip": "203.0.113.9"}
    for i in range(3):
        r = strict.post("/v1/auth/login", {"email": f"who-{i}-{tag()}@example.com", "password": "wrongwrong"},
                        headers=address)
        assert_error(r, 401, "invalid_credentials")
    r = strict.post("/v1/auth/login", {"email": f"fresh-{tag()}@example.com", "password": "wrongwrong"}, headers=address)
    assert_error(r, 429, "too_many_login_attempts", "rate_limit_error")
    assert "address" in r.json()["error"]["message"] and int(r.headers["retry-after"]) > 0
    # Another address is not affected, and the refused attempts stored nothing more.
    rows = strict.worker.sql("SELECT scope, COUNT(*) AS n FROM auth_throttle GROUP BY scope")
    assert {r["scope"]: r["n"] for r in rows} == {"login_ip": 3, "login": 3}
    other = strict.post("/v1/auth/login", {"email": f"x-{tag()}@example.com", "password": "wrongwrong"},
                        headers={"cf-connecting-ip": "203.0.113.10"})
    assert_error(other, 401, "invalid_credentials")


def test_a_successful_login_does_not_count(strict):
    address = {"cf-connecting-ip": "198.51.100.7"}
    account = strict.register()
    for _ in range(5):
        r = strict.post("/v1/auth/login", {"email": account["user"]["email"], "password": account["password"]},
                        headers=address)
        assert r.status_code == 200
    assert strict.worker.sql("SELECT COUNT(*) AS n FROM auth_throttle WHERE subject = ?",
                             ("198.51.100.7",))[0]["n"] == 0


# --- bodies ---

def chunked(total: int, piece: int = 8192):
    sent = 0
    while sent < total:
        yield b"a" * min(piece, total - sent)
        sent += piece


@pytest.fixture(scope="module")
def uploads(worker_factory):
    """An instance of its own: wrangler dev's proxy copes badly with a client still
    uploading after the answer, and the other tests should not share that."""
    api = Api(worker_factory("uploads"))
    api.key = api.test_key()  # made before any upload misbehaves
    return api


def slow_chunks(first: int, pause: float, rest: int):
    """A chunked body: `first` bytes at once, then a pause, then `rest` bytes."""
    yield b"a" * first
    time.sleep(pause)
    yield b"a" * rest


def worker_time_ms(api: Api, request_id: str, path: str) -> int:
    """How long the Worker took over a request: wrangler's own line next to ours (it may
    come just before or just after)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        lines = api.worker.log_path.read_text(errors="replace").splitlines()
        mine = next(i for i, line in enumerate(lines) if request_id in line)
        for line in lines[max(mine - 4, 0):mine + 5]:
            if f"[wrangler:info] POST {path} 413" in line and (m := re.search(r"\((\d+)ms\)", line)):
                return int(m.group(1))
        time.sleep(0.2)
    raise AssertionError("no timing line")


# 64 KiB everywhere but /v1/generate, whose limit fits 20 MB of input images as base64.
@pytest.mark.parametrize("path, first", [
    ("/v1/auth/login", 80 * 1024), ("/v1/auth/register", 80 * 1024), ("/v1/images/generations", 80 * 1024),
    ("/v1/generate", 28 * 1024 * 1024),
])
def test_a_chunked_body_is_cut_off_at_the_route_limit_as_it_streams_in(uploads, path, first):
    token = uploads.key if path.startswith(("/v1/generate", "/v1/images")) else None
    headers = {"content-type": "application/json", "connection": "close"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    started = time.monotonic()
    r = requests.post(uploads.base + path, headers=headers, data=slow_chunks(first, 2.0, 20 * 1024), timeout=60)
    assert time.monotonic() - started >= 2.0
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")
    uploads.worker.request_log(r.headers["x-request-id"])
    assert worker_time_ms(uploads, r.headers["x-request-id"], path) < 1500, \
        "answered when the limit was passed, not after the whole body arrived"


def test_a_chunked_body_under_the_limit_is_read(api):
    body = b'{"email": "nobody@example.com", "password": "password123"}'
    r = api.request("POST", "/v1/auth/login", headers={"content-type": "application/json"}, data=iter([body[:10], body[10:]]))
    assert_error(r, 401, "invalid_credentials")


# --- upstream answers ---

@pytest.mark.parametrize("directive", ["#svg", "#svgaspng"])
def test_an_svg_from_upstream_is_a_502_and_nothing_is_charged_or_stored(api, directive):
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"drawing {tag()} {directive}"}, token=key)
    assert_error(r, 502, "upstream_error", "upstream_error")
    assert usage_today(api, key) == 0
    [row] = api.worker.sql("SELECT g.status, g.id FROM generations g JOIN api_keys k ON k.id = g.api_key_id "
                           "WHERE k.key_hash = ?", (hashlib.sha256(key.encode()).hexdigest(),))
    assert row["status"] == "failed"
    assert api.worker.r2_objects(f"images/{row['id']}/") == []
    assert not any(SVG_BYTES in o["bytes"] for o in api.worker.r2_objects("images/"))


def test_a_hostile_retry_delay_neither_overflows_nor_waits(api):
    key = api.live_key()
    started = time.monotonic()
    r = api.post("/v1/generate", {"prompt": f"slow {tag()} #retrydelay:1e300s:{tag()}"}, token=key)
    assert_error(r, 503, "upstream_overloaded")
    assert time.monotonic() - started < 6, "a delay that cannot fit the deadline is not waited for"
    r = api.post("/v1/generate", {"prompt": f"slow {tag()} #retrydelay:99999999999999999999s:{tag()}"}, token=key)
    assert_error(r, 503, "upstream_overloaded")
    assert usage_today(api, key) == 0


# --- image responses ---

def test_image_responses_cannot_be_turned_against_the_console(api):
    body = api.post("/v1/generate", {"prompt": f"safe {tag()}"}, token=api.live_key()).json()
    image = api.http.get(body["url"], timeout=30)
    assert image.status_code == 200
    assert image.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert image.headers["x-content-type-options"] == "nosniff"
    cache = image.headers["cache-control"]
    assert "immutable" not in cache
    max_age = int(cache.split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 3600, "never cached longer than the signature lives"


def test_the_console_is_served_with_a_strict_policy(api):
    r = api.get("/")
    csp = r.headers["content-security-policy"]
    for directive in ["default-src 'self'", "frame-ancestors 'none'", "script-src 'self'", "object-src 'none'"]:
        assert directive in csp, csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert api.get("/app.js").headers["x-content-type-options"] == "nosniff"


# --- idempotency ---

def test_an_idempotency_key_is_scoped_to_the_credential_that_used_it(api, fake_gemini):
    token = api.token()
    live = api.create_key(token, mode="live")["key"]
    test = api.create_key(token, mode="test")["key"]
    other_live = api.create_key(token, mode="live")["key"]
    t = tag()
    headers = {"Idempotency-Key": f"shared-{t}"}
    body = {"prompt": f"scoped {t}"}
    first = api.post("/v1/generate", body, token=live, headers=headers)
    assert first.status_code == 200
    for key in (other_live, test):
        again = api.post("/v1/generate", body, token=key, headers=headers)
        assert again.status_code == 200, again.text
        assert "idempotent-replayed" not in again.headers and again.json()["id"] != first.json()["id"]
        assert api.get(f"/v1/generations/{again.json()['id']}", token=key).status_code == 200
    # The same key replays its own.
    replay = api.post("/v1/generate", body, token=live, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["id"] == first.json()["id"]
    assert len(fake_gemini.requests_with(t)) == 2, "the live key's replay made no call"


def test_a_b64_answer_larger_than_a_d1_row_replays_exactly_once(api, fake_gemini):
    key = api.live_key()
    headers = {"Idempotency-Key": f"big-{tag()}"}
    t = tag()
    # Gemini answers 1K images of 1 to 2 MB; the fake's #bigpng draws incompressible 300 KB ones.
    body = {"prompt": f"big {t} #bigpng:300", "n": 4, "response_format": "b64_json"}
    first = api.post("/v1/generate", body, token=key, headers=headers)
    assert first.status_code == 200, first.text
    assert len(first.content) > 1_000_000, "the answer is larger than D1 stores in a row"
    replay = api.post("/v1/generate", body, token=key, headers=headers)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert [i["b64_json"] for i in replay.json()["images"]] == [i["b64_json"] for i in first.json()["images"]]
    assert base64.b64decode(replay.json()["images"][0]["b64_json"]).startswith(PNG_MAGIC)
    assert usage_today(api, key) == 4, "charged once"
    assert len(fake_gemini.requests_with(t)) == 4, "and drawn once"
    [record] = api.worker.sql("SELECT response_body, generation_id FROM idempotency_keys WHERE idempotency_key = ?",
                              (headers["Idempotency-Key"],))
    assert record["response_body"] is None and record["generation_id"] == first.json()["id"]


# --- tokens ---

def test_logout_revokes_the_token_it_is_called_with_only(api):
    account = api.register()
    other = api.post("/v1/auth/login", {"email": account["user"]["email"], "password": account["password"]})
    token, other_token = account["access_token"], other.json()["access_token"]
    r = api.post("/v1/auth/logout", token=token)
    assert r.status_code == 204 and r.content == b""
    assert_error(api.get("/v1/auth/me", token=token), 401, "token_revoked", "authentication_error")
    assert_error(api.post("/v1/auth/logout", token=token), 401, "token_revoked")
    assert api.get("/v1/auth/me", token=other_token).status_code == 200


def test_a_password_change_revokes_every_token_and_answers_a_new_one(api):
    account = api.register()
    email, old_password = account["user"]["email"], account["password"]
    second = api.post("/v1/auth/login", {"email": email, "password": old_password}).json()["access_token"]
    key = api.create_key(account["access_token"], mode="test")["key"]
    wrong = api.post("/v1/auth/password", {"current_password": "not-it-at-all", "new_password": "a new password"},
                     token=account["access_token"])
    assert_error(wrong, 401, "invalid_credentials", param="current_password")
    short = api.post("/v1/auth/password", {"current_password": old_password, "new_password": "short"},
                     token=account["access_token"])
    assert_error(short, 422, "password_too_short", param="new_password")
    r = api.post("/v1/auth/password", {"current_password": old_password, "new_password": "a new password"},
                 token=account["access_token"])
    assert r.status_code == 200, r.text
    fresh = r.json()["access_token"]
    for stale in (account["access_token"], second):
        assert_error(api.get("/v1/auth/me", token=stale), 401, "token_revoked")
    assert api.get("/v1/auth/me", token=fresh).status_code == 200
    assert api.post("/v1/generate", {"prompt": f"keys survive {tag()}"}, token=key).status_code == 200
    assert_error(api.post("/v1/auth/login", {"email": email, "password": old_password}), 401, "invalid_credentials")
    assert api.post("/v1/auth/login", {"email": email, "password": "a new password"}).status_code == 200


def test_an_account_route_spends_one_d1_query_on_the_token_and_an_api_key_route_still_one(api):
    token = api.token()
    key = api.create_key(token, mode="test")["key"]
    me = api.get("/v1/auth/me", token=token)
    assert api.worker.request_log(me.headers["x-request-id"])["d1_queries"] == 1
    history = api.get("/v1/generations", token=key)
    assert history.status_code == 200
    # The key is looked up in the page's own batch.
    assert api.worker.request_log(history.headers["x-request-id"])["d1_queries"] == 1, "auth and the page at once"
    by_account = api.get("/v1/generations", token=token)
    assert api.worker.request_log(by_account.headers["x-request-id"])["d1_queries"] == 2, "auth, then the page"
    generated = api.post("/v1/generate", {"prompt": f"count {tag()}"}, token=key)
    assert api.worker.request_log(generated.headers["x-request-id"])["d1_queries"] == 2, "key + reserve, finish"


def test_history_read_in_the_same_round_trip_as_the_key_shows_nothing_to_a_refused_key(api):
    token = api.token()
    key = api.create_key(token, mode="test")
    assert api.post("/v1/generate", {"prompt": f"kept {tag()}"}, token=key["key"]).status_code == 200
    assert len(api.get("/v1/generations", token=key["key"]).json()["data"]) == 1
    assert api.delete(f"/v1/keys/{key['id']}", token=token).status_code == 204
    r = api.get("/v1/generations", token=key["key"])
    assert_error(r, 401, "revoked_api_key", "authentication_error")
    assert "kept" not in r.text
    unknown = "nb_test_" + "0" * 32
    assert_error(api.get("/v1/generations", token=unknown), 401, "invalid_api_key")
    # Who is asking is said before what is wrong with the request.
    assert_error(api.get("/v1/generations?limit=0", token=unknown), 401, "invalid_api_key")
    assert_error(api.get("/v1/generations?limit=x", token=key["key"]), 401, "revoked_api_key")
    live = api.create_key(token, mode="test")["key"]
    assert api.get("/v1/generations?limit=x", token=live).status_code == 422
    # The account still sees the revoked key's generation.
    assert len(api.get("/v1/generations", token=token).json()["data"]) == 1


# --- no secret at rest ---

def test_no_raw_key_or_token_is_stored_anywhere_in_d1_or_r2(api):
    token = api.token()
    secrets = [token]
    headers = {"Idempotency-Key": f"mint-{tag()}"}
    created = api.post("/v1/keys", {"mode": "live", "name": "ci"}, token=token, headers=headers)
    assert created.status_code == 201 and created.json()["key"].startswith("nb_live_")
    secrets.append(created.json()["key"])
    replay = api.post("/v1/keys", {"mode": "live", "name": "ci"}, token=token, headers=headers)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["key"] is None and replay.json()["id"] == created.json()["id"]
    test_key = api.create_key(token, mode="test")["key"]
    secrets.append(test_key)
    for key in (created.json()["key"], test_key):
        r = api.post("/v1/generate", {"prompt": f"at rest {tag()}"}, token=key, headers={"Idempotency-Key": tag()})
        assert r.status_code == 200, r.text
    account = api.register()
    login = api.post("/v1/auth/login", {"email": account["user"]["email"], "password": account["password"]})
    secrets += [account["access_token"], login.json()["access_token"], account["password"]]
    assert api.post("/v1/auth/logout", token=login.json()["access_token"]).status_code == 204
    files = [p for p in api.worker.state.rglob("*") if p.is_file()]
    assert any("d1" in str(p) for p in files) and any("r2" in str(p) for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is stored in {path}"
