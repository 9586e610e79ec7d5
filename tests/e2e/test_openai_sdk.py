"""The official OpenAI Python SDK works against us by changing only base_url and the key."""

import base64

import json
import subprocess

import openai
import pytest
from harness import ROOT
from helpers import FLASH, expected_usage, tag, tokens_of


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def client(api, key):
    return openai.OpenAI(base_url=f"{api.base}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_images_generate_with_n_2(api, response_format):
    result = client(api, api.test_key()).images.generate(
        prompt=f"a banana in a spacesuit {tag()}", n=2, size="1024x1024", response_format=response_format)
    assert len(result.data) == 2 and result.created > 0
    images = []
    for item in result.data:
        if response_format == "url":
            assert item.b64_json is None
            images.append(api.http.get(item.url, timeout=30).content)
        else:
            assert item.url is None
            images.append(base64.b64decode(item.b64_json))
    assert all(image.startswith(PNG_MAGIC) for image in images)
    assert images[0] != images[1]


def test_openai_model_names_and_style_are_accepted(api, fake_gemini):
    t = tag()
    result = client(api, api.live_key()).images.generate(
        model="dall-e-3", prompt=f"openai names {t}", style="vivid", quality="hd", user="end-user-1")
    assert len(result.data) == 1 and result.data[0].url
    [sent] = fake_gemini.requests_with(t)
    assert sent["path"] == "/v1beta/models/gemini-3.1-flash-image:generateContent"


def test_bad_key_raises_authentication_error(api):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(api, "nb_live_00000000000000000000000000000000").images.generate(prompt="x")
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_refused_prompt_raises_bad_request_error(api):
    with pytest.raises(openai.BadRequestError) as caught:
        client(api, api.live_key()).images.generate(prompt=f"forbidden {tag()} #block")
    assert caught.value.body["code"] == "content_policy_violation"
    assert caught.value.body["type"] == "content_policy_error"


def test_exhausted_quota_raises_rate_limit_error(api):
    sdk = client(api, api.test_key(daily_image_quota=1))
    sdk.images.generate(prompt=f"the only one {tag()}")
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.images.generate(prompt=f"one too many {tag()}")
    assert caught.value.body["code"] == "daily_quota_exceeded"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_unsupported_openai_parameters_are_400_with_param(api):
    with pytest.raises(openai.BadRequestError) as caught:
        client(api, api.test_key()).images.generate(prompt="x", output_format="webp")
    assert caught.value.body["param"] == "output_format"


@pytest.mark.parametrize("route", ["generate", "edit"])
def test_result_usage_carries_what_gemini_reported(api, fake_gemini, route):
    t = tag()
    sdk = client(api, api.live_key())
    if route == "generate":
        result = sdk.images.generate(prompt=f"sdk usage {t}", n=2, size="1024x1024")
    else:
        from fake_gemini import png_bytes
        image = ("in.png", png_bytes(900, 300, (1, 2, 3)), "image/png")
        result = sdk.images.edit(image=image, prompt=f"sdk edit usage {t}", n=2)
    expected = expected_usage(tokens_of(fake_gemini.usage_sent(t)), FLASH)
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == \
        (expected["input_tokens"], expected["output_tokens"], expected["total_tokens"])
    assert usage.input_tokens_details.text_tokens == expected["input_tokens_details"]["text_tokens"]
    assert usage.input_tokens_details.image_tokens == expected["input_tokens_details"]["image_tokens"]
    assert usage.output_tokens_details.image_tokens == expected["output_tokens_details"]["image_tokens"]
    assert usage.output_tokens_details.text_tokens == expected["output_tokens_details"]["text_tokens"]
    # Beside OpenAI's fields, this service's cost.
    assert usage.model_extra["cost_usd"] == expected["cost_usd"]
    if route == "edit":
        assert usage.input_tokens_details.image_tokens == 2 * 258 * 2


def test_the_node_sdk_reads_usage_too(api, fake_gemini):
    t = tag()
    out = subprocess.run(["node", str(ROOT / "tests" / "sdk" / "openai_usage.mjs"), api.base, api.live_key(),
                          f"node usage {t}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    usage = json.loads(out.stdout)
    expected = expected_usage(tokens_of(fake_gemini.usage_sent(t)), FLASH)
    assert usage == {k: expected[k] for k in ("input_tokens", "input_tokens_details", "output_tokens",
                                               "output_tokens_details", "total_tokens", "cost_usd", "estimated", "test")}
