"""Asynchronous generations (issue 13): 202 and polling, Prefer: wait, signed webhooks
verified by the `standardwebhooks` package, retries with one webhook-id, duplicate queue
delivery generating once, cancellation, the quota under concurrency, failures with the
quota back. Everything runs on wrangler dev's local queue, whose consumer is this Worker."""

import concurrent.futures
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fake_gemini import png_bytes
from helpers import (Api, assert_error, data_url, poll, Receiver, tag, usage_today,
                     wait_for_queue_lines, webhook_secret)

ASYNC = {"Prefer": "respond-async"}


def test_respond_async_answers_202_then_polling_reaches_succeeded(api, fake_gemini):
    key = api.live_key()
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"async banana {t}", "n": 2}, token=key, headers=ASYNC)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["images"] == [] and body["id"].startswith("gen_")
    assert r.headers["location"] == f"/v1/generations/{body['id']}"
    assert r.headers["preference-applied"] == "respond-async"
    assert r.headers["x-quota-remaining-images"] == str(100 - 2), "reserved at once"
    done = poll(api, key, body["id"])
    assert done["status"] == "succeeded" and len(done["images"]) == 2
    assert api.http.get(done["images"][0]["url"], timeout=30).content.startswith(b"\x89PNG")
    assert len(fake_gemini.requests_with(t)) == 2
    assert usage_today(api, key) == 2


def test_prefer_wait_answers_200_when_fast_and_202_when_slow(api, fake_gemini):
    key = api.live_key()
    fast = api.post("/v1/generate", {"prompt": f"quick {tag()}"}, token=key, headers={"Prefer": "wait=20"})
    assert fast.status_code == 200, fast.text
    assert fast.json()["status"] == "succeeded" and fast.json()["url"]
    assert fast.headers["preference-applied"] == "wait=20"
    # Upstream holds its answer until the test lets it go, so a 202 here can only mean the
    # wait ran out first (no clock is read).
    t = tag()
    try:
        slow = api.post("/v1/generate", {"prompt": f"slow {t} #hold:{t}"}, token=key,
                        headers={"Prefer": "respond-async, wait=1"})
        assert slow.status_code == 202 and slow.json()["status"] in ("queued", "running")
        assert slow.headers["preference-applied"] == "respond-async, wait=1"
    finally:
        fake_gemini.release(t)
    assert poll(api, key, slow.json()["id"])["status"] == "succeeded"


def test_a_signed_webhook_verifies_with_the_standardwebhooks_package(api):
    account = api.register()
    secret = webhook_secret(api, account["access_token"])
    key = api.create_key(account["access_token"], mode="test")["key"]
    receiver = Receiver()
    try:
        r = api.post("/v1/generate", {"prompt": "announce me", "webhook_url": receiver.url}, token=key)
        assert r.status_code == 202, r.text
        [delivery] = receiver.wait_for(1)
        event = Webhook(secret).verify(delivery["body"], delivery["headers"])
        assert event["type"] == "generation.succeeded"
        assert event["data"]["id"] == r.json()["id"] and event["data"]["status"] == "succeeded"
        assert event["data"]["images"][0]["url"]
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43).verify(delivery["body"], delivery["headers"])
        tampered = delivery["body"].replace("succeeded", "failed", 1)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, delivery["headers"])
        record = poll(api, key, r.json()["id"])
        assert record["webhook"]["attempts"] == 1 and record["webhook"]["last_status"] == 204
        assert record["webhook"]["delivered_at"]
    finally:
        receiver.close()


def test_a_failing_receiver_gets_the_same_event_again_with_one_webhook_id(api):
    account = api.register()
    secret = webhook_secret(api, account["access_token"])
    key = api.create_key(account["access_token"], mode="test")["key"]
    receiver = Receiver(fail_first=2)
    try:
        r = api.post("/v1/generate", {"prompt": "retry me", "webhook_url": receiver.url}, token=key)
        deliveries = receiver.wait_for(3, timeout=45)
        assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
        assert len({d["body"] for d in deliveries}) == 1, "the same event every time"
        for delivery in deliveries:
            Webhook(secret).verify(delivery["body"], delivery["headers"])
        deadline = time.time() + 60
        while time.time() < deadline:
            record = api.get(f"/v1/generations/{r.json()['id']}", token=key).json()
            if record["webhook"]["delivered_at"]:
                break
            time.sleep(0.2)
        assert record["webhook"]["attempts"] == 3 and record["webhook"]["last_status"] == 204
    finally:
        receiver.close()


def test_after_a_rotation_both_secrets_sign_for_a_day(api):
    account = api.register()
    token = account["access_token"]
    first = api.post("/v1/webhook_secret", token=token)
    assert first.status_code == 201 and first.json()["version"] == 1
    old = first.json()["secret"]
    listed = api.get("/v1/webhook_secret", token=token).json()
    assert "secret" not in listed and listed["prefix"] == old[:12]
    rotated = api.post("/v1/webhook_secret", token=token)
    assert rotated.status_code == 200 and rotated.json()["version"] == 2 and rotated.json()["previous_valid_until"]
    new = rotated.json()["secret"]
    key = api.create_key(token, mode="test")["key"]
    receiver = Receiver()
    try:
        api.post("/v1/generate", {"prompt": "two signatures", "webhook_url": receiver.url}, token=key)
        [delivery] = receiver.wait_for(1)
        assert len(delivery["headers"]["webhook-signature"].split(" ")) == 2
        Webhook(new).verify(delivery["body"], delivery["headers"])
        Webhook(old).verify(delivery["body"], delivery["headers"])
    finally:
        receiver.close()


def test_webhook_urls_are_checked_and_need_a_secret(api):
    account = api.register()
    key = api.create_key(account["access_token"], mode="test")["key"]
    # Against a running Worker only loopback spellings (a validator still wrong could then
    # deliver to nothing but this machine); the private ranges are unit-tested in webhooks.rs.
    loopback = ["https://[::1]/hook", "http://[::1]:9/hook", "https://127.0.0.2/hook", "https://0x7f.1/hook",
                "https://2130706433/hook", "https://hooks.localhost/hook", "https://localhost./hook",
                "https://[::ffff:127.0.0.1]/hook", "https://%6cocalhost/hook"]
    for url in ["ftp://example.com", "http://example.com/hook", "https://" + "a" * 2050, "https://u:p@example.com/",
                *loopback]:
        assert_error(api.post("/v1/generate", {"prompt": "x", "webhook_url": url}, token=key), 422,
                     "invalid_webhook_url", param="webhook_url")
    assert_error(api.post("/v1/generate", {"prompt": "x", "webhook_url": "https://example.com/h"}, token=key), 409,
                 "webhook_secret_missing")
    assert_error(api.post("/v1/generate", {"prompt": "x", "response_format": "b64_json"}, token=key, headers=ASYNC),
                 422, "conflicting_parameters", param="response_format")
    assert_error(api.get("/v1/webhook_secret", token=account["access_token"]), 404, "not_found")
    assert usage_today(api, key) == 0


def test_an_upstream_failure_ends_failed_with_the_quota_back_and_a_failed_event(api):
    account = api.register()
    secret = webhook_secret(api, account["access_token"])
    key = api.create_key(account["access_token"], mode="live")["key"]
    receiver = Receiver()
    try:
        r = api.post("/v1/generate", {"prompt": f"refused {tag()} #block", "webhook_url": receiver.url}, token=key)
        assert r.status_code == 202
        record = poll(api, key, r.json()["id"])
        assert record["status"] == "failed"
        assert record["error"]["code"] == "content_policy_violation" and "blocked" in record["error"]["message"]
        assert usage_today(api, key) == 0
        [delivery] = receiver.wait_for(1)
        assert Webhook(secret).verify(delivery["body"], delivery["headers"])["type"] == "generation.failed"
    finally:
        receiver.close()


def test_an_async_edit_reads_its_inputs_from_the_queue_and_cleans_them_up(api, fake_gemini):
    key = api.live_key()
    t = tag()
    wide = png_bytes(16, 8, (1, 2, 3))
    r = api.post("/v1/generate", {"prompt": f"async edit {t}", "images": [data_url(wide)]}, token=key, headers=ASYNC)
    assert r.status_code == 202, r.text
    record = poll(api, key, r.json()["id"])
    assert record["status"] == "succeeded" and record["inputs"][0]["width"] == 16
    [sent] = fake_gemini.requests_with(t)
    assert len(sent["inputs"]) == 1 and "aspectRatio" not in sent["body"]["generationConfig"]["imageConfig"]
    assert api.worker.r2_objects(f"inputs/{record['id']}/") == [], "queued inputs are deleted once done"


def test_the_quota_holds_exactly_under_30_concurrent_async_requests(api):
    key = api.test_key(daily_image_quota=10)

    def one(i):
        return api.post("/v1/generate", {"prompt": f"burst {i}"}, token=key, headers=ASYNC)

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(one, range(30)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(202) == 10 and statuses.count(429) == 20, statuses
    for a in answers:
        if a.status_code == 429:
            assert a.json()["error"]["code"] == "daily_quota_exceeded"
    for a in answers:
        if a.status_code == 202:
            assert poll(api, key, a.json()["id"])["status"] == "succeeded"
    assert usage_today(api, key) == 10


@pytest.fixture(scope="module")
def delayed(worker_factory):
    """Generations wait 6 seconds on the queue (room to cancel: a cancel sent right after
    the 202 takes a few milliseconds, so this is hundreds of times what it needs), and every
    message is sent twice (a duplicate delivery drill)."""
    return Api(worker_factory("async-delayed", vars={
        "QUEUE_DELAY_SECONDS": "6", "QUEUE_DUPLICATE_DELIVERY": "true", "ALLOW_TEST_DRILLS": "true"}))


def test_a_message_delivered_twice_generates_once(delayed, fake_gemini):
    key = delayed.live_key()
    t = tag()
    r = delayed.post("/v1/generate", {"prompt": f"twice {t}"}, token=key, headers=ASYNC)
    assert r.status_code == 202
    generation_id = r.json()["id"]
    assert poll(delayed, key, generation_id)["status"] == "succeeded"
    # Both deliveries have been handled (each logs its line), and only one drew.
    lines = wait_for_queue_lines(delayed.worker, generation_id, 2)
    assert len({line["message_id"] for line in lines}) == 2, "two messages, not one logged twice"
    assert all(line["outcome"] == "acked" for line in lines)
    assert fake_gemini.calls(t) == 1
    assert usage_today(delayed, key) == 1


def test_cancel_a_queued_generation(delayed, fake_gemini):
    key = delayed.live_key()
    t = tag()
    r = delayed.post("/v1/generate", {"prompt": f"cancel me {t}", "n": 2}, token=key, headers=ASYNC)
    assert usage_today(delayed, key) == 2
    canceled = delayed.post(f"/v1/generations/{r.json()['id']}/cancel", token=key)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert usage_today(delayed, key) == 0, "the quota comes back"
    assert_error(delayed.post(f"/v1/generations/{r.json()['id']}/cancel", token=key), 409, "not_cancelable")
    # Both messages reach the consumer after the delay, and it must leave the generation alone.
    wait_for_queue_lines(delayed.worker, r.json()["id"], 2)
    assert fake_gemini.calls(t) == 0
    assert delayed.get(f"/v1/generations/{r.json()['id']}", token=key).json()["status"] == "canceled"
    assert usage_today(delayed, key) == 0
    done = delayed.post("/v1/generate", {"prompt": f"finished {t}"}, token=key, headers={"Prefer": "wait=20"})
    assert done.status_code == 200
    assert_error(delayed.post(f"/v1/generations/{done.json()['id']}/cancel", token=key), 409, "not_cancelable")
    other = delayed.test_key()
    assert_error(delayed.post(f"/v1/generations/{done.json()['id']}/cancel", token=other), 404, "not_found")


def test_a_job_that_keeps_failing_dead_letters_and_its_generation_fails_with_the_quota_back(worker_factory):
    drill = Api(worker_factory("async-dead-letter", vars={"QUEUE_FAIL_GENERATION_JOBS": "true",
                                                           "ALLOW_TEST_DRILLS": "true"}))
    account = drill.register()
    secret = webhook_secret(drill, account["access_token"])
    key = drill.create_key(account["access_token"], mode="test")["key"]
    receiver = Receiver()
    try:
        r = drill.post("/v1/generate", {"prompt": "doomed", "n": 2, "webhook_url": receiver.url}, token=key)
        assert r.status_code == 202 and usage_today(drill, key) == 2
        record = poll(drill, key, r.json()["id"], timeout=60)
        assert record["status"] == "failed" and record["error"]["code"] == "queue_exhausted"
        assert usage_today(drill, key) == 0, "the quota comes back"
        [delivery] = receiver.wait_for(1)
        assert Webhook(secret).verify(delivery["body"], delivery["headers"])["type"] == "generation.failed"
        # The dead-letter consumer logs its line once the message is handled, after the
        # webhook it sends: wait for the five lines rather than read them at once.
        lines = wait_for_queue_lines(drill.worker, r.json()["id"], 5)
        retried = [line for line in lines if line["outcome"] == "retried" and line["queue"] == "nanobanana-generations"]
        assert len(retried) == 4, "the first delivery and max_retries = 3 retries, then the dead-letter queue"
        assert all(line["job"] == "generate" and line["message_id"] for line in lines)
        dead = [line for line in lines if line["queue"] == "nanobanana-generations-dlq"]
        assert [line["outcome"] for line in dead] == ["acked"]
    finally:
        receiver.close()
