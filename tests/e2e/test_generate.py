"""Image generation end to end: the real Worker, local D1 and R2, and the fake Gemini."""

import base64
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from helpers import Api, assert_error, fetch, generations_of, png_at, PNG_MAGIC, sign, tag, usage_today
from fake_gemini import FINAL_PNG, GOOGLE_KEY, JPEG_BYTES, png_bytes

# --- success paths ---

def test_live_key_success_takes_the_final_image_not_the_draft(api, fake_gemini):
    key = api.live_key()
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"a banana on the moon {t}"}, token=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("gen_") and uuid.UUID(body["id"][4:]).version == 4
    assert body["prompt"] == f"a banana on the moon {t}"
    assert (body["model"], body["size"], body["style"], body["n"]) == ("gemini-3.1-flash-image", "1024x1024", "natural", 1)
    assert body["created_at"].endswith("Z")
    assert len(body["images"]) == 1 and body["images"][0]["mime_type"] == "image/png"
    assert body["url"] == body["images"][0]["url"]
    image = fetch(api, body["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == FINAL_PNG, "the last non-thought image, not the draft"
    # Cached no longer than the signature lives (IMAGE_URL_TTL_SECONDS is 3600).
    assert image.headers["cache-control"].startswith("private, max-age=")
    assert 3590 <= int(image.headers["cache-control"].split("=")[1]) <= 3600
    assert image.headers["etag"]
    assert len(fake_gemini.requests_with(t)) == 1


def test_the_r2_object_has_bytes_content_type_and_metadata(api):
    key = api.live_key()
    body = api.post("/v1/generate", {"prompt": f"stored {tag()} #jpeg"}, token=key).json()
    objects = api.worker.r2_objects(f"images/{body['id']}/")
    assert [o["key"] for o in objects] == [f"images/{body['id']}/0"]
    stored = objects[0]
    assert stored["bytes"] == JPEG_BYTES
    assert stored["http_metadata"]["contentType"] == "image/jpeg"
    key_id = api.worker.sql("SELECT api_key_id FROM generations WHERE id = ?", (body["id"],))[0]["api_key_id"]
    assert stored["custom_metadata"] == {"generation_id": body["id"], "api_key_id": key_id}
    row = api.worker.sql("SELECT * FROM generations WHERE id = ?", (body["id"],))[0]
    assert row["status"] == "succeeded" and row["mime_type"] == "image/jpeg" and row["bytes"] == len(JPEG_BYTES)
    assert row["error_code"] is None and row["upstream_latency_ms"] is not None


def test_jpeg_keeps_its_real_mime_type(api):
    body = api.post("/v1/generate", {"prompt": f"photo {tag()} #jpeg"}, token=api.live_key()).json()
    assert body["images"][0]["mime_type"] == "image/jpeg"
    image = fetch(api, body["url"])
    assert image.headers["content-type"] == "image/jpeg" and image.content == JPEG_BYTES


def test_b64_json_returns_the_bytes_inline(api):
    r = api.post("/v1/generate", {"prompt": f"inline {tag()}", "response_format": "b64_json"}, token=api.live_key())
    image = r.json()["images"][0]
    assert base64.b64decode(image["b64_json"]) == FINAL_PNG
    assert image["mime_type"] == "image/png" and image["url"]


def test_upstream_request_follows_the_wire_format(api, fake_gemini):
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"a lighthouse {t}", "size": "1792x1024", "style": "artistic",
                                  "model": "gemini-3-pro-image"}, token=api.live_key())
    assert r.status_code == 200, r.text
    [sent] = fake_gemini.requests_with(t)
    assert sent["path"] == "/v1beta/models/gemini-3-pro-image:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GOOGLE_KEY
    assert GOOGLE_KEY not in sent["path"], "the key travels in a header, never the URL"
    config = sent["body"]["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    text = sent["body"]["contents"][0]["parts"][0]["text"]
    assert text.startswith(f"a lighthouse {t}") and "painterly" in text
    natural = api.post("/v1/generate", {"prompt": f"a lighthouse {t}-n"}, token=api.live_key())
    assert natural.status_code == 200
    [sent] = fake_gemini.requests_with(f"{t}-n")
    assert "photorealistic" in sent["body"]["contents"][0]["parts"][0]["text"]
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


def test_n_images_are_requested_concurrently_and_all_stored(api, fake_gemini):
    t = tag()
    key = api.live_key()
    # The fake answers none of the three until all three have arrived: calls made one
    # after another would never get past the first (it would fail after 60 s).
    with fake_gemini.expect(t, calls=3):
        r = api.post("/v1/generate", {"prompt": f"three {t} #barrier:3:{t}", "n": 3}, token=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 3
    assert len(api.worker.r2_objects(f"images/{body['id']}/")) == 3
    assert usage_today(api, key) == 3


def test_a_text_generation_takes_two_d1_round_trips_and_other_requests_three(api):
    key = api.test_key()

    def round_trips(response) -> int:
        assert response.status_code == 200, response.text
        return api.worker.request_log(response.headers["x-request-id"])["d1_queries"]

    # Key lookup + rate limit + reservation in one batch, then the finish.
    assert round_trips(api.post("/v1/generate", {"prompt": f"count {tag()}"}, token=key)) == 2
    assert round_trips(api.post("/v1/images/generations", {"prompt": f"count {tag()}"}, token=key)) == 2
    # With a reference image, the key is looked up before the body is read: one more.
    image = {"b64_json": base64.b64encode(png_bytes(8, 8)).decode(), "mime_type": "image/png"}
    assert round_trips(api.post("/v1/generate", {"prompt": f"count {tag()}", "images": [image]}, token=key)) == 3
    # An Idempotency-Key adds its claim and its record.
    assert round_trips(api.post("/v1/generate", {"prompt": f"count {tag()}"}, token=key,
                                headers={"Idempotency-Key": f"count-{tag()}"})) == 5


def test_a_refused_key_leaves_nothing_behind_when_its_lookup_and_reservation_share_a_batch(api):
    token = api.token()
    key = api.create_key(token, mode="test")
    assert api.delete(f"/v1/keys/{key['id']}", token=token).status_code == 204
    prompt = f"refused {tag()}"
    assert_error(api.post("/v1/generate", {"prompt": prompt}, token=key["key"]), 401, "revoked_api_key")
    unknown = "nb_test_" + "0" * 32
    assert_error(api.post("/v1/generate", {"prompt": prompt}, token=unknown), 401, "invalid_api_key")
    # Authentication comes first even when the body is also wrong.
    assert_error(api.post("/v1/generate", {"prompt": ""}, token=unknown), 401, "invalid_api_key")
    assert api.worker.sql("SELECT id FROM generations WHERE prompt = ?", (prompt,)) == []
    assert api.worker.sql("SELECT image_count FROM usage WHERE api_key_id = ?", (key["id"],)) == []


# --- test keys: the synthetic provider ---

def test_test_keys_never_call_gemini_and_are_deterministic(api, fake_gemini):
    t = tag()
    key = api.test_key()
    before = len(fake_gemini.requests)
    answers = [
        api.post("/v1/generate", {"prompt": f"a cat {t}", "size": "1536x1024"}, token=key),
        api.post("/v1/generate", {"prompt": f"a cat {t}", "size": "1536x1024"}, token=api.test_key()),
        api.post("/v1/generate", {"prompt": f"a cat {t}", "size": "1536x1024", "style": "artistic"}, token=key),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert len(fake_gemini.requests) == before
    a, b, c = (png_at(api, r.json()["url"]) for r in answers)
    assert int.from_bytes(a[16:20], "big") == 1536 and int.from_bytes(a[20:24], "big") == 1024
    assert a == b, "same prompt, size and style: same bytes"
    assert a != c
    assert usage_today(api, key) == 2, "test keys are counted like live keys"


def test_test_key_images_in_one_request_differ(api):
    r = api.post("/v1/generate", {"prompt": f"pair {tag()}", "n": 2}, token=api.test_key())
    assert r.status_code == 200, r.text
    a, b = (png_at(api, image["url"]) for image in r.json()["images"])
    assert a != b


# --- refusals: 400, nothing charged or stored ---

@pytest.mark.parametrize("directive,reason", [
    ("#block", "SAFETY"),
    ("#finish:IMAGE_SAFETY", "IMAGE_SAFETY"),
    ("#finish:PROHIBITED_CONTENT", "PROHIBITED_CONTENT"),
    ("#finish:NO_IMAGE", "NO_IMAGE"),
    ("#finish:IMAGE_OTHER", "IMAGE_OTHER"),
    ("#textonly", "text only"),
])
def test_refusals_are_400_and_charge_nothing(api, directive, reason):
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"forbidden {tag()} {directive}"}, token=key)
    error = assert_error(r, 400, "content_policy_violation", "content_policy_error")
    assert reason in error["message"]
    assert usage_today(api, key) == 0
    [row] = generations_of(api, key)
    assert row["status"] == "failed" and row["error_code"] == "content_policy_violation"
    assert api.worker.r2_objects(f"images/{row['id']}/") == []


# --- retries, deadlines, upstream failures ---

def test_429_with_retry_delay_is_honoured_then_succeeds(api, fake_gemini):
    t = tag()
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"busy {t} #retry:1:1:{t}"}, token=key)
    assert r.status_code == 200, r.text
    sent = fake_gemini.requests_with(t)
    assert len(sent) == 2
    assert sent[1]["at"] - sent[0]["at"] >= 0.95, "waited the 1s retryDelay"
    assert usage_today(api, key) == 1


def test_503_twice_then_success(api, fake_gemini):
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"flaky {t} #status:503:2:{t}"}, token=api.live_key())
    assert r.status_code == 200, r.text
    assert len(fake_gemini.requests_with(t)) == 3


def test_500_until_retries_run_out_is_502(api, fake_gemini):
    t = tag()
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"broken {t} #status:500:9:{t}"}, token=key)
    assert_error(r, 502, "upstream_error", "upstream_error")
    assert len(fake_gemini.requests_with(t)) == 3, "three attempts at most"
    assert usage_today(api, key) == 0


def test_overloaded_until_retries_run_out_is_503(api, fake_gemini):
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"overloaded {t} #status:503:9:{t}"}, token=api.live_key())
    assert_error(r, 503, "upstream_overloaded", "upstream_error")
    assert len(fake_gemini.requests_with(t)) == 3


def test_invalid_upstream_key_is_502_without_retry(api, fake_gemini):
    t = tag()
    r = api.post("/v1/generate", {"prompt": f"auth {t} #badkey"}, token=api.live_key())
    error = assert_error(r, 502, "provider_auth_failed", "upstream_error")
    assert "API key not valid" not in error["message"] and GOOGLE_KEY not in r.text
    assert len(fake_gemini.requests_with(t)) == 1


@pytest.mark.parametrize("directive", ["#garbage", "#malformed"])
def test_unusable_200_is_502(api, directive):
    key = api.live_key()
    assert_error(api.post("/v1/generate", {"prompt": f"odd {tag()} {directive}"}, token=key), 502, "upstream_error")
    assert usage_today(api, key) == 0


def test_one_failed_image_of_three_delivers_the_two_and_charges_two(api, fake_gemini):
    t = tag()
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"trio {t} #failfrom:3:{t}", "n": 3}, token=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n"] == 3 and len(body["images"]) == 2
    [failure] = body["failures"]
    assert failure["code"] == "upstream_error" and failure["index"] in (0, 1, 2) and failure["message"]
    delivered = sorted(int(image["url"].split("?")[0].rsplit("_", 1)[1]) for image in body["images"])
    assert delivered == sorted({0, 1, 2} - {failure["index"]}), "each image keeps its own index"
    for image in body["images"]:
        assert png_at(api, image["url"]).startswith(PNG_MAGIC)
    assert usage_today(api, key) == 2, "only the images that came back are charged"
    [row] = generations_of(api, key)
    assert row["status"] == "succeeded"
    assert len(api.worker.r2_objects(f"images/{row['id']}/")) == 2
    record = api.get(f"/v1/generations/{body['id']}", token=key).json()
    assert [i["url"].split("?")[0] for i in record["images"]] == [i["url"].split("?")[0] for i in body["images"]]
    assert record["failures"] == body["failures"]


def test_the_openai_route_returns_the_images_that_came_back(api, fake_gemini):
    t = tag()
    key = api.live_key()
    r = api.post("/v1/images/generations", {"prompt": f"pair {t} #failfrom:2:{t}", "n": 2}, token=key)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 1 and "failures" not in r.json()
    assert usage_today(api, key) == 1


def test_when_every_image_fails_the_request_fails_and_keeps_nothing(api, fake_gemini):
    t = tag()
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"none {t} #failfrom:1:{t}", "n": 2}, token=key)
    assert_error(r, 502, "upstream_error")
    assert usage_today(api, key) == 0
    [row] = generations_of(api, key)
    assert row["status"] == "failed" and row["object_keys"] is None
    assert api.worker.r2_objects(f"images/{row['id']}/") == []


@pytest.fixture(scope="module")
def short_deadline_api(worker_factory):
    return Api(worker_factory("short-deadline", vars={"GEMINI_DEADLINE_MS": "1500"}))


def test_slow_upstream_past_the_deadline_is_504(short_deadline_api, fake_gemini):
    api = short_deadline_api
    key = api.live_key()
    t = tag()
    # Upstream answers only once the test lets it: a 504 before that was the deadline's.
    try:
        r = api.post("/v1/generate", {"prompt": f"slow {t} #hold:{t}"}, token=key)
        assert_error(r, 504, "upstream_timeout", "upstream_error")
    finally:
        fake_gemini.release(t)
    assert usage_today(api, key) == 0


# --- configuration: no Google key, no R2, public bucket ---

@pytest.fixture(scope="module")
def no_google_api(worker_factory):
    return Api(worker_factory("no-google-public-base", secrets={"GOOGLE_API_KEY": None},
                              vars={"PUBLIC_IMAGE_BASE": "https://images.example.com/"}))


def test_missing_google_key_is_503_for_live_keys_before_quota(no_google_api, fake_gemini):
    api = no_google_api
    key = api.live_key()
    before = len(fake_gemini.requests)
    assert_error(api.post("/v1/generate", {"prompt": "x"}, token=key), 503, "provider_not_configured", "upstream_error")
    assert len(fake_gemini.requests) == before
    assert usage_today(api, key) == 0 and generations_of(api, key) == []


def test_test_keys_work_without_google_and_use_the_public_base(no_google_api):
    api = no_google_api
    body = api.post("/v1/generate", {"prompt": "public"}, token=api.test_key()).json()
    assert body["url"] == f"https://images.example.com/test-images/{body['id']}/0", "test images have their own prefix"


@pytest.fixture(scope="module")
def no_r2_api(worker_factory):
    return Api(worker_factory("no-r2", r2=False))


def test_without_r2_images_come_back_as_data_urls(no_r2_api):
    api = no_r2_api
    key = api.test_key()
    body = api.post("/v1/generate", {"prompt": "inline only"}, token=key).json()
    url = body["images"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert usage_today(api, key) == 1
    row = api.worker.sql("SELECT status, object_keys FROM generations WHERE id = ?", (body["id"],))[0]
    assert row == {"status": "succeeded", "object_keys": None}


# --- signed URLs ---

def test_signed_url_valid_tampered_expired_unknown(api):
    body = api.post("/v1/generate", {"prompt": f"signed {tag()}"}, token=api.test_key()).json()
    url = urlparse(body["url"])
    image_id = url.path.rsplit("/", 1)[1]
    query = parse_qs(url.query)
    expires, signature = int(query["expires"][0]), query["signature"][0]
    assert expires > time.time() + 3000, "IMAGE_URL_TTL_SECONDS defaults to an hour"
    base = f"{api.base}/v1/images"

    assert fetch(api, body["url"]).status_code == 200
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in [f"{base}/{image_id}?expires={expires}&signature={flipped}",
                f"{base}/{image_id}?expires={expires + 1}&signature={signature}",
                f"{base}/{image_id[:-1]}1?expires={expires}&signature={signature}",
                f"{base}/{image_id}"]:
        assert_error(fetch(api, bad), 403, "invalid_signature", "permission_error")
    past = int(time.time()) - 10
    assert_error(fetch(api, f"{base}/{image_id}?expires={past}&signature={sign(image_id, past)}"), 403, "url_expired")
    unknown = f"gen_{uuid.uuid4()}_0"
    future = int(time.time()) + 600
    assert_error(fetch(api, f"{base}/{unknown}?expires={future}&signature={sign(unknown, future)}"), 404, "not_found")


def test_etag_revalidation_is_304(api):
    body = api.post("/v1/generate", {"prompt": f"etag {tag()}"}, token=api.test_key()).json()
    first = fetch(api, body["url"])
    again = fetch(api, body["url"], headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


# --- validation ---

@pytest.mark.parametrize("body,status,code,param", [
    ({}, 422, "prompt_required", "prompt"),
    ({"prompt": ""}, 422, "prompt_required", "prompt"),
    ({"prompt": "   "}, 422, "prompt_required", "prompt"),
    ({"prompt": "x" * 4001}, 422, "prompt_too_long", "prompt"),
    ({"prompt": ["x"]}, 422, "invalid_type", "prompt"),
    ({"prompt": "x", "n": 0}, 422, "out_of_range", "n"),
    ({"prompt": "x", "n": 5}, 422, "out_of_range", "n"),
    ({"prompt": "x", "n": 1.5}, 422, "invalid_type", "n"),
    ({"prompt": "x", "size": "512x512"}, 400, "invalid_value", "size"),
    ({"prompt": "x", "style": "cubist"}, 400, "invalid_value", "style"),
    ({"prompt": "x", "model": "imagen-3"}, 400, "invalid_value", "model"),
    ({"prompt": "x", "response_format": "jpeg"}, 400, "invalid_value", "response_format"),
    ({"prompt": "x", "negative_prompt": "y"}, 422, "unknown_parameter", "negative_prompt"),
])
def test_validation_errors_name_their_param_and_charge_nothing(api, body, status, code, param):
    key = api.test_key()
    assert_error(api.post("/v1/generate", body, token=key), status, code, param=param)
    assert usage_today(api, key) == 0


def test_usage_counts_only_delivered_images(api):
    key = api.live_key()
    t = tag()
    assert api.post("/v1/generate", {"prompt": f"ok {t}", "n": 2}, token=key).status_code == 200
    api.post("/v1/generate", {"prompt": f"no {t} #block"}, token=key)
    api.post("/v1/generate", {"prompt": f"down {t} #status:500:9:{t}"}, token=key)
    api.post("/v1/generate", {"prompt": ""}, token=key)
    assert api.post("/v1/generate", {"prompt": f"ok again {t}"}, token=key).status_code == 200
    assert usage_today(api, key) == 3
    statuses = sorted(g["status"] for g in generations_of(api, key))
    assert statuses == ["failed", "failed", "succeeded", "succeeded"]


# --- what came back ---

def test_responses_and_history_report_the_pixels_that_came_back(api):
    """The fake Gemini draws 8x8 PNGs whatever is asked; a test key draws what is asked.
    Each image reports its real size, read from its own header."""
    live = api.live_key()
    body = api.post("/v1/generate", {"prompt": f"small {tag()}", "size": "1536x1024"}, token=live).json()
    assert body["size"] == "1536x1024", "size stays what was asked"
    assert [(i["width"], i["height"]) for i in body["images"]] == [(8, 8)]
    test = api.test_key()
    drawn = api.post("/v1/generate", {"prompt": f"wide {tag()}", "size": "1792x1024", "n": 2}, token=test).json()
    assert [(i["width"], i["height"]) for i in drawn["images"]] == [(1792, 1024)] * 2
    for key, generation, size in [(live, body, (8, 8)), (test, drawn, (1792, 1024))]:
        record = api.get(f"/v1/generations/{generation['id']}", token=key).json()
        assert {(i["width"], i["height"]) for i in record["images"]} == {size}
    jpeg = api.post("/v1/generate", {"prompt": f"photo {tag()} #jpeg"}, token=live).json()
    assert (jpeg["images"][0]["width"], jpeg["images"][0]["height"]) == (1, 1)


# --- aspect_ratio and resolution ---

def test_aspect_ratio_and_resolution_go_upstream_as_gemini_image_config(api, fake_gemini):
    t = tag()
    body = api.post("/v1/generate", {"prompt": f"wide {t}", "aspect_ratio": "21:9", "resolution": "2K",
                                     "model": "gemini-3-pro-image"}, token=api.live_key())
    assert body.status_code == 200, body.text
    [sent] = fake_gemini.requests_with(t)
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "2K"}
    answer = body.json()
    assert (answer["aspect_ratio"], answer["resolution"], answer["size"]) == ("21:9", "2K", "2048x878")
    assert_error(api.get(f"/v1/generations/{answer['id']}", token=api.token()), 404, "not_found")


def test_a_test_key_draws_the_asked_ratio_at_the_asked_resolution(api):
    key = api.test_key()
    r = api.post("/v1/generate", {"prompt": f"tall {tag()}", "aspect_ratio": "9:16", "resolution": "512"}, token=key)
    assert r.status_code == 200, r.text
    [image] = r.json()["images"]
    assert (image["width"], image["height"]) == (288, 512)
    png = png_at(api, image["url"])
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (288, 512)
    record = api.get(f"/v1/generations/{r.json()['id']}", token=key).json()
    assert (record["aspect_ratio"], record["resolution"], record["size"]) == ("9:16", "512", "288x512")


@pytest.mark.parametrize("body,status,code,param", [
    ({"resolution": "512", "model": "gemini-3-pro-image"}, 422, "unsupported_by_model", "resolution"),
    ({"aspect_ratio": "1:8", "model": "gemini-3-pro-image"}, 422, "unsupported_by_model", "aspect_ratio"),
    ({"size": "1024x1024", "aspect_ratio": "1:1"}, 422, "conflicting_parameters", "aspect_ratio"),
    ({"aspect_ratio": "7:5"}, 400, "invalid_value", "aspect_ratio"),
    ({"resolution": "8K"}, 400, "invalid_value", "resolution"),
])
def test_what_the_model_cannot_serve_is_refused_naming_the_parameter(api, body, status, code, param):
    key = api.live_key()
    r = api.post("/v1/generate", {"prompt": f"no {tag()}", **body}, token=key)
    assert_error(r, status, code, "invalid_request_error", param=param)
    assert usage_today(api, key) == 0
