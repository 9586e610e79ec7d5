"""The request pipeline every route shares: request ids, envelopes, 404/405/413/415/400."""

import re
from helpers import assert_error


REQ_ID = re.compile(r"^req_[0-9a-f]{24}$")


def test_health_reports_d1(api):
    r = api.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "d1": "ok"}
    assert REQ_ID.match(r.headers["x-request-id"])


def test_every_response_carries_a_fresh_request_id(api):
    ids = {api.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(REQ_ID.match(i) for i in ids)


def test_a_sane_caller_request_id_is_echoed_and_an_insane_one_replaced(api):
    r = api.get("/nope", headers={"x-request-id": "client-trace-42"})
    assert r.headers["x-request-id"] == "client-trace-42"
    assert r.json()["error"]["request_id"] == "client-trace-42"
    r = api.get("/health", headers={"x-request-id": "bad id with spaces"})
    assert REQ_ID.match(r.headers["x-request-id"])


def test_unknown_route_is_404_envelope(api):
    for path in ["/nope", "/v1/keys/a/b", "/v1/", "/health/", "/index.json"]:
        assert_error(api.get(path), 404, "route_not_found", "not_found_error")


def test_wrong_method_is_405_with_allow(api):
    r = api.request("PUT", "/health")
    assert_error(r, 405, "method_not_allowed", "invalid_request_error")
    assert r.headers["allow"] == "GET, HEAD"
    r = api.get("/v1/auth/register")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = api.request("PATCH", "/v1/keys")
    assert r.headers["allow"] == "GET, HEAD, POST"


def test_malformed_json_is_400(api):
    r = api.request("POST", "/v1/auth/register", data='{"email": "a@b.com",', headers={"content-type": "application/json"})
    error = assert_error(r, 400, "invalid_json", "invalid_request_error")
    assert "line 1" in error["message"]
    r = api.request("POST", "/v1/auth/register", data="[1, 2]", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")


def test_non_json_content_type_is_415(api):
    r = api.request("POST", "/v1/auth/register", data="email=a@b.com&password=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(r, 415, "unsupported_media_type", "invalid_request_error")


def test_body_over_64_kib_is_413(api):
    big = '{"email": "' + "a" * (64 * 1024) + '@x.com", "password": "password123"}'
    r = api.request("POST", "/v1/auth/register", data=big, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large", "invalid_request_error")


def test_body_at_the_limit_is_read(api):
    # Just under 64 KiB: parsed and rejected for its content, not its size.
    padding = "a" * (64 * 1024 - 100)
    body = '{"email": "x@example.com", "password": "' + padding + '"}'
    assert len(body) <= 64 * 1024
    r = api.request("POST", "/v1/auth/register", data=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "password_too_long", param="password")


def test_the_console_is_served_at_the_root_from_static_assets(api):
    r = api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>NanoBanana Edge console</title>" in r.text
    for asset, kind in [("/app.js", "javascript"), ("/app.css", "text/css")]:
        served = api.get(asset)
        assert served.status_code == 200 and kind in served.headers["content-type"], asset
    assert "cdn" not in r.text.lower() and "https://" not in r.text, "everything is served by the Worker"
