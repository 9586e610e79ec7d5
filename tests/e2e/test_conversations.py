"""Conversations (issue 23): `previous_generation_id` continues a generation; Gemini gets
the whole chain, every model turn with its thoughtSignatures exactly as it sent them (the
fake refuses anything else, as Gemini does); records and history show the chain; chains
are the account's own, of one key mode, and bounded."""

import pytest

from helpers import assert_error, png_at, poll, tag, usage_today

MAX_TURNS = 8
ASYNC_HEADERS = {"Prefer": "respond-async"}


def generate(api, key, **body):
    return api.post("/v1/generate", body, token=key)


def turn(api, key, prompt, previous=None, **body):
    if previous:
        body["previous_generation_id"] = previous
    r = generate(api, key, prompt=prompt, **body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_three_turn_conversation_sends_every_turn_with_its_signatures(api, fake_gemini):
    t = tag()
    key = api.live_key()
    first = turn(api, key, f"a red fox {t} one")
    second = turn(api, key, f"now in the snow {t} two", first["id"])
    third = turn(api, key, f"make it night {t} three", second["id"])

    [sent] = fake_gemini.requests_with(f"{t} three")
    assert sent["roles"] == ["user", "model", "user", "model", "user"]
    contents = sent["body"]["contents"]
    assert f"a red fox {t} one" in contents[0]["parts"][-1]["text"]
    assert f"now in the snow {t} two" in contents[2]["parts"][-1]["text"]
    for model_turn in (contents[1], contents[3]):
        texts = [p for p in model_turn["parts"] if "text" in p]
        images = [p for p in model_turn["parts"] if "inlineData" in p]
        assert len(texts) == 1 and len(images) == 1, model_turn
        assert all(p.get("thoughtSignature") for p in model_turn["parts"])
        assert not any(p.get("thought") for p in model_turn["parts"]), "drafts are not sent back"
    # The earlier images went back: two more images of input than the new turn has.
    usage = third["usage"]
    assert usage["input_tokens_details"]["image_tokens"] == 2 * 258

    record = api.get(f"/v1/generations/{third['id']}", token=key).json()
    assert (record["previous_generation_id"], record["conversation_id"]) == (second["id"], first["id"])
    assert api.get(f"/v1/generations/{first['id']}", token=key).json()["conversation_id"] == first["id"]
    listed = api.get(f"/v1/generations?conversation_id={first['id']}", token=key).json()["data"]
    assert [g["id"] for g in listed] == [third["id"], second["id"], first["id"]]


def test_a_continued_generation_can_run_asynchronously(api, fake_gemini):
    t = tag()
    key = api.live_key()
    first = turn(api, key, f"a lighthouse {t} one")
    r = api.post("/v1/generate", {"prompt": f"at dawn {t} two", "previous_generation_id": first["id"]}, token=key,
                 headers=ASYNC_HEADERS)
    assert r.status_code == 202, r.text
    done = poll(api, key, r.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["previous_generation_id"] == first["id"]
    [sent] = fake_gemini.requests_with(f"{t} two")
    assert sent["roles"] == ["user", "model", "user"]


def test_an_altered_signature_is_refused_upstream_and_charges_nothing(api, fake_gemini):
    t = tag()
    key = api.live_key()
    first = turn(api, key, f"a castle {t} one")
    [row] = api.worker.sql("SELECT model_turns FROM generations WHERE id = ?", (first["id"],))
    # The kept turn is the model's JSON as received, its image's data left out: alter the
    # image part's signature, as a client library that mangles them would.
    kept = row["model_turns"]
    marker = '"thoughtSignature":"'
    at = kept.rindex(marker) + len(marker)
    assert kept[at:at + 4] != "AAAA"
    api.worker.sql("UPDATE generations SET model_turns = ? WHERE id = ?", (kept[:at] + "AAAA" + kept[at + 4:], first["id"]))
    before = usage_today(api, key)
    r = generate(api, key, prompt=f"with a moat {t} two", previous_generation_id=first["id"])
    assert_error(r, 502, "upstream_error", "upstream_error")
    [sent] = fake_gemini.requests_with(f"{t} two")
    assert sent["answered"] == 400
    assert usage_today(api, key) == before


def test_chains_are_the_accounts_own_and_of_one_key_mode(api, fake_gemini):
    owner = api.token()
    live = api.create_key(owner, mode="live")["key"]
    test = api.create_key(owner, mode="test")["key"]
    mine = turn(api, live, f"mine {tag()}")
    stranger = api.live_key()
    for key, previous in [(stranger, mine["id"]), (live, "gen_00000000-0000-4000-8000-000000000000")]:
        r = generate(api, key, prompt="steal it", previous_generation_id=previous)
        assert_error(r, 404, "not_found", param="previous_generation_id")
    assert_error(generate(api, test, prompt="x", previous_generation_id=mine["id"]), 422, "mode_mismatch",
                 param="previous_generation_id")
    assert_error(generate(api, live, prompt="x", previous_generation_id=mine["id"], previous_image_index=1), 422,
                 "out_of_range", param="previous_image_index")
    assert_error(generate(api, live, prompt="x", previous_image_index=0), 400, "invalid_value",
                 param="previous_image_index")
    assert_error(generate(api, live, prompt="x", previous_generation_id="not-an-id"), 400, "invalid_value",
                 param="previous_generation_id")
    # OpenAI's route has no such field.
    r = api.post("/v1/images/generations", {"prompt": "x", "previous_generation_id": mine["id"]}, token=live)
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_generation_id"


def test_a_test_keys_picture_depends_on_the_whole_chain(api):
    def chain(key, prompts):
        previous = None
        for prompt in prompts:
            previous = turn(api, key, prompt, previous and previous["id"])
        return previous

    fresh = turn(api, api.test_key(), "the same last words")
    continued = chain(api.test_key(), ["an opening line", "the same last words"])
    again = chain(api.test_key(), ["an opening line", "the same last words"])
    other = chain(api.test_key(), ["another opening", "the same last words"])
    picture = lambda g: png_at(api, g["url"])  # noqa: E731
    assert picture(continued) == picture(again), "deterministic"
    assert picture(continued) != picture(fresh), "a continued turn is not the same prompt sent fresh"
    assert picture(continued) != picture(other), "every earlier prompt counts"


def test_a_conversation_past_its_limit_is_refused_not_truncated(api):
    key = api.test_key()
    previous = None
    for i in range(MAX_TURNS):
        previous = turn(api, key, f"turn {i}", previous and previous["id"])
    before = usage_today(api, key)
    r = generate(api, key, prompt="one too many", previous_generation_id=previous["id"])
    assert_error(r, 422, "conversation_too_long", param="previous_generation_id")
    assert str(MAX_TURNS) in r.json()["error"]["message"]
    assert usage_today(api, key) == before


def test_earlier_turns_send_again_the_images_they_named(api, fake_gemini):
    """An earlier turn's input named by generation_id goes back with it, even when a key of
    the other mode drew it (its image lives under that mode's prefix)."""
    t = tag()
    token = api.token()
    live = api.create_key(token, mode="live")["key"]
    test = api.create_key(token, mode="test")["key"]
    sketch = turn(api, test, f"a pencil sketch {t}")
    first = turn(api, live, f"paint this {t} one", images=[{"generation_id": sketch["id"], "index": 0}])
    turn(api, live, f"warmer light {t} two", first["id"])
    [sent] = fake_gemini.requests_with(f"{t} two")
    first_turn = sent["body"]["contents"][0]
    assert sent["roles"] == ["user", "model", "user"]
    assert [p for p in first_turn["parts"] if "inlineData" in p], "the sketch went back with the first turn"
    assert f"paint this {t} one" in first_turn["parts"][-1]["text"]
