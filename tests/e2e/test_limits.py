"""Quotas, rate limits, login/registration throttling and idempotency, under concurrency."""

import concurrent.futures
import hashlib
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from helpers import Api, assert_error, tag, unsigned, usage_today


def seconds_to_utc_midnight() -> float:
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


# --- daily quota ---

def test_30_concurrent_generations_on_a_quota_of_10_give_exactly_10(api):
    key = api.test_key(daily_image_quota=10)
    prompt = f"crowd {tag()}"

    def generate(_):
        return Api(api.worker).post("/v1/generate", {"prompt": prompt}, token=key)

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(generate, range(30)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 20, statuses
    assert usage_today(api, key) == 10
    refused = next(r for r in responses if r.status_code == 429)
    assert_error(refused, 429, "daily_quota_exceeded", "rate_limit_error")
    assert refused.headers["x-should-retry"] == "false"
    assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) < 5
    assert refused.headers["x-quota-limit-images"] == "10"
    assert refused.headers["x-quota-remaining-images"] == "0"


def test_n_counts_against_the_quota_and_headers_count_down(api):
    key = api.test_key(daily_image_quota=5)
    r = api.post("/v1/generate", {"prompt": f"q {tag()}", "n": 3}, token=key)
    assert r.status_code == 200
    assert (r.headers["x-quota-limit-images"], r.headers["x-quota-remaining-images"]) == ("5", "2")
    over = api.post("/v1/generate", {"prompt": f"q {tag()}", "n": 3}, token=key)
    assert_error(over, 429, "daily_quota_exceeded")
    assert over.headers["x-quota-remaining-images"] == "2"
    ok = api.post("/v1/generate", {"prompt": f"q {tag()}", "n": 2}, token=key)
    assert ok.status_code == 200 and ok.headers["x-quota-remaining-images"] == "0"
    assert usage_today(api, key) == 5


def test_a_reservation_is_released_after_an_upstream_failure(api):
    key = api.live_key(daily_image_quota=2)
    t = tag()
    assert_error(api.post("/v1/generate", {"prompt": f"fail {t} #status:500:9:{t}", "n": 2}, token=key), 502,
                 "upstream_error")
    assert usage_today(api, key) == 0
    ok = api.post("/v1/generate", {"prompt": f"works {t}", "n": 2}, token=key)
    assert ok.status_code == 200, ok.text
    assert usage_today(api, key) == 2
    assert_error(api.post("/v1/generate", {"prompt": f"more {t}"}, token=key), 429, "daily_quota_exceeded")


def test_the_default_quota_applies_without_a_key_override(api):
    r = api.post("/v1/generate", {"prompt": f"default {tag()}"}, token=api.test_key())
    assert r.headers["x-quota-limit-images"] == "100"
    assert r.headers["x-quota-remaining-images"] == "99"


# --- per-minute rate limit (a token bucket on the key's row, taken in its lookup batch) ---

@pytest.fixture(scope="module")
def rate_limited_api(worker_factory):
    return Api(worker_factory("rate-limited", vars={"RATE_LIMIT_PER_MINUTE": "3"}))


def test_the_per_minute_limit_trips_and_its_headers_count_down(rate_limited_api):
    api = rate_limited_api
    key = api.test_key()
    remaining = []
    for _ in range(3):
        r = api.post("/v1/generate", {"prompt": f"rl {tag()}"}, token=key)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    refused = api.post("/v1/generate", {"prompt": f"rl {tag()}"}, token=key)
    assert_error(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 20, "one request every 20 s at 3 per minute"
    assert "x-quota-remaining-images" in refused.headers
    # The OpenAI-compatible route shares the key's budget.
    assert_error(api.post("/v1/images/generations", {"prompt": "x"}, token=key), 429, "rate_limit_exceeded")
    assert usage_today(api, key) == 3


def test_the_limit_is_per_key(rate_limited_api):
    api = rate_limited_api
    busy, fresh = api.test_key(), api.test_key()
    for _ in range(4):
        api.post("/v1/generate", {"prompt": "x"}, token=busy)
    r = api.post("/v1/generate", {"prompt": f"fresh {tag()}"}, token=fresh)
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"


def test_the_limit_holds_under_a_concurrent_burst(rate_limited_api):
    api = rate_limited_api
    key = api.test_key()

    def call(_):
        return Api(api.worker).post("/v1/generate", {"prompt": f"burst {tag()}"}, token=key).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(call, range(10)))
    assert statuses == [200] * 3 + [429] * 7


def test_an_exhausted_key_that_is_revoked_is_refused_as_revoked(rate_limited_api):
    api = rate_limited_api
    token = api.token()
    key = api.create_key(token, mode="test")
    for _ in range(4):
        api.post("/v1/generate", {"prompt": "x"}, token=key["key"])
    assert_error(api.post("/v1/generate", {"prompt": "x"}, token=key["key"]), 429, "rate_limit_exceeded")
    assert api.delete(f"/v1/keys/{key['id']}", token=token).status_code == 204
    r = api.post("/v1/generate", {"prompt": "x"}, token=key["key"])
    assert_error(r, 401, "revoked_api_key", "authentication_error")
    assert not any(name.startswith("x-ratelimit") for name in r.headers), "no budget is shown for a dead key"


@pytest.fixture(scope="module")
def fast_refill_api(worker_factory):
    # 120 a minute: a token comes back every 500 ms.
    return Api(worker_factory("rate-refill", vars={"RATE_LIMIT_PER_MINUTE": "120"}))


def test_tokens_come_back_at_the_configured_rate_and_refusals_write_nothing(fast_refill_api):
    api = fast_refill_api
    key = api.test_key()
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    # A request refused for its body has still spent a token (the rate is taken first),
    # and costs no image: the cheapest way to empty a bucket of 120.
    for sent in range(1, 400):
        r = api.post("/v1/generate", {"prompt": ""}, token=key)
        if r.status_code == 429:
            break
        assert_error(r, 422, "prompt_required")
    assert 120 <= sent < 400, "at least the whole bucket, then a refusal"
    assert_error(r, 429, "rate_limit_exceeded", "rate_limit_error")
    assert r.headers["retry-after"] == "1" and r.headers["x-ratelimit-remaining-requests"] == "0"
    stored = api.worker.sql("SELECT rate_units, rate_updated_ms FROM api_keys WHERE key_hash = ?", (key_hash,))[0]
    assert 0 <= stored["rate_units"] < 60_000, "less than one token (60000 units) left"
    # The bucket's clock is its stored timestamp: set it an hour ahead and no token can
    # come back during the check, however slow the machine.
    ahead = int(time.time() * 1000) + 3_600_000
    api.worker.sql("UPDATE api_keys SET rate_units = 0, rate_updated_ms = ? WHERE key_hash = ?", (ahead, key_hash))
    frozen = {"rate_units": 0, "rate_updated_ms": ahead}
    assert_error(api.post("/v1/generate", {"prompt": ""}, token=key), 429, "rate_limit_exceeded")
    unchanged = api.worker.sql("SELECT rate_units, rate_updated_ms FROM api_keys WHERE key_hash = ?", (key_hash,))[0]
    assert unchanged == frozen, "a refused request writes nothing"
    # Half a second ago: one token (500 ms at 120 a minute) has come back since.
    api.worker.sql("UPDATE api_keys SET rate_updated_ms = ? WHERE key_hash = ?",
                   (int(time.time() * 1000) - 600, key_hash))
    assert_error(api.post("/v1/generate", {"prompt": ""}, token=key), 422, "prompt_required")


# --- login and registration throttling ---

@pytest.fixture(scope="module")
def throttled_api(worker_factory):
    return Api(worker_factory("auth-throttle", vars={
        "LOGIN_MAX_FAILURES": "5", "LOGIN_WINDOW_SECONDS": "3",
        "REGISTER_MAX_PER_IP": "3", "REGISTER_WINDOW_SECONDS": "3",
    }))


def register_from(api: Api, ip: str, email: str | None = None):
    email = email or f"ip-{uuid.uuid4().hex[:10]}@example.com"
    return api.post("/v1/auth/register", {"email": email, "password": "correct horse battery"},
                    headers={"CF-Connecting-IP": ip})


def test_login_locks_after_five_failures_even_for_the_right_password_then_recovers(throttled_api):
    api = throttled_api
    email = f"locked-{uuid.uuid4().hex[:8]}@example.com"
    assert register_from(api, "203.0.113.10", email).status_code == 201
    for _ in range(5):
        assert_error(api.post("/v1/auth/login", {"email": email, "password": "wrong password!"}), 401,
                     "invalid_credentials")
    locked = api.post("/v1/auth/login", {"email": email, "password": "correct horse battery"})
    assert_error(locked, 429, "too_many_login_attempts", "rate_limit_error")
    assert 1 <= int(locked.headers["retry-after"]) <= 3
    # Another email is not affected.
    other = f"free-{uuid.uuid4().hex[:8]}@example.com"
    assert register_from(api, "203.0.113.11", other).status_code == 201
    assert api.post("/v1/auth/login", {"email": other, "password": "correct horse battery"}).status_code == 200
    time.sleep(int(locked.headers["retry-after"]) + 0.2)
    assert api.post("/v1/auth/login", {"email": email.upper(), "password": "correct horse battery"}).status_code == 200


def test_successful_logins_do_not_count_as_failures(throttled_api):
    api = throttled_api
    email = f"regular-{uuid.uuid4().hex[:8]}@example.com"
    assert register_from(api, "203.0.113.12", email).status_code == 201
    for _ in range(8):
        assert api.post("/v1/auth/login", {"email": email, "password": "correct horse battery"}).status_code == 200


def test_a_burst_of_wrong_passwords_cannot_pass_the_limit(throttled_api):
    api = throttled_api
    email = f"burst-{uuid.uuid4().hex[:8]}@example.com"
    assert register_from(api, "203.0.113.13", email).status_code == 201

    def attempt(_):
        return Api(api.worker).post("/v1/auth/login", {"email": email, "password": "wrong password!"}).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(attempt, range(12)))
    assert statuses == [401] * 5 + [429] * 7


def test_registrations_are_limited_per_client_ip(throttled_api):
    api = throttled_api
    ip = f"198.51.100.{uuid.uuid4().int % 200 + 1}"
    for _ in range(3):
        assert register_from(api, ip).status_code == 201
    refused = register_from(api, ip)
    assert_error(refused, 429, "too_many_registrations", "rate_limit_error")
    assert int(refused.headers["retry-after"]) >= 1
    assert register_from(api, "192.0.2.77").status_code == 201, "another address is not affected"
    time.sleep(int(refused.headers["retry-after"]) + 0.2)
    assert register_from(api, ip).status_code == 201


def test_an_ipv6_client_is_one_client_across_its_64(throttled_api):
    api = throttled_api
    block = f"2001:db8:{uuid.uuid4().int % 65536:x}:{uuid.uuid4().int % 65536:x}"
    for address in (f"{block}::1", f"{block}::2", f"{block}:ffff:ffff:ffff:ffff"):
        assert register_from(api, address).status_code == 201
    refused = register_from(api, f"{block}:abcd::9")
    assert_error(refused, 429, "too_many_registrations", "rate_limit_error")
    neighbour = block.rsplit(":", 1)[0] + f":{(int(block.rsplit(':', 1)[1], 16) + 1) % 65536:x}"
    assert register_from(api, f"{neighbour}::1").status_code == 201, "the next /64 is another client"


# --- Idempotency-Key ---

def test_same_key_same_body_replays_without_a_second_call_or_charge(api, fake_gemini):
    key = api.live_key()
    t = tag()
    body = {"prompt": f"once {t}", "n": 2}
    first = api.post("/v1/generate", body, token=key, headers={"Idempotency-Key": f"idem-{t}"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = api.post("/v1/generate", {"n": 2, "prompt": f"once {t}"}, token=key, headers={"Idempotency-Key": f"idem-{t}"})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert unsigned(again.json()) == unsigned(first.json())
    assert len(fake_gemini.requests_with(t)) == 2, "two images, generated once"
    assert usage_today(api, key) == 2


def test_same_key_with_another_body_or_route_is_422(api):
    key = api.test_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    assert api.post("/v1/generate", {"prompt": f"a {t}"}, token=key, headers=headers).status_code == 200
    assert_error(api.post("/v1/generate", {"prompt": f"b {t}"}, token=key, headers=headers), 422,
                 "idempotency_key_reused", param="Idempotency-Key")
    assert_error(api.post("/v1/images/generations", {"prompt": f"a {t}"}, token=key, headers=headers), 422,
                 "idempotency_key_reused")


def without_urls(generation: dict) -> dict:
    """A generation's answer less its signed URLs, which are signed anew on every answer."""
    return {**generation, "url": None, "images": [{**i, "url": None} for i in generation["images"]]}


def test_same_key_while_the_first_is_running_is_409(api, fake_gemini):
    key = api.live_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    body = {"prompt": f"slow {t} #hold:{t}"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambda: Api(api.worker).post("/v1/generate", body, token=key, headers=headers))
        try:
            # The first is upstream (the fake holds it), so it is certainly still running.
            fake_gemini.wait_for_calls(t, 1)
            second = Api(api.worker).post("/v1/generate", body, token=key, headers=headers)
        finally:
            fake_gemini.release(t)
        first = first.result()
    assert first.status_code == 200, first.text
    assert_error(second, 409, "idempotency_in_progress", "conflict_error")
    third = api.post("/v1/generate", body, token=key, headers=headers)
    assert third.headers.get("idempotent-replayed") == "true"
    assert without_urls(third.json()) == without_urls(first.json()), "the same generation, with URLs signed anew"
    assert usage_today(api, key) == 1


def test_two_concurrent_requests_with_one_key_generate_once(api, fake_gemini):
    key = api.live_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    body = {"prompt": f"race {t} #slow:1"}
    with fake_gemini.expect(t, calls=1):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: Api(api.worker).post("/v1/generate", body, token=key, headers=headers),
                                    range(2)))
    # 409 while the first runs; a replay (200) if the second came after it ended.
    assert sorted(r.status_code for r in results) in ([200, 409], [200, 200])
    assert usage_today(api, key) == 1


def test_server_errors_are_not_stored_so_a_retry_really_retries(api, fake_gemini):
    key = api.live_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    body = {"prompt": f"flaky {t} #status:500:3:{t}"}
    assert_error(api.post("/v1/generate", body, token=key, headers=headers), 502, "upstream_error")
    retry = api.post("/v1/generate", body, token=key, headers=headers)
    assert retry.status_code == 200, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert len(fake_gemini.requests_with(t)) == 4


def test_client_errors_after_execution_are_replayed(api, fake_gemini):
    key = api.live_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    body = {"prompt": f"refused {t} #block"}
    first = api.post("/v1/generate", body, token=key, headers=headers)
    assert_error(first, 400, "content_policy_violation")
    again = api.post("/v1/generate", body, token=key, headers=headers)
    assert again.status_code == 400 and again.headers["idempotent-replayed"] == "true"
    assert len(fake_gemini.requests_with(t)) == 1


def test_validation_failures_do_not_claim_the_key(api):
    key = api.test_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    assert_error(api.post("/v1/generate", {"prompt": ""}, token=key, headers=headers), 422, "prompt_required")
    assert api.post("/v1/generate", {"prompt": f"valid {t}"}, token=key, headers=headers).status_code == 200


def test_records_expire_after_24_hours(api):
    key = api.test_key()
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    assert api.post("/v1/generate", {"prompt": f"old {t}"}, token=key, headers=headers).status_code == 200
    day_ago = int(time.time() * 1000) - 25 * 3600 * 1000
    api.worker.sql("UPDATE idempotency_keys SET created_at_ms = ? WHERE idempotency_key = ?", (day_ago, f"idem-{t}"))
    fresh = api.post("/v1/generate", {"prompt": f"new {t}"}, token=key, headers=headers)
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["prompt"] == f"new {t}"


def test_keys_are_scoped_to_the_account(api):
    t = tag()
    headers = {"Idempotency-Key": f"idem-{t}"}
    first = api.post("/v1/generate", {"prompt": f"mine {t}"}, token=api.test_key(), headers=headers)
    other = api.post("/v1/generate", {"prompt": f"mine {t}"}, token=api.test_key(), headers=headers)
    assert first.status_code == other.status_code == 200
    assert "idempotent-replayed" not in other.headers and other.json()["id"] != first.json()["id"]


def test_key_creation_is_idempotent_and_the_replay_does_not_show_the_key_again(api):
    token = api.token()
    headers = {"Idempotency-Key": f"idem-{tag()}"}
    first = api.post("/v1/keys", {"name": "deploy", "mode": "test"}, token=token, headers=headers)
    again = api.post("/v1/keys", {"mode": "test", "name": "deploy"}, token=token, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["key"].startswith("nb_test_") and "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == {**first.json(), "key": None}, "the same key record; the key is stored nowhere"
    assert len(api.get("/v1/keys", token=token).json()["data"]) == 1
    assert_error(api.post("/v1/keys", {"name": "other"}, token=token, headers=headers), 422, "idempotency_key_reused")


@pytest.mark.parametrize("value", ["x" * 256, "tab\there"])
def test_invalid_idempotency_keys_are_400(api, value):
    r = api.post("/v1/generate", {"prompt": "x"}, token=api.test_key(), headers={"Idempotency-Key": value})
    assert_error(r, 400, "invalid_idempotency_key", param="Idempotency-Key")


@pytest.fixture(scope="module")
def unlimited_api(worker_factory):
    return Api(worker_factory("no-rate-limit", vars={"RATE_LIMIT_PER_MINUTE": "0"}))


def test_a_rate_limit_of_0_switches_the_limiter_off(unlimited_api):
    api = unlimited_api
    key = api.test_key()
    answers = [api.post("/v1/generate", {"prompt": f"unlimited {i}"}, token=key) for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert not any(name.startswith("x-ratelimit") for name in answers[-1].headers), "no limiter, no headers"
    assert answers[-1].headers["x-quota-remaining-images"] == "95", "the daily quota still holds"
    # No headers because no call was made, not because the limiter failed (that is logged).
    assert "rate limiter unavailable" not in api.worker.log_path.read_text(errors="replace")
