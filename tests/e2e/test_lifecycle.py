"""Suspension and revocation stop queued work: a generation waiting on the queue when its
account is suspended or its key revoked never reaches Gemini, ends `canceled` with the
reason, gives its charge back at every level, leaves no input in R2, and a suspended
account is sent nothing."""

import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from fake_gemini import png_bytes
from helpers import (Api, data_url, generations_of, promote, Receiver, tag, usage_today, wait_for_queue_lines,
                     webhook_secret)

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def waiting(worker_factory):
    """Generations wait 5 seconds on the queue: room to suspend or revoke before they run."""
    api = Api(worker_factory("lifecycle", vars={"QUEUE_DELAY_SECONDS": "5", "ALLOW_TEST_DRILLS": "true"}))
    admin = api.register()
    promote(api.worker, admin["user"]["email"])
    api.admin = api.post("/v1/auth/login", {"email": admin["user"]["email"], "password": admin["password"]}).json()[
        "access_token"]
    return api


def today_counts(api: Api, user_id: str, key_ids: list[str]) -> dict:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    keys = {row["api_key_id"]: row["image_count"] for row in api.worker.sql(
        f"SELECT api_key_id, image_count FROM usage WHERE usage_date = ? AND api_key_id IN "
        f"({', '.join('?' * len(key_ids))})", (day, *key_ids))}
    account = api.worker.sql("SELECT live_images FROM account_usage WHERE user_id = ? AND usage_date = ?",
                             (user_id, day))
    deployment = api.worker.sql("SELECT live_images, test_images FROM deployment_usage WHERE usage_date = ?", (day,))
    return {"keys": keys, "account": account[0]["live_images"] if account else 0,
            "deployment": (deployment[0]["live_images"], deployment[0]["test_images"]) if deployment else (0, 0)}


def ended(api: Api, generation_id: str) -> tuple:
    [row] = api.worker.sql("SELECT status, error_code FROM generations WHERE id = ?", (generation_id,))
    return row["status"], row["error_code"]


def test_suspending_an_account_cancels_its_queued_generations_and_gives_their_charges_back(waiting, fake_gemini):
    api = waiting
    account = api.register()
    token = account["access_token"]
    webhook_secret(api, token)
    live = api.create_key(token, mode="live")
    test = api.create_key(token, mode="test")
    receiver = Receiver()
    t = tag()
    try:
        before = today_counts(api, account["user"]["id"], [live["id"], test["id"]])
        a = api.post("/v1/generate", {"prompt": f"queued {t}", "n": 2, "webhook_url": receiver.url},
                     token=live["key"], headers=ASYNC)
        b = api.post("/v1/generate", {"prompt": f"queued edit {t}", "images": [data_url(png_bytes(8, 8, (1, 2, 3)))]},
                     token=test["key"], headers=ASYNC)
        assert a.status_code == b.status_code == 202, (a.text, b.text)
        assert api.worker.r2_objects(f"inputs/{b.json()['id']}/"), "the edit's input waits in R2"
        charged = today_counts(api, account["user"]["id"], [live["id"], test["id"]])
        assert charged["keys"] == {live["id"]: 2, test["id"]: 1} and charged["account"] == 2

        r = api.post(f"/v1/admin/accounts/{account['user']['id']}", {"suspended": True}, token=api.admin)
        assert r.status_code == 200 and r.json()["suspended_at"]

        # At once, in the suspension's own batch: both end, every level gets its images back.
        for generation in (a, b):
            assert ended(api, generation.json()["id"]) == ("canceled", "account_suspended")
        after = today_counts(api, account["user"]["id"], [live["id"], test["id"]])
        assert after["keys"] == {live["id"]: 0, test["id"]: 0} and after["account"] == 0
        assert after["deployment"] == (before["deployment"][0], before["deployment"][1])
        assert api.worker.r2_objects(f"inputs/{b.json()['id']}/") == []

        # When the messages arrive, the consumer leaves them alone: nothing reaches Gemini.
        for generation in (a, b):
            [line] = wait_for_queue_lines(api.worker, generation.json()["id"], 1)
            assert line["outcome"] == "acked" and line.get("code") is None
        assert fake_gemini.calls(t) == 0
        assert receiver.deliveries == [], "a suspended account is sent nothing"
        assert today_counts(api, account["user"]["id"], [live["id"], test["id"]]) == after
    finally:
        receiver.close()


def test_a_suspension_that_lands_after_the_admin_batch_is_caught_by_the_consumer(waiting, fake_gemini):
    """Suspension written as the admin route's batch ran (or by another path): the
    consumer's take checks the account in the same statement and stops the generation."""
    api = waiting
    account = api.register()
    token = account["access_token"]
    webhook_secret(api, token)
    key = api.create_key(token, mode="live")
    receiver = Receiver()
    t = tag()
    try:
        r = api.post("/v1/generate", {"prompt": f"late {t}", "n": 3, "webhook_url": receiver.url},
                     token=key["key"], headers=ASYNC)
        assert r.status_code == 202 and usage_today(api, key["key"]) == 3
        api.worker.sql("UPDATE users SET suspended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                       (account["user"]["id"],))
        [line] = wait_for_queue_lines(api.worker, r.json()["id"], 1)
        assert (line["outcome"], line["code"]) == ("acked", "account_suspended")
        assert ended(api, r.json()["id"]) == ("canceled", "account_suspended")
        assert fake_gemini.calls(t) == 0
        counts = today_counts(api, account["user"]["id"], [key["id"]])
        assert counts["keys"] == {key["id"]: 0} and counts["account"] == 0
        time.sleep(1)
        assert receiver.deliveries == []
    finally:
        receiver.close()


def test_a_key_revoked_while_its_generation_waits_ends_it_canceled_and_says_so(waiting, fake_gemini):
    api = waiting
    account = api.register()
    token = account["access_token"]
    secret = webhook_secret(api, token)
    key = api.create_key(token, mode="live")
    receiver = Receiver()
    t = tag()
    try:
        r = api.post("/v1/generate", {"prompt": f"revoked {t}", "n": 2, "webhook_url": receiver.url},
                     token=key["key"], headers=ASYNC)
        assert r.status_code == 202
        assert api.delete(f"/v1/keys/{key['id']}", token=token).status_code == 204
        [line] = wait_for_queue_lines(api.worker, r.json()["id"], 1)
        assert (line["outcome"], line["code"]) == ("acked", "key_revoked")
        record = api.get(f"/v1/generations/{r.json()['id']}", token=token).json()
        assert record["status"] == "canceled" and record["error"]["code"] == "key_revoked"
        assert record["images"] == []
        assert fake_gemini.calls(t) == 0
        counts = today_counts(api, account["user"]["id"], [key["id"]])
        assert counts["keys"] == {key["id"]: 0} and counts["account"] == 0
        # The account is in good standing: its webhook hears that the generation was canceled.
        [delivery] = receiver.wait_for(1)
        event = Webhook(secret).verify(delivery["body"], delivery["headers"])
        assert event["type"] == "generation.canceled" and event["data"]["error"]["code"] == "key_revoked"
    finally:
        receiver.close()


def test_a_client_that_hangs_up_mid_call_still_gets_its_generation_finished_and_charged(api, fake_gemini):
    """Once Gemini has been called it bills the call: the Worker finishes the generation
    (stores the image, records it, charges it) even after the client has gone."""
    key = api.live_key()
    t = tag()
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            api.post("/v1/generate", {"prompt": f"hang up {t} #hold:{t}"}, token=key, timeout=2)
        fake_gemini.wait_for_calls(t, 1)
    finally:
        fake_gemini.release(t)
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = generations_of(api, key)
        if rows and rows[0]["status"] != "pending":
            break
        time.sleep(0.2)
    [row] = generations_of(api, key)
    assert row["status"] == "succeeded", row
    assert len(api.worker.r2_objects(f"images/{row['id']}/")) == 1
    assert usage_today(api, key) == 1
    history = api.get("/v1/generations", token=key).json()["data"]
    assert [g["id"] for g in history] == [row["id"]] and history[0]["images"]
