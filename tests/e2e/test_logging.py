"""What the Worker logs: one JSON line per request, and a 5xx logged exactly once, with its
request id and cause, while the client sees only the generic envelope."""

from helpers import Api, assert_error


def test_a_d1_failure_is_one_log_line_with_request_id_and_cause_and_a_bare_500(worker_factory):
    broken = worker_factory("broken-d1")
    api = Api(broken)
    token = api.token()
    broken.sql("DROP TABLE usage")  # the injected D1 failure: every usage query now fails

    r = api.get("/v1/usage", token=token)
    error = assert_error(r, 500, "internal_error", "api_error")
    assert error["message"] == "an internal error occurred"
    for leak in ("usage", "table", "sql", "d1"):
        assert leak not in error["message"].lower(), r.text

    request_id = r.headers["x-request-id"]
    broken.request_log(request_id)  # waits until the line is written
    with_id = broken.log_entries(request_id)
    assert len(with_id) == 1, with_id
    [line] = with_id
    assert (line["level"], line["event"], line["method"], line["path"], line["status"], line["code"]) == (
        "error", "request", "GET", "/v1/usage", 500, "internal_error")
    assert "no such table: usage" in line["cause"], line
    assert len(broken.log_entries("no such table")) == 1, "the cause is logged once, on the request's line"


def test_a_client_error_logs_no_cause(api):
    r = api.get("/v1/usage", token="nb_test_" + "0" * 32)
    assert_error(r, 401, "invalid_api_key")
    line = api.worker.request_log(r.headers["x-request-id"])
    assert line["level"] == "info" and line["status"] == 401 and "cause" not in line and "code" not in line
