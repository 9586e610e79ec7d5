"""GET /v1/models: what this deployment offers, in OpenAI's list shape, from configuration."""

import pytest
from openai import OpenAI
from helpers import Api



def test_the_allowed_models_with_their_capabilities(api):
    r = api.get("/v1/models")
    assert r.status_code == 200 and r.headers["x-request-id"]
    body = r.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert list(models) == ["gemini-3.1-flash-image", "gemini-3-pro-image"], "GEMINI_MODELS, in order"
    flash, pro = models["gemini-3.1-flash-image"], models["gemini-3-pro-image"]
    assert (flash["object"], flash["owned_by"], flash["default"], pro["default"]) == ("model", "google", True, False)
    assert flash["capabilities"]["resolutions"] == ["512", "1K", "2K", "4K"]
    assert "8:1" in flash["capabilities"]["aspect_ratios"] and flash["capabilities"]["max_input_images"] == 14
    assert pro["capabilities"]["resolutions"] == ["1K", "2K", "4K"] and "8:1" not in pro["capabilities"]["aspect_ratios"]


@pytest.fixture(scope="module")
def overridden(worker_factory):
    return Api(worker_factory("model-caps", vars={
        "GEMINI_MODELS": "gemini-3.1-flash-image,gemini-2.5-flash-image",
        "GEMINI_MODEL_CAPS": '{"gemini-3.1-flash-image": {"resolutions": ["1K", "2K"], "max_input_images": 6}}'}))


def test_gemini_model_caps_overrides_the_defaults(overridden):
    models = {m["id"]: m["capabilities"] for m in overridden.get("/v1/models").json()["data"]}
    assert models["gemini-3.1-flash-image"]["resolutions"] == ["1K", "2K"]
    assert models["gemini-3.1-flash-image"]["max_input_images"] == 6
    assert len(models["gemini-3.1-flash-image"]["aspect_ratios"]) == 14, "what it does not name keeps its default"
    assert models["gemini-2.5-flash-image"] == {"resolutions": ["1K"], "aspect_ratios": [
        "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"], "max_input_images": 3,
        "image_tokens": {"1K": 1_290}, "pricing": {
            "input_text_per_million_usd": "0.300000", "input_image_per_million_usd": "0.300000",
            "output_image_per_million_usd": "30.000000", "output_text_per_million_usd": "2.500000"}}


def test_the_openai_sdk_lists_them(api):
    client = OpenAI(base_url=api.base + "/v1", api_key=api.test_key())
    assert [m.id for m in client.models.list()] == ["gemini-3.1-flash-image", "gemini-3-pro-image"]
