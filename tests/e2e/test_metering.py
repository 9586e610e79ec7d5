"""Metering in tokens and dollars (issue 22): every answer, record and webhook event
carries what Gemini reported for the images delivered, priced exactly; money budgets hold
under concurrency; GET /v1/usage and POST /v1/estimate say what was and would be spent.

Every figure is checked against what the fake Gemini sent (its usageMetadata varies with
the prompt, the inputs and the resolution), priced here independently with Decimal."""

from __future__ import annotations

import base64
import json
import threading
from decimal import ROUND_HALF_UP, Decimal

import pytest

from fake_gemini import IMAGE_TOKENS, TILE_TOKENS, png_bytes
from helpers import (FLASH, PRO, assert_error, cost_of, expected_usage, poll, Receiver, tag, tokens_of,
                     webhook_secret)

def generate(api, key, **body):
    return api.post("/v1/generate", body, token=key)


@pytest.mark.parametrize("n,model,resolution", [(1, FLASH, "1K"), (4, PRO, "4K"), (2, FLASH, "512")])
def test_a_live_generation_reports_what_gemini_reported_priced_exactly(api, fake_gemini, n, model, resolution):
    t = tag()
    key = api.live_key()
    r = generate(api, key, prompt=f"a lighthouse in fog, metered {t}" + " wave" * (n * 7), n=n, model=model,
                 resolution=resolution)
    assert r.status_code == 200, r.text
    sent = fake_gemini.usage_sent(t)
    assert len(sent) == n
    tokens = tokens_of(sent)
    assert tokens["output_image"] == n * IMAGE_TOKENS[model][resolution]
    usage = r.json()["usage"]
    assert usage == expected_usage(tokens, model)
    # The record and the history say the same, to the token and the micro-dollar.
    record = api.get(f"/v1/generations/{r.json()['id']}", token=key).json()
    assert record["usage"] == usage
    [listed] = [g for g in api.get("/v1/generations", token=key).json()["data"] if g["id"] == r.json()["id"]]
    assert listed["usage"] == usage


def test_a_test_key_reports_the_documented_tokens_marked_as_test(api, fake_gemini):
    key = api.test_key()
    prompt = f"a documented banana {tag()}"
    r = generate(api, key, prompt=prompt, n=3, model=PRO, resolution="2K")
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert (usage["estimated"], usage["test"]) == (True, True)
    text = f"{prompt}\n\n"  # the style's instruction follows; Google documents ~4 bytes a token
    assert usage["output_tokens_details"] == {"image_tokens": 3 * 1_120, "text_tokens": 0, "reasoning_tokens": 0}
    assert usage["input_tokens_details"]["image_tokens"] == 0
    assert usage["input_tokens_details"]["text_tokens"] >= 3 * ((len(text) + 3) // 4)
    assert usage["cost_usd"] == cost_of({"input_text": usage["input_tokens_details"]["text_tokens"], "input_image": 0,
                                         "output_image": 3_360, "output_text": 0, "reasoning": 0}, PRO)
    assert fake_gemini.requests_with(prompt) == []


def test_an_edit_counts_its_input_images_tiles(api, fake_gemini):
    t = tag()
    key = api.live_key()
    big = png_bytes(1600, 800, (10, 20, 30))  # 3 x 2 tiles of 768
    small = png_bytes(16, 8, (200, 10, 30))  # one tile
    images = [f"data:image/png;base64,{base64.b64encode(d).decode()}" for d in (big, small)]
    r = generate(api, key, prompt=f"blend these {t}", images=images, n=2)
    assert r.status_code == 200, r.text
    sent = fake_gemini.usage_sent(t)
    tokens = tokens_of(sent)
    assert tokens["input_image"] == 2 * TILE_TOKENS * (6 + 1)
    assert r.json()["usage"] == expected_usage(tokens, FLASH)


def test_a_failed_generation_charges_nothing_and_partial_success_charges_what_came_back(api, fake_gemini):
    key = api.live_key()
    r = generate(api, key, prompt=f"refused #block {tag()}")
    assert r.status_code == 400
    [failed] = api.get("/v1/generations", token=key).json()["data"]
    assert failed["status"] == "failed"
    assert (failed["usage"]["cost_usd"], failed["usage"]["total_tokens"]) == ("0.000000", 0)

    t = tag()
    r = generate(api, key, prompt=f"one of three fails #failfrom:3:{t} {t}", n=3)
    assert r.status_code == 200, r.text
    body = r.json()
    delivered = len(body["images"])
    assert delivered == 2 and len(body["failures"]) == 1
    sent = fake_gemini.usage_sent(t)
    assert len(sent) == delivered
    assert body["usage"] == expected_usage(tokens_of(sent), FLASH)


def test_the_webhook_event_carries_the_usage_of_the_record(api, fake_gemini):
    token = api.token()
    key = api.create_key(token, mode="live")["key"]
    secret = webhook_secret(api, token)
    receiver = Receiver()
    try:
        t = tag()
        r = generate(api, key, prompt=f"async metered {t}", n=2, webhook_url=receiver.url)
        assert r.status_code == 202, r.text
        [delivery] = receiver.wait_for(1)
        event = json.loads(delivery["body"])
        assert event["type"] == "generation.succeeded"
        expected = expected_usage(tokens_of(fake_gemini.usage_sent(t)), FLASH)
        assert event["data"]["usage"] == expected
        assert api.get(f"/v1/generations/{r.json()['id']}", token=key).json()["usage"] == expected
        assert secret
    finally:
        receiver.close()


def test_a_queued_generation_has_no_usage_until_it_ends(api):
    key = api.test_key()
    r = api.post("/v1/generate", {"prompt": f"later {tag()}"}, token=key, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    done = poll(api, key, r.json()["id"])
    assert done["usage"]["test"] is True and done["usage"]["output_tokens_details"]["image_tokens"] == 1_120


# ---------------------------------------------------------------- money budgets

def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


@pytest.fixture(scope="module")
def budgeted(worker_factory):
    """$1.00 a day per account, $0.80 the most per key, and the rate limit out of the way."""
    from helpers import Api
    return Api(worker_factory("budgeted", vars={
        "ACCOUNT_DAILY_BUDGET_USD": "1.00", "MAX_KEY_DAILY_BUDGET_USD": "0.80", "RATE_LIMIT_PER_MINUTE": "0"}))


def test_concurrent_requests_never_spend_past_the_account_budget(budgeted, fake_gemini):
    """24 concurrent 4K Pro images (about $0.26 each at worst) against $1.00: the spend never
    passes it, and every refusal is 429 budget_exceeded."""
    api = budgeted
    account = api.register()
    token, user = account["access_token"], account["user"]["id"]
    # Three keys of $0.80 each could reserve $2.40 together: the account's $1.00 binds.
    keys = [api.create_key(token, mode="live", daily_budget_usd=None)["key"] for _ in range(3)]
    t = tag()
    results = [None] * 24

    def one(i):
        results[i] = generate(api, keys[i % 3], prompt=f"race {t} {i}", model=PRO, resolution="4K")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    assert ok and refused
    for r in refused:
        assert_error(r, 429, "budget_exceeded", "rate_limit_error")
        assert int(r.headers["retry-after"]) > 0
    spent = sum(Decimal(r.json()["usage"]["cost_usd"]) for r in ok)
    assert spent <= Decimal("1.00")
    assert len(fake_gemini.usage_sent(t)) == len(ok), "a refused request never reached Gemini"
    # Settled: what D1 holds is what was charged, nothing left reserved.
    [row] = api.worker.sql("SELECT cost_micros, budget_micros FROM account_usage WHERE user_id = ?", [user])
    assert (row["cost_micros"], row["budget_micros"]) == (int(spent * 1_000_000), 1_000_000)
    report = api.get("/v1/usage", token=token).json()
    assert Decimal(report["live_cost_today_usd"]) == spent
    assert report["daily_budget_usd"] == "1.000000"
    assert Decimal(report["total"]["cost_usd"]) == spent


def test_settlement_gives_back_the_difference_and_a_failure_gives_back_everything(budgeted, fake_gemini):
    api = budgeted
    account = api.register()
    token, user = account["access_token"], account["user"]["id"]
    key = api.create_key(token, mode="live", daily_budget_usd="0.80")["key"]
    reserved = lambda: api.worker.sql(  # noqa: E731
        "SELECT cost_micros FROM account_usage WHERE user_id = ?", [user])[0]["cost_micros"]
    key_spent = lambda: api.worker.sql(  # noqa: E731
        "SELECT u.cost_micros FROM usage u JOIN api_keys k ON k.id = u.api_key_id WHERE k.user_id = ?", [user])[0]["cost_micros"]
    r = generate(api, key, prompt=f"settled {tag()}", model=PRO, resolution="4K")
    assert r.status_code == 200, r.text
    cost = micros(r.json()["usage"]["cost_usd"])
    estimate = api.post("/v1/estimate", {"prompt": "x" * 10, "model": PRO, "resolution": "4K"}, token=key).json()
    assert cost < micros(estimate["worst_case"]["cost_usd"])
    assert reserved() == cost and key_spent() == cost, "the worst case was reserved, the difference given back"
    r = generate(api, key, prompt=f"refused #block {tag()}", model=PRO, resolution="4K")
    assert r.status_code == 400
    assert reserved() == cost and key_spent() == cost, "a failed generation charges nothing"


def test_an_answer_past_the_worst_case_is_charged_in_full_and_logged(budgeted, fake_gemini):
    """Gemini thought far past the allowance: the cost passes what was reserved, is charged
    in full (never capped), and the log says so."""
    api = budgeted
    account = api.register()
    token, user = account["access_token"], account["user"]["id"]
    key = api.create_key(token, mode="live")["key"]
    t = tag()
    worst = api.post("/v1/estimate", {"prompt": f"overthink #thoughts:100000 {t}"}, token=key).json()["worst_case"]
    r = generate(api, key, prompt=f"overthink #thoughts:100000 {t}")
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == 100_000
    assert usage == expected_usage(tokens_of(fake_gemini.usage_sent(t)), FLASH)
    assert Decimal(usage["cost_usd"]) > Decimal(worst["cost_usd"])
    [row] = api.worker.sql("SELECT cost_micros FROM account_usage WHERE user_id = ?", [user])
    assert row["cost_micros"] == micros(usage["cost_usd"]), "charged in full, nothing left reserved"
    assert any("passed the reserved worst case" in e.get("event", "") for e in api.worker.log_entries(r.json()["id"]))


def test_a_keys_budget_refuses_what_its_worst_case_cannot_cover(budgeted):
    api = budgeted
    token = api.token()
    r = api.post("/v1/keys", {"mode": "live", "daily_budget_usd": "0.50000001"}, token=token)
    assert_error(r, 422, "out_of_range", param="daily_budget_usd")
    assert_error(api.post("/v1/keys", {"daily_budget_usd": "0.90"}, token=token), 422, "out_of_range",
                 param="daily_budget_usd")
    assert_error(api.post("/v1/keys", {"daily_budget_usd": 0.1}, token=token), 422, "invalid_type",
                 param="daily_budget_usd")
    created = api.create_key(token, mode="live", daily_budget_usd="0.10")
    assert created["daily_budget_usd"] == "0.100000"
    key = created["key"]
    first = generate(api, key, prompt=f"flash one {tag()}")
    assert first.status_code == 200, first.text
    second = generate(api, key, prompt=f"flash two {tag()}")
    assert_error(second, 429, "budget_exceeded")
    assert "key" in second.json()["error"]["message"]
    # A key with no budget of its own has MAX_KEY_DAILY_BUDGET_USD.
    listed = {k["id"]: k for k in api.get("/v1/keys", token=token).json()["data"]}
    assert listed[created["id"]]["daily_budget_usd"] == "0.100000"


def test_the_deployment_budget_stops_live_keys_and_not_test_ones(worker_factory):
    from helpers import Api
    api = Api(worker_factory("deployment-money", vars={"DEPLOYMENT_DAILY_BUDGET_USD": "0.30",
                                                       "RATE_LIMIT_PER_MINUTE": "0"}))
    key = api.live_key()
    assert generate(api, key, prompt=f"first {tag()}", model=PRO, resolution="4K").status_code == 200
    r = generate(api, api.live_key(), prompt=f"second {tag()}", model=PRO, resolution="4K")
    assert_error(r, 503, "deployment_budget_exhausted")
    assert "dollars" in r.json()["error"]["message"] and int(r.headers["retry-after"]) > 0
    assert generate(api, api.test_key(), prompt=f"test {tag()}", model=PRO, resolution="4K").status_code == 200


def test_an_admin_sets_an_accounts_budget(worker_factory):
    from helpers import Api, promote
    api = Api(worker_factory("admin-money", vars={"RATE_LIMIT_PER_MINUTE": "0"}))
    admin = api.register()
    promote(api.worker, admin["user"]["email"])
    admin_token = admin["access_token"]
    account = api.register()
    token, user = account["access_token"], account["user"]["id"]
    key = api.create_key(token, mode="live")["key"]
    r = api.post(f"/v1/admin/accounts/{user}", {"daily_budget_usd": "0"}, token=admin_token)
    assert r.status_code == 200, r.text
    assert r.json()["daily_budget_usd"] == "0.000000"
    assert_error(generate(api, key, prompt=f"no money {tag()}"), 429, "budget_exceeded")
    r = api.post(f"/v1/admin/accounts/{user}", {"daily_budget_usd": None}, token=admin_token)
    assert r.json()["daily_budget_usd"] is None
    ok = generate(api, key, prompt=f"money again {tag()}")
    assert ok.status_code == 200, ok.text
    usage = api.get("/v1/admin/usage", token=admin_token).json()
    today = usage["data"][0]
    assert Decimal(today["live_cost_usd"]) >= Decimal(ok.json()["usage"]["cost_usd"])
    [mine] = [a for a in usage["accounts"] if a["user_id"] == user]
    assert (mine["live_cost_usd"], mine["live_images"]) == (ok.json()["usage"]["cost_usd"], 1)


# ---------------------------------------------------------------- reading usage and estimates

def test_an_estimate_writes_nothing_and_bounds_what_the_generation_costs(api, fake_gemini):
    key = api.live_key()
    big = png_bytes(1600, 800, (10, 20, 30))  # 3 x 2 tiles of 768
    body = {"prompt": f"estimate me {tag()}", "model": PRO, "resolution": "2K", "n": 2,
            "images": [f"data:image/png;base64,{base64.b64encode(big).decode()}"]}
    count = lambda: api.worker.sql("SELECT COUNT(*) AS n FROM generations")[0]["n"]  # noqa: E731
    before = count()
    r = api.post("/v1/estimate", body, token=key)
    assert r.status_code == 200, r.text
    estimate = r.json()
    assert (estimate["object"], estimate["model"], estimate["resolution"], estimate["n"], estimate["input_images"]) \
        == ("estimate", PRO, "2K", 2, 1)
    typical, worst = estimate["typical"], estimate["worst_case"]
    assert typical["input_tokens_details"]["image_tokens"] == 2 * TILE_TOKENS * 6
    assert typical["output_tokens_details"] == {"image_tokens": 2 * 1_120, "text_tokens": 0, "reasoning_tokens": 0}
    assert worst["input_tokens_details"]["image_tokens"] == 2 * max(1_120, TILE_TOKENS * 6)
    assert worst["output_tokens_details"]["text_tokens"] == 2 * 2_000
    for shown in (typical, worst):
        tokens = {"input_text": shown["input_tokens_details"]["text_tokens"],
                  "input_image": shown["input_tokens_details"]["image_tokens"],
                  "output_image": shown["output_tokens_details"]["image_tokens"],
                  "output_text": shown["output_tokens_details"]["text_tokens"], "reasoning": 0}
        assert shown["cost_usd"] == cost_of(tokens, PRO)
    assert count() == before and fake_gemini.requests_with(body["prompt"]) == []
    drawn = generate(api, key, **body)
    assert drawn.status_code == 200, drawn.text
    actual = Decimal(drawn.json()["usage"]["cost_usd"])
    assert Decimal(typical["cost_usd"]) <= actual <= Decimal(worst["cost_usd"])
    # The generation's rules apply: what generate refuses, estimate refuses the same way.
    assert_error(api.post("/v1/estimate", {"prompt": "x", "resolution": "8K"}, token=key), 400, "invalid_value",
                 param="resolution")
    assert_error(api.post("/v1/estimate", {"prompt": "x"}), 401, "missing_authorization")


def test_usage_totals_are_the_sum_of_the_generations_costs_per_day_and_model(api):
    token = api.token()
    live = api.create_key(token, mode="live")
    test = api.create_key(token, mode="test")
    made = []
    for key, model, n in [(live, FLASH, 2), (live, PRO, 1), (test, PRO, 3), (live, FLASH, 1)]:
        r = generate(api, key["key"], prompt=f"usage {tag()}", model=model, n=n)
        assert r.status_code == 200, r.text
        made.append((key["id"], model, r.json()["usage"]))
    report = api.get("/v1/usage", token=token).json()
    total = sum(Decimal(u["cost_usd"]) for _, _, u in made)
    assert Decimal(report["total"]["cost_usd"]) == total
    assert Decimal(report["total"]["live_cost_usd"]) == sum(Decimal(u["cost_usd"]) for _, _, u in made if not u["test"])
    assert report["live_cost_today_usd"] == report["total"]["live_cost_usd"]
    assert report["total"]["images"] == 7
    by_row = {(c["api_key_id"], c["model"]): c for c in report["costs"]}
    assert set(by_row) == {(live["id"], FLASH), (live["id"], PRO), (test["id"], PRO)}
    flash = by_row[(live["id"], FLASH)]
    assert flash["images"] == 3 and flash["date"] == report["today"]
    assert Decimal(flash["cost_usd"]) == sum(Decimal(u["cost_usd"]) for k, m, u in made if (k, m) == (live["id"], FLASH))
    assert flash["output_image_tokens"] == sum(u["output_tokens_details"]["image_tokens"]
                                               for k, m, u in made if (k, m) == (live["id"], FLASH))
    # A key sees its own rows only.
    mine = api.get("/v1/usage", token=test["key"]).json()
    assert {c["api_key_id"] for c in mine["costs"]} == {test["id"]}
    assert mine["total"]["live_cost_usd"] == "0.000000"


def test_models_publish_their_prices_and_tokens_per_resolution(api):
    models = {m["id"]: m["capabilities"] for m in api.get("/v1/models").json()["data"]}
    assert models[PRO]["pricing"] == {"input_text_per_million_usd": "2.000000", "input_image_per_million_usd": "2.000000",
                                      "output_image_per_million_usd": "120.000000",
                                      "output_text_per_million_usd": "12.000000"}
    assert models[PRO]["image_tokens"] == {"1K": 1_120, "2K": 1_120, "4K": 2_000}
    assert models[FLASH]["image_tokens"] == {"512": 747, "1K": 1_120, "2K": 1_680, "4K": 2_520}
    assert models[FLASH]["pricing"]["output_image_per_million_usd"] == "60.000000"


def test_operator_prices_are_what_every_cost_is_computed_at(worker_factory, fake_gemini):
    from helpers import Api
    prices = '{"gemini-3.1-flash-image": {"output_image_per_million_usd": "90.5", "output_text_per_million_usd": "0"}}'
    api = Api(worker_factory("priced", vars={"GEMINI_PRICES": prices}))
    [flash] = [m for m in api.get("/v1/models").json()["data"] if m["id"] == FLASH]
    assert flash["capabilities"]["pricing"]["output_image_per_million_usd"] == "90.500000"
    t = tag()
    r = generate(api, api.live_key(), prompt=f"priced {t}")
    assert r.status_code == 200, r.text
    tokens = tokens_of(fake_gemini.usage_sent(t))
    expected = (Decimal(tokens["input_text"] + tokens["input_image"]) * Decimal("0.50")
                + Decimal(tokens["output_image"]) * Decimal("90.5")) / 1_000_000
    assert r.json()["usage"]["cost_usd"] == str(expected.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))
    # (A GEMINI_PRICES out of form is refused as server_misconfigured: src/config.rs tests each way.)
