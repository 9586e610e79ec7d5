"""History and usage: pagination across pages, date ranges, and who sees what."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from helpers import assert_error, fetch, tag



def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def days_ago(n: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=n)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def account(api):
    """One account, two test keys, five generations (3 on key A, 2 on key B)."""
    token = api.token()
    key_a = api.create_key(token, mode="test", name="A")
    key_b = api.create_key(token, mode="test", name="B")
    ids = []
    for key, count in ((key_a, 3), (key_b, 2)):
        for i in range(count):
            r = api.post("/v1/generate", {"prompt": f"history {i} {tag()}"}, token=key["key"])
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
    return {"token": token, "a": key_a, "b": key_b, "ids": ids}


def test_account_sees_every_key_newest_first(api, account):
    r = api.get("/v1/generations", token=account["token"])
    assert r.status_code == 200
    body = r.json()
    assert [g["id"] for g in body["data"]] == list(reversed(account["ids"]))
    assert body["has_more"] is False and body["object"] == "list"
    assert body["first_id"] == account["ids"][-1] and body["last_id"] == account["ids"][0]
    item = body["data"][0]
    assert item["status"] == "succeeded" and item["api_key_id"] == account["b"]["id"]
    assert item["images"][0]["mime_type"] == "image/png"
    assert fetch(api, item["url"]).status_code == 200, "history URLs are freshly signed"


def test_a_key_sees_only_its_own(api, account):
    data = api.get("/v1/generations", token=account["a"]["key"]).json()["data"]
    assert [g["id"] for g in data] == list(reversed(account["ids"][:3]))


def test_pagination_walks_every_page_exactly_once(api, account):
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=2" + (f"&starting_after={cursor}" if cursor else "")
        body = api.get(f"/v1/generations{query}", token=account["token"]).json()
        pages += 1
        seen += [g["id"] for g in body["data"]]
        assert len(body["data"]) <= 2
        if not body["has_more"]:
            break
        cursor = body["last_id"]
    assert pages == 3
    assert seen == list(reversed(account["ids"]))


@pytest.mark.parametrize("query,status,code,param", [
    ("?limit=0", 422, "out_of_range", "limit"),
    ("?limit=101", 422, "out_of_range", "limit"),
    ("?limit=abc", 422, "invalid_type", "limit"),
    ("?starting_after=gen_00000000-0000-4000-8000-000000000000", 400, "invalid_value", "starting_after"),
])
def test_bad_pagination_parameters(api, account, query, status, code, param):
    assert_error(api.get(f"/v1/generations{query}", token=account["token"]), status, code, param=param)


def test_someone_elses_cursor_is_refused_and_their_history_is_not_listed(api, account):
    stranger = api.test_key()
    theirs = api.post("/v1/generate", {"prompt": "a stranger's own"}, token=stranger)
    assert theirs.status_code == 200
    mine_only = account["ids"][0]
    assert_error(api.get(f"/v1/generations?starting_after={mine_only}", token=stranger), 400, "invalid_value")
    listed = api.get("/v1/generations?limit=100", token=stranger).json()["data"]
    assert [g["id"] for g in listed] == [theirs.json()["id"]], "only the stranger's own generation"


def test_get_one_generation_and_ownership(api, account):
    gen_id = account["ids"][0]
    r = api.get(f"/v1/generations/{gen_id}", token=account["token"])
    assert r.status_code == 200 and r.json()["id"] == gen_id
    assert api.get(f"/v1/generations/{gen_id}", token=account["a"]["key"]).status_code == 200
    assert_error(api.get(f"/v1/generations/{gen_id}", token=account["b"]["key"]), 404, "not_found")
    assert_error(api.get(f"/v1/generations/{gen_id}", token=api.token()), 404, "not_found")
    assert_error(api.get(f"/v1/generations/{gen_id}", token=api.test_key()), 404, "not_found")
    assert_error(api.get(f"/v1/generations/gen_{uuid.uuid4()}", token=account["token"]), 404, "not_found")
    assert_error(api.get(f"/v1/generations/{gen_id}"), 401, "missing_authorization")


def test_failed_generations_show_their_error(api):
    key = api.live_key()
    api.post("/v1/generate", {"prompt": f"no {tag()} #block"}, token=key)
    [item] = api.get("/v1/generations", token=key).json()["data"]
    assert item["status"] == "failed" and item["error"] == {
        "code": "content_policy_violation",
        "message": "the request was refused by the image model: the prompt was blocked (SAFETY)"}
    assert item["images"] == [] and item["url"] is None


# --- usage ---

def test_usage_for_a_key_defaults_to_30_days(api, account):
    body = api.get("/v1/usage", token=account["a"]["key"]).json()
    assert body["object"] == "usage" and body["to"] == today() and body["from"] == days_ago(29)
    [key] = body["data"]
    assert key["api_key_id"] == account["a"]["id"]
    assert len(key["days"]) == 30 and key["days"][-1] == {"date": today(), "images": 3}
    assert (key["images_today"], key["daily_image_quota"], key["remaining_today"], key["total_images"]) == (3, 100, 97, 3)


def test_usage_for_an_account_lists_every_key(api, account):
    body = api.get("/v1/usage", token=account["token"]).json()
    by_name = {k["name"]: k for k in body["data"]}
    assert set(by_name) == {"A", "B"}
    assert by_name["A"]["images_today"] == 3 and by_name["B"]["images_today"] == 2


def test_usage_ranges(api, account):
    api.worker.sql(
        "INSERT INTO usage (api_key_id, usage_date, image_count) VALUES (?, ?, 7), (?, ?, 11)",
        (account["b"]["id"], days_ago(3), account["b"]["id"], days_ago(40)))
    body = api.get(f"/v1/usage?from={days_ago(3)}&to={today()}", token=account["b"]["key"]).json()
    [key] = body["data"]
    assert [d["date"] for d in key["days"]] == [days_ago(3), days_ago(2), days_ago(1), today()]
    assert [d["images"] for d in key["days"]] == [7, 0, 0, 2]
    assert key["total_images"] == 9
    old = api.get(f"/v1/usage?from={days_ago(45)}&to={days_ago(35)}", token=account["b"]["key"]).json()["data"][0]
    assert old["total_images"] == 11 and old["images_today"] == 2, "today's figures do not depend on the range"


@pytest.mark.parametrize("query,param", [
    ("?from=2026-02-30", "from"),
    ("?to=tomorrow", "to"),
    (f"?from={today()}&to={days_ago(1)}", "from"),
    ("?from=2020-01-01&to=2026-01-01", "from"),
])
def test_bad_usage_ranges_are_400(api, account, query, param):
    assert_error(api.get(f"/v1/usage{query}", token=account["token"]), 400, "invalid_value", param=param)


def test_usage_needs_credentials(api):
    assert_error(api.get("/v1/usage"), 401, "missing_authorization")
    assert_error(api.get("/v1/usage", token="nb_test_00000000000000000000000000000000"), 401, "invalid_api_key")
