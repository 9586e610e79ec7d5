"""The OpenAPI document stays true: real responses validate against it, and schemathesis
fuzzes every operation against wrangler dev with a valid key and token."""

import json
import subprocess
import sys

import jsonschema
import pytest
import referencing

from harness import OUTPUT_DIR
from helpers import Api, tag


@pytest.fixture(scope="module")
def document(api):
    r = api.get("/v1/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    return doc


def response_schema(document, path, method, status):
    responses = document["paths"][path][method]["responses"]
    response = responses.get(str(status)) or responses["default"]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def validate(document, path, method, r):
    """Asserts the response matches the documented status, content type, body and headers."""
    responses = document["paths"][path][method]["responses"]
    assert str(r.status_code) in responses or "default" in responses, f"{r.status_code} undocumented for {method} {path}"
    spec = response_schema(document, path, method, r.status_code)
    for header in spec.get("headers", {}):
        if header.startswith("x-ratelimit") and r.status_code in (401,):
            continue
        assert header in r.headers, f"{method} {path} {r.status_code} lacks documented header {header}"
    content = spec.get("content")
    if not content:
        assert r.content == b""
        return
    content_type = r.headers["content-type"].split(";")[0]
    assert content_type in content, f"{content_type} not documented for {method} {path} {r.status_code}"
    if content_type != "application/json":
        return
    registry = referencing.Registry().with_resource("urn:doc", referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012))
    schema = {"$ref": "urn:doc#/components/schemas/_"}  # placeholder replaced below
    schema = dict(content[content_type]["schema"])
    schema = json.loads(json.dumps(schema).replace('"#/components/', '"urn:doc#/components/'))
    jsonschema.Draft202012Validator(schema, registry=registry, format_checker=jsonschema.FormatChecker()).validate(r.json())


def test_real_responses_match_the_document(api, document):
    token = api.token()
    key = api.create_key(token, mode="test")
    live = api.create_key(token, mode="live")
    # Each with the status it must have: a response that validates only because a 500
    # matches `default` fails here first.
    checks = [
        ("/health", "get", 200, api.get("/health")),
        ("/", "get", 200, api.get("/")),
        ("/v1/auth/register", "post", 201, api.post("/v1/auth/register", {"email": f"oa-{tag()}@example.com", "password": "password123"})),
        ("/v1/auth/register", "post", 422, api.post("/v1/auth/register", {"email": "bad", "password": "password123"})),
        ("/v1/auth/login", "post", 401, api.post("/v1/auth/login", {"email": "nobody@example.com", "password": "password123"})),
        ("/v1/auth/me", "get", 200, api.get("/v1/auth/me", token=token)),
        ("/v1/auth/me", "get", 401, api.get("/v1/auth/me")),
        ("/v1/keys", "post", 201, api.post("/v1/keys", {"name": "oa", "mode": "test", "expires_in_days": 5}, token=token)),
        ("/v1/keys", "get", 200, api.get("/v1/keys", token=token)),
        ("/v1/generate", "post", 200, api.post("/v1/generate", {"prompt": f"oa {tag()}", "n": 2}, token=key["key"])),
        ("/v1/generate", "post", 200, api.post("/v1/generate", {"prompt": f"oa {tag()}", "response_format": "b64_json"}, token=key["key"])),
        ("/v1/generate", "post", 422, api.post("/v1/generate", {"prompt": ""}, token=key["key"])),
        ("/v1/generate", "post", 400, api.post("/v1/generate", {"prompt": f"oa {tag()} #block"}, token=live["key"])),
        ("/v1/images/generations", "post", 200, api.post("/v1/images/generations", {"prompt": f"oa {tag()}"}, token=key["key"])),
        ("/v1/images/generations", "post", 200, api.post("/v1/images/generations", {"prompt": f"oa {tag()}", "response_format": "b64_json"}, token=key["key"])),
        ("/v1/generations", "get", 200, api.get("/v1/generations?limit=2", token=token)),
        ("/v1/usage", "get", 200, api.get("/v1/usage", token=key["key"])),
        ("/v1/usage", "get", 400, api.get("/v1/usage?from=bad", token=token)),
    ]
    generation = checks[9][3].json()
    url = generation["url"]
    tampered = api.http.get(url[:-1] + ("1" if url[-1] == "0" else "0"))
    checks += [
        ("/v1/generations/{id}", "get", 200, api.get(f"/v1/generations/{generation['id']}", token=token)),
        ("/v1/images/{id}", "get", 200, api.http.get(url)),
        ("/v1/images/{id}", "get", 403, tampered),
        ("/v1/keys/{id}", "delete", 204, api.delete(f"/v1/keys/{key['id']}", token=token)),
        ("/v1/keys/{id}", "delete", 404, api.delete(f"/v1/keys/{key['id']}x", token=token)),
        ("/v1/openapi.json", "get", 200, api.get("/v1/openapi.json")),
    ]
    for path, method, status, response in checks:
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text[:300]}"
        validate(document, path, method, response)


@pytest.fixture(scope="module")
def fuzz_api(worker_factory):
    return Api(worker_factory("schemathesis", vars={
        "RATE_LIMIT_PER_MINUTE": "1000000", "DAILY_IMAGE_QUOTA": "10000000", "REGISTER_MAX_PER_IP": "1000000",
        "LOGIN_MAX_FAILURES": "1000",
    }))


def schemathesis(api: Api, credential: str, tags: str, report: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{api.base}/v1/openapi.json", "--url", api.base,
         "-H", f"Authorization: Bearer {credential}",
         "--include-tag-regex", tags,
         "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
         "--max-examples", "25", "--generation-deterministic", "--request-timeout", "30",
         "--suppress-health-check", "all", "--no-color",
         "--report", "junit", "--report-junit-path", str(OUTPUT_DIR / report)],
        capture_output=True, text=True, timeout=900,
    )


@pytest.mark.parametrize("tags,credential", [("^(images|history)$", "key"), ("^(account|history|meta)$", "token")])
def test_schemathesis_finds_no_5xx_and_no_schema_violation(fuzz_api, tags, credential):
    token = fuzz_api.token()
    value = fuzz_api.create_key(token, mode="test")["key"] if credential == "key" else token
    result = schemathesis(fuzz_api, value, tags, f"schemathesis-{credential}.xml")
    (OUTPUT_DIR / f"schemathesis-{credential}.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
