"""API keys: create, list, revoke, expiry, and API-key authentication."""

import re
import uuid

import pytest
from helpers import assert_error


KEY_FORMAT = re.compile(r"^nb_(live|test)_[0-9a-f]{32}$")
LIST_FIELDS = {"id", "name", "prefix", "mode", "is_active", "last_used_at", "expires_at", "revoked_at",
               "daily_image_quota", "daily_budget_usd", "created_at"}


def test_create_returns_the_full_key_once(api):
    token = api.token()
    r = api.post("/v1/keys", {"name": "CI", "mode": "live"}, token=token)
    assert r.status_code == 201, r.text
    body = r.json()
    assert KEY_FORMAT.match(body["key"]) and body["key"].startswith("nb_live_")
    assert body["prefix"] == body["key"][:12]
    assert body["name"] == "CI" and body["mode"] == "live" and body["is_active"] is True
    assert body["last_used_at"] is None and body["expires_at"] is None
    uuid.UUID(body["id"])
    listed = api.get("/v1/keys", token=token).json()["data"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and set(listed[0]) == LIST_FIELDS
    assert body["key"] not in api.get("/v1/keys", token=token).text


def test_default_name_and_mode(api):
    body = api.create_key(api.token())
    assert body["name"] == "Default key" and body["mode"] == "live"


def test_test_mode_keys(api):
    body = api.create_key(api.token(), mode="test")
    assert body["key"].startswith("nb_test_") and body["mode"] == "test"


def test_keys_need_an_account_token(api):
    assert_error(api.post("/v1/keys", {}), 401, "missing_authorization")
    assert_error(api.post("/v1/keys", {}, token="garbage"), 401, "invalid_token")
    assert_error(api.get("/v1/keys", token="garbage"), 401, "invalid_token")


def test_list_is_empty_for_a_new_account(api):
    r = api.get("/v1/keys", token=api.token())
    assert r.status_code == 200 and r.json()["data"] == []


def test_list_shows_only_the_prefix_newest_first_and_only_mine(api):
    token = api.token()
    first = api.create_key(token, name="first")
    second = api.create_key(token, name="second")
    api.create_key(api.token(), name="someone else's")
    listed = api.get("/v1/keys", token=token).json()["data"]
    assert [k["name"] for k in listed] == ["second", "first"]
    assert [k["prefix"] for k in listed] == [second["key"][:12], first["key"][:12]]
    for k in listed:
        assert set(k) == LIST_FIELDS


@pytest.mark.parametrize("body,status,code,param", [
    ({"mode": "prod"}, 400, "invalid_value", "mode"),
    ({"name": ""}, 422, "invalid_name", "name"),
    ({"name": "x" * 101}, 422, "invalid_name", "name"),
    ({"name": 7}, 422, "invalid_type", "name"),
    ({"expires_in_days": 0}, 422, "out_of_range", "expires_in_days"),
    ({"expires_in_days": 3651}, 422, "out_of_range", "expires_in_days"),
    ({"expires_in_days": "30"}, 422, "invalid_type", "expires_in_days"),
    ({"daily_image_quota": 0}, 422, "out_of_range", "daily_image_quota"),
    ({"scopes": "all"}, 422, "unknown_parameter", "scopes"),
])
def test_invalid_key_fields(api, body, status, code, param):
    assert_error(api.post("/v1/keys", body, token=api.token()), status, code, param=param)


def test_expiry_and_quota_are_stored(api):
    body = api.create_key(api.token(), expires_in_days=30, daily_image_quota=7)
    assert body["daily_image_quota"] == 7
    assert body["expires_at"] > body["created_at"]


def test_delete_revokes_and_the_very_next_request_is_refused(api):
    token = api.token()
    key = api.create_key(token, mode="test")
    # A valid key gets past authentication to validation (422 for a missing prompt).
    assert_error(api.post("/v1/generate", {}, token=key["key"]), 422, "prompt_required")
    r = api.delete(f"/v1/keys/{key['id']}", token=token)
    assert r.status_code == 204 and r.content == b""
    assert_error(api.post("/v1/generate", {}, token=key["key"]), 401, "revoked_api_key", "authentication_error")
    listed = api.get("/v1/keys", token=token).json()["data"][0]
    assert listed["is_active"] is False and listed["revoked_at"] is not None
    # Revoking again is still 204 and keeps the first revocation time.
    assert api.delete(f"/v1/keys/{key['id']}", token=token).status_code == 204
    assert api.get("/v1/keys", token=token).json()["data"][0]["revoked_at"] == listed["revoked_at"]


def test_delete_unknown_key_is_404(api):
    assert_error(api.delete(f"/v1/keys/{uuid.uuid4()}", token=api.token()), 404, "not_found", "not_found_error")


def test_delete_another_users_key_is_404_and_leaves_it_working(api):
    owner = api.token()
    key = api.create_key(owner, mode="test")
    assert_error(api.delete(f"/v1/keys/{key['id']}", token=api.token()), 404, "not_found")
    assert_error(api.post("/v1/generate", {}, token=key["key"]), 422, "prompt_required")


def test_expired_key_is_refused(api):
    key = api.create_key(api.token(), mode="test", expires_in_days=1)
    assert_error(api.post("/v1/generate", {}, token=key["key"]), 422, "prompt_required")
    api.worker.sql("UPDATE api_keys SET expires_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", (key["id"],))
    assert_error(api.post("/v1/generate", {}, token=key["key"]), 401, "expired_api_key", "authentication_error")


@pytest.mark.parametrize("credential,code", [
    ("nb_live_0123", "malformed_api_key"),
    ("nb_live_0123456789ABCDEF0123456789abcdef", "malformed_api_key"),
    ("sk-proj-abcdef", "malformed_api_key"),
    ("nb_live_00000000000000000000000000000000", "invalid_api_key"),
    ("nb_test_00000000000000000000000000000000", "invalid_api_key"),
])
def test_bad_keys_are_401_with_their_own_code(api, credential, code):
    assert_error(api.post("/v1/generate", {"prompt": "x"}, token=credential), 401, code, "authentication_error")


def test_missing_key_is_401(api):
    assert_error(api.post("/v1/generate", {"prompt": "x"}), 401, "missing_authorization")


def test_jwt_and_api_key_are_not_interchangeable(api):
    token = api.token()
    key = api.create_key(token, mode="test")["key"]
    assert_error(api.post("/v1/generate", {"prompt": "x"}, token=token), 401, "jwt_not_accepted")
    assert_error(api.get("/v1/keys", token=key), 401, "api_key_not_accepted")
    assert_error(api.get("/v1/auth/me", token=key), 401, "api_key_not_accepted")


def test_no_raw_key_is_stored_anywhere_in_the_local_d1(api):
    token = api.token()
    keys = []
    for mode in ("live", "test"):  # created idempotently: the stored replay must not hold the key
        r = api.post("/v1/keys", {"mode": mode}, token=token, headers={"Idempotency-Key": f"{mode}-{uuid.uuid4()}"})
        assert r.status_code == 201
        keys.append(r.json()["key"])
    for key in keys:  # use them, so last_used_at, usage and idempotency paths run too
        r = api.post("/v1/generate", {"prompt": f"used {uuid.uuid4()}"}, token=key,
                     headers={"Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code == 200, r.text
    files = api.worker.d1_files()
    assert files, "the local D1 should have files"
    blob = b"".join(p.read_bytes() for p in files)
    for key in keys:
        assert key.encode() not in blob
        assert key[8:].encode() not in blob, "not even the secret part"
    import hashlib
    stored = {r["key_hash"] for r in api.worker.sql("SELECT key_hash FROM api_keys")}
    assert {hashlib.sha256(k.encode()).hexdigest() for k in keys} <= stored


def test_last_used_at_is_recorded_after_use(api):
    token = api.token()
    key = api.create_key(token, mode="test")
    api.post("/v1/generate", {}, token=key["key"])
    import time
    for _ in range(50):
        listed = api.get("/v1/keys", token=token).json()["data"][0]
        if listed["last_used_at"]:
            break
        time.sleep(0.1)
    assert listed["last_used_at"] is not None and listed["last_used_at"] >= key["created_at"]


def test_api_key_authentication_is_one_d1_query(api):
    key = api.create_key(api.token(), mode="test")["key"]
    # Authenticated, then refused by validation: the only D1 work is authentication.
    first = api.post("/v1/generate", {}, token=key)
    second = api.post("/v1/generate", {}, token=key)
    assert api.worker.request_log(first.headers["x-request-id"])["d1_queries"] == 1
    assert api.worker.request_log(second.headers["x-request-id"])["d1_queries"] == 1
    # A malformed key is refused before any query.
    bad = api.post("/v1/generate", {}, token="nb_live_nope")
    assert api.worker.request_log(bad.headers["x-request-id"])["d1_queries"] == 0
