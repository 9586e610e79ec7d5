"""Editing (issue 12): reference images on POST /v1/generate in each form, what goes
upstream, every limit with its `param`, iterating on earlier results, records in history,
and OpenAI's POST /v1/images/edits through the official SDK."""

import base64
import hashlib
import io

import openai
import pytest

from helpers import assert_error, data_url, generations_of, PNG_MAGIC, tag, usage_today
from fake_gemini import JPEG_BYTES, png_bytes

WIDE = png_bytes(16, 8, (10, 200, 30))  # 2:1, nearest Gemini ratio 16:9
TALL = png_bytes(8, 16, (200, 10, 30))
MAX_INPUT = 7_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def padded(size: int) -> bytes:
    """A PNG by its magic bytes, `size` bytes long."""
    return WIDE + b"\0" * (size - len(WIDE))


def generate(api, key, **body):
    return api.post("/v1/generate", body, token=key)


def image_bytes(api, url: str) -> bytes:
    r = api.http.get(url, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def test_each_input_form_goes_upstream_as_inline_data_in_order(api, fake_gemini):
    key = api.live_key()
    first = generate(api, key, prompt=f"the source {tag()}")
    assert first.status_code == 200, first.text
    source = first.json()
    source_bytes = image_bytes(api, source["url"])

    t = tag()
    r = generate(api, key, prompt=f"blend these {t}", images=[
        data_url(WIDE),
        {"b64_json": b64(JPEG_BYTES), "mime_type": "image/jpeg"},
        {"generation_id": source["id"], "index": 0},
    ])
    assert r.status_code == 200, r.text
    body = r.json()
    [sent] = fake_gemini.requests_with(t)
    parts = sent["body"]["contents"][0]["parts"]
    assert [list(p) for p in parts] == [["inlineData"], ["inlineData"], ["inlineData"], ["text"]]
    assert [(i["mime_type"], i["sha256"]) for i in sent["inputs"]] == [
        ("image/png", sha(WIDE)), ("image/jpeg", sha(JPEG_BYTES)), ("image/png", sha(source_bytes))]
    assert parts[3]["text"].startswith(f"blend these {t}")
    # No ratio asked: the model follows the inputs; the resolution is still sent.
    assert sent["body"]["generationConfig"]["imageConfig"] == {"imageSize": "1K"}
    assert body["aspect_ratio"] == "16:9", "reported: the model's ratio nearest the first input's"

    assert body["inputs"] == [
        {"source": "upload", "generation_id": None, "index": None, "sha256": sha(WIDE), "bytes": len(WIDE),
         "mime_type": "image/png", "width": 16, "height": 8},
        {"source": "upload", "generation_id": None, "index": None, "sha256": sha(JPEG_BYTES),
         "bytes": len(JPEG_BYTES), "mime_type": "image/jpeg", "width": 1, "height": 1},
        {"source": "generation", "generation_id": source["id"], "index": 0, "sha256": sha(source_bytes),
         "bytes": len(source_bytes), "mime_type": "image/png", "width": 8, "height": 8},
    ]
    [row] = api.worker.sql("SELECT inputs FROM generations WHERE id = ?", [body["id"]])
    assert b64(WIDE) not in row["inputs"] and len(row["inputs"]) < 1500, "records, never bytes, in D1"


def test_a_ratio_asked_with_inputs_is_sent(api, fake_gemini):
    t = tag()
    r = generate(api, api.live_key(), prompt=f"wide {t}", images=[data_url(TALL)], aspect_ratio="21:9",
                 resolution="2K")
    assert r.status_code == 200, r.text
    [sent] = fake_gemini.requests_with(t)
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "2K"}
    t = tag()
    assert generate(api, api.live_key(), prompt=f"sized {t}", images=[data_url(TALL)], size="1536x1024").status_code == 200
    [sent] = fake_gemini.requests_with(t)
    assert sent["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2", "imageSize": "2K"}


def test_iterating_on_a_result_and_the_chain_in_history(api):
    key = api.test_key()
    one = generate(api, key, prompt="a red bicycle").json()
    two = generate(api, key, prompt="paint it blue", images=[{"generation_id": one["id"]}]).json()
    three = generate(api, key, prompt="add a basket", images=[{"generation_id": two["id"], "index": 0}]).json()
    # Walk the chain back from the last edit, through history.
    chain, current = [], three["id"]
    while current:
        record = api.get(f"/v1/generations/{current}", token=key).json()
        chain.append(record["prompt"])
        current = record["inputs"][0]["generation_id"] if record["inputs"] else None
    assert chain == ["add a basket", "paint it blue", "a red bicycle"]
    listed = {g["id"]: g for g in api.get("/v1/generations", token=key).json()["data"]}
    assert listed[two["id"]]["inputs"][0]["generation_id"] == one["id"] and listed[one["id"]]["inputs"] == []


def test_an_edit_of_an_earlier_image_costs_one_more_d1_round_trip(api):
    key = api.test_key()
    source = generate(api, key, prompt="source")
    edit = generate(api, key, prompt="edit", images=[{"generation_id": source.json()["id"]},
                                                     {"generation_id": source.json()["id"]}])
    assert edit.status_code == 200, edit.text
    # Text only: authenticate + reserve + pending record in one batch, then finish.
    assert api.worker.request_log(source.headers["x-request-id"])["d1_queries"] == 2
    # An edit authenticates before reading its body, then one query for all its inputs,
    # the reservation and the finish.
    assert api.worker.request_log(edit.headers["x-request-id"])["d1_queries"] == 4


def test_test_keys_draw_edits_deterministically_from_every_input(api):
    key = api.test_key()

    def draw(images, **extra):
        r = generate(api, key, prompt="make it sunny", images=images, **extra)
        assert r.status_code == 200, r.text
        return r.json()

    a = draw([data_url(WIDE), data_url(TALL)])
    again = draw([data_url(WIDE), data_url(TALL)])
    other = draw([data_url(WIDE), data_url(png_bytes(8, 16, (1, 2, 3)))])
    swapped = draw([data_url(TALL), data_url(WIDE)])
    pictures = [image_bytes(api, g["url"]) for g in (a, again, other, swapped)]
    assert pictures[0] == pictures[1], "same inputs, same picture"
    assert pictures[0] != pictures[2], "a different input, a different picture"
    assert pictures[0] != pictures[3]
    assert (a["images"][0]["width"], a["images"][0]["height"]) == (1024, 576), "follows the first input: 16:9"
    assert (swapped["images"][0]["width"], swapped["images"][0]["height"]) == (576, 1024)
    asked = draw([data_url(WIDE)], aspect_ratio="4:5", resolution="2K")
    assert (asked["images"][0]["width"], asked["images"][0]["height"]) == (1638, 2048)


@pytest.mark.parametrize("images, status, code, param", [
    ([data_url(b"<svg onload='alert(1)'/>", "image/png")], 400, "invalid_image", "images[0]"),
    ([data_url(WIDE), {"b64_json": b64(JPEG_BYTES), "mime_type": "image/png"}], 400, "invalid_image", "images[1]"),
    ([data_url(WIDE), data_url(WIDE), "https://example.com/cat.png"], 400, "invalid_image", "images[2]"),
    ([{"b64_json": "%%%"}], 400, "invalid_image", "images[0]"),
    ([{"b64_json": b64(WIDE), "generation_id": "gen_x"}], 422, "conflicting_parameters", "images[0]"),
    ([{"generation_id": "gen_x", "index": "0"}], 422, "invalid_type", "images[0].index"),
    ([{"url": "https://example.com"}], 422, "unknown_parameter", "images[0].url"),
    ("not-a-list", 422, "invalid_type", "images"),
])
def test_bad_inputs_are_refused_naming_the_input(api, images, status, code, param):
    assert_error(generate(api, api.test_key(), prompt="x", images=images), status, code, param=param)


def test_size_limits_per_input_and_together(api):
    key = api.test_key()
    assert_error(generate(api, key, prompt="x", images=[data_url(padded(MAX_INPUT + 1))]), 422, "image_too_large",
                 param="images[0]")
    three = [data_url(padded(6_900_000))] * 3
    assert_error(generate(api, key, prompt="x", images=three), 422, "image_too_large", param="images[2]")
    two = [data_url(padded(6_900_000))] * 2
    r = generate(api, key, prompt="two big ones", images=two)
    assert r.status_code == 200, r.text
    assert usage_today(api, key) == 1


def test_the_body_limit_of_the_generation_route_rises_and_others_keep_64_kib(api):
    key = api.test_key()
    huge = b'{"prompt": "x", "images": ["' + b"A" * (28 * 1024 * 1024) + b'"]}'
    r = api.post("/v1/generate", token=key, data=huge, headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    r = api.post("/v1/images/generations", {"prompt": "x" * 70_000}, token=key)
    assert_error(r, 413, "payload_too_large")


def test_more_inputs_than_the_model_takes(api):
    key = api.test_key()
    fifteen = [data_url(WIDE)] * 15
    err = assert_error(generate(api, key, prompt="x", images=fifteen), 422, "unsupported_by_model", param="images[14]")
    assert "at most 14" in err["message"]
    assert generate(api, key, prompt="fourteen", images=fifteen[:14]).status_code == 200


def test_another_accounts_generation_is_404_and_charges_nothing(api):
    owner = api.test_key()
    theirs = generate(api, owner, prompt="mine").json()
    intruder = api.test_key()
    for images in ([{"generation_id": theirs["id"]}], [{"generation_id": "gen_00000000-0000-4000-8000-000000000000"}]):
        assert_error(generate(api, intruder, prompt="steal", images=images), 404, "not_found", param="images[0]")
    assert_error(generate(api, owner, prompt="x", images=[{"generation_id": theirs["id"], "index": 1}]),
                 422, "out_of_range", param="images[0].index")
    assert usage_today(api, intruder) == 0
    assert api.worker.sql("SELECT COUNT(*) AS c FROM generations WHERE prompt = 'steal'")[0]["c"] == 0


def test_a_refused_edit_charges_nothing(api, fake_gemini):
    key = api.live_key()
    r = generate(api, key, prompt=f"refuse this edit {tag()} #block", images=[data_url(WIDE)])
    assert_error(r, 400, "content_policy_violation")
    assert usage_today(api, key) == 0
    [row] = generations_of(api, key)
    assert row["status"] == "failed" and sha(WIDE) in row["inputs"]


def test_an_idempotent_edit_replays_and_another_input_under_the_same_key_is_refused(api):
    key = api.test_key()
    headers = {"Idempotency-Key": f"edit-{tag()}"}
    body = {"prompt": "same edit", "images": [data_url(WIDE)]}
    first = api.post("/v1/generate", body, token=key, headers=headers)
    again = api.post("/v1/generate", body, token=key, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["inputs"] == first.json()["inputs"]
    other = api.post("/v1/generate", {"prompt": "same edit", "images": [data_url(TALL)]}, token=key, headers=headers)
    assert_error(other, 422, "idempotency_key_reused")
    assert usage_today(api, key) == 1


# ---------------------------------------------------------------- OpenAI's edits route


def sdk(api, key):
    return openai.OpenAI(base_url=f"{api.base}/v1", api_key=key, max_retries=0, timeout=60)


def test_sdk_edit_with_one_file(api, fake_gemini):
    t = tag()
    result = sdk(api, api.live_key()).images.edit(image=("wide.png", WIDE, "image/png"), prompt=f"one file {t}")
    assert len(result.data) == 1 and result.data[0].url
    assert image_bytes(api, result.data[0].url).startswith(PNG_MAGIC)
    [sent] = fake_gemini.requests_with(t)
    assert [i["sha256"] for i in sent["inputs"]] == [sha(WIDE)]
    assert "aspectRatio" not in sent["body"]["generationConfig"]["imageConfig"]


def test_sdk_edit_with_two_files_and_b64_json(api, fake_gemini):
    t = tag()
    result = sdk(api, api.live_key()).images.edit(
        image=[io.BytesIO(WIDE), ("photo.jpg", JPEG_BYTES, "image/jpeg")], prompt=f"two files {t}", n=2,
        size="1024x1024", response_format="b64_json")
    assert len(result.data) == 2 and all(base64.b64decode(d.b64_json).startswith(PNG_MAGIC) for d in result.data)
    sent = fake_gemini.requests_with(t)
    assert len(sent) == 2, "n=2: two upstream calls, each with both inputs"
    for call in sent:
        assert [(i["mime_type"], i["sha256"]) for i in call["inputs"]] == [
            ("image/png", sha(WIDE)), ("image/jpeg", sha(JPEG_BYTES))]
        assert call["body"]["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


def test_sdk_edit_refusals(api):
    client = sdk(api, api.test_key())
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("a.png", WIDE, "image/png"), mask=("m.png", WIDE, "image/png"), prompt="x")
    assert caught.value.body["code"] == "unsupported_parameter" and caught.value.body["param"] == "mask"
    assert "instruction" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("a.gif", b"GIF89a....", "image/gif"), prompt="x")
    assert caught.value.body["code"] == "invalid_image"


def test_edits_route_refusals_over_http(api):
    key = api.test_key()
    assert_error(api.post("/v1/images/edits", {"prompt": "x"}, token=key), 415, "unsupported_media_type")
    r = api.post("/v1/images/edits", token=key, files={"prompt": (None, "x")})
    assert_error(r, 422, "image_required", param="image")
    r = api.post("/v1/images/edits", token=key, files={"prompt": (None, "x"), "image": ("a.png", WIDE, "image/png"),
                                                      "background": (None, "transparent")})
    assert_error(r, 400, "unknown_parameter", param="background")
    r = api.post("/v1/images/edits", token=key, data=b"--B\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=B"})
    assert_error(r, 400, "invalid_multipart")
    assert_error(api.post("/v1/images/edits", files={"image": ("a.png", WIDE)}), 401, "missing_authorization")
    assert usage_today(api, key) == 0


def test_edits_and_generate_share_quota_and_rate_headers(api):
    key = api.test_key(daily_image_quota=2)
    r = api.post("/v1/images/edits", token=key, files={"prompt": (None, "x"), "n": (None, "2"),
                                                      "image": ("a.png", WIDE, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["x-quota-remaining-images"] == "0" and "x-ratelimit-limit-requests" in r.headers
    assert_error(generate(api, key, prompt="more", images=[data_url(WIDE)]), 429, "daily_quota_exceeded")
