"""Accounts: register, login, /me; hashing and tokens as stored and as presented."""

import concurrent.futures
import uuid

import pytest

from jwt_util import make_jwt
from helpers import Api, assert_error, JWT_SECRET


def unique_email(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


# --- register ---

def test_register_returns_user_and_token(api):
    email = unique_email()
    r = api.post("/v1/auth/register", {"email": email, "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_in"}
    assert set(body["user"]) == {"id", "email", "created_at"}
    assert body["user"]["email"] == email
    uuid.UUID(body["user"]["id"])
    assert body["user"]["created_at"].endswith("Z")
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 7 * 24 * 3600
    me = api.get("/v1/auth/me", token=body["access_token"])
    assert me.status_code == 200
    assert me.json() == {**body["user"], "role": "user"}


def test_password_is_stored_as_bcrypt_at_the_configured_cost(api):
    user = api.register(password="correct horse battery")
    rows = api.worker.sql("SELECT password_hash FROM users WHERE id = ?", (user["user"]["id"],))
    stored = rows[0]["password_hash"]
    assert stored.startswith("$2b$04$") and len(stored) == 60
    assert "correct horse battery" not in stored


def test_email_is_trimmed_and_lowercased(api):
    local = uuid.uuid4().hex[:10]
    r = api.post("/v1/auth/register", {"email": f"  Mixed.{local}@Example.COM ", "password": "password123"})
    assert r.status_code == 201
    assert r.json()["user"]["email"] == f"mixed.{local}@example.com"


def test_duplicate_email_is_409_case_insensitively(api):
    email = unique_email()
    api.register(email=email)
    r = api.post("/v1/auth/register", {"email": email.upper(), "password": "another password"})
    assert_error(r, 409, "email_taken", "conflict_error", param="email")


def test_racing_registrations_of_one_email_give_one_201(api):
    email = unique_email("race")

    def attempt(_):
        return Api(api.worker).post("/v1/auth/register", {"email": email, "password": "password123"}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(attempt, range(8)))
    assert codes == [201] + [409] * 7
    assert api.worker.sql("SELECT COUNT(*) AS n FROM users WHERE email = ?", (email,))[0]["n"] == 1


@pytest.mark.parametrize("email", ["plain", "a@b", "a b@c.com", "@example.com", "a@@example.com", ""])
def test_bad_email_is_422(api, email):
    r = api.post("/v1/auth/register", {"email": email, "password": "password123"})
    assert_error(r, 422, "invalid_email", "invalid_request_error", param="email")


def test_short_password_is_422(api):
    r = api.post("/v1/auth/register", {"email": unique_email(), "password": "1234567"})
    assert_error(r, 422, "password_too_short", param="password")


def test_password_over_72_bytes_is_422_not_truncated(api):
    r = api.post("/v1/auth/register", {"email": unique_email(), "password": "x" * 73})
    assert_error(r, 422, "password_too_long", param="password")
    r = api.post("/v1/auth/register", {"email": unique_email(), "password": "é" * 37})  # 74 bytes
    assert_error(r, 422, "password_too_long", param="password")
    assert api.post("/v1/auth/register", {"email": unique_email(), "password": "x" * 72}).status_code == 201


@pytest.mark.parametrize("body,code,param", [
    ({"password": "password123"}, "email_required", "email"),
    ({"email": "a@example.com"}, "password_required", "password"),
    ({}, "email_required", "email"),
    ({"email": 5, "password": "password123"}, "invalid_type", "email"),
    ({"email": "a@example.com", "password": "password123", "admin": True}, "unknown_parameter", "admin"),
])
def test_missing_or_ill_typed_fields_are_422(api, body, code, param):
    assert_error(api.post("/v1/auth/register", body), 422, code, param=param)


# --- login ---

def test_login_with_right_password(api):
    user = api.register(password="correct horse battery")
    r = api.post("/v1/auth/login", {"email": user["user"]["email"].upper(), "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 604800
    assert api.get("/v1/auth/me", token=body["access_token"]).json()["id"] == user["user"]["id"]


def test_wrong_password_and_unknown_email_are_the_same_401(api):
    user = api.register(password="correct horse battery")
    wrong = api.post("/v1/auth/login", {"email": user["user"]["email"], "password": "wrong horse battery"})
    unknown = api.post("/v1/auth/login", {"email": unique_email("nobody"), "password": "correct horse battery"})
    e1 = assert_error(wrong, 401, "invalid_credentials", "authentication_error")
    e2 = assert_error(unknown, 401, "invalid_credentials", "authentication_error")
    assert {k: v for k, v in e1.items() if k != "request_id"} == {k: v for k, v in e2.items() if k != "request_id"}


def test_login_missing_fields_is_422(api):
    assert_error(api.post("/v1/auth/login", {"email": "a@example.com"}), 422, "password_required", param="password")


# --- /me ---

def test_me_without_token_is_401(api):
    assert_error(api.get("/v1/auth/me"), 401, "missing_authorization", "authentication_error")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "token-without-scheme"])
def test_me_with_malformed_header_is_401(api, header):
    assert_error(api.get("/v1/auth/me", headers={"Authorization": header}), 401, "malformed_authorization")


def test_me_with_garbage_token_is_401(api):
    assert_error(api.get("/v1/auth/me", token="not.a.jwt"), 401, "invalid_token")


def test_me_with_expired_token_is_401_token_expired(api):
    user = api.register()
    expired = make_jwt(JWT_SECRET, user["user"]["id"], exp_offset=-3600)
    assert_error(api.get("/v1/auth/me", token=expired), 401, "token_expired", "authentication_error")


def test_me_with_tampered_token_is_401(api):
    user = api.register()
    header, claims, signature = user["access_token"].split(".")
    other = api.register()
    forged_claims = other["access_token"].split(".")[1]
    assert_error(api.get("/v1/auth/me", token=f"{header}.{forged_claims}.{signature}"), 401, "invalid_token")
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert_error(api.get("/v1/auth/me", token=f"{header}.{claims}.{flipped}"), 401, "invalid_token")


def test_me_with_token_from_another_secret_or_issuer_is_401(api):
    user = api.register()
    assert_error(api.get("/v1/auth/me", token=make_jwt("x" * 64, user["user"]["id"])), 401, "invalid_token")
    assert_error(api.get("/v1/auth/me", token=make_jwt(JWT_SECRET, user["user"]["id"], iss="evil")), 401, "invalid_token")
    assert_error(api.get("/v1/auth/me", token=make_jwt(JWT_SECRET, user["user"]["id"], aud="other")), 401, "invalid_token")
    # alg=none style downgrade: unsigned token
    good = make_jwt(JWT_SECRET, user["user"]["id"])
    assert_error(api.get("/v1/auth/me", token=good.rsplit(".", 1)[0] + "."), 401, "invalid_token")


def test_me_for_a_user_that_does_not_exist_is_401(api):
    assert_error(api.get("/v1/auth/me", token=make_jwt(JWT_SECRET, str(uuid.uuid4()))), 401, "invalid_token")


# --- misconfiguration ---

@pytest.fixture(scope="module")
def no_secret_api(worker_factory):
    return Api(worker_factory("no-jwt-secret", secrets={"JWT_SECRET": None}))


def test_missing_jwt_secret_is_500_server_misconfigured(no_secret_api):
    for r in [
        no_secret_api.post("/v1/auth/register", {"email": unique_email(), "password": "password123"}),
        no_secret_api.post("/v1/auth/login", {"email": unique_email(), "password": "password123"}),
        no_secret_api.get("/v1/auth/me", token="whatever"),
    ]:
        error = assert_error(r, 500, "server_misconfigured", "api_error")
        assert "JWT_SECRET" in error["message"]
    assert no_secret_api.get("/health").status_code == 200
