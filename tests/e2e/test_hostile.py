"""A hostile corpus against a fresh instance: each body answers a 4xx envelope, and the
Worker's wasm memory (which never shrinks, so each figure is the peak so far) stays far
under the 128 MiB at which Cloudflare kills an isolate with every request on it."""

import pytest

from helpers import Api, assert_error

MIB = 1024 * 1024
# What the generation routes read at most (inputs::GENERATION_BODY_LIMIT).
BODY_LIMIT = 20_000_000 // 3 * 4 + 4 + MIB
LIMIT = 128 * MIB


def repeated(head: str, item: str, tail: str, size: int = BODY_LIMIT - 64) -> bytes:
    count = (size - len(head) - len(tail)) // len(item)
    body = head + item * count
    return (body.rstrip(",") + tail).encode()


def form(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + b"--B--\r\n"


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000008000000080802000000")

JSON = ("/v1/generate", "application/json")
FORM = ("/v1/images/edits", "multipart/form-data; boundary=B")

# Each body is built when its case runs (lazily): built at import, the corpus would hold
# some 300 MB in every pytest process that collects this file.
CORPUS = [
    ("13 million zeros in an unknown field", JSON, lambda: repeated('{"prompt":"x","junk":[', "0,", "]}"), 413,
     "payload_too_large"),
    ("13 million zeros in images", JSON, lambda: repeated('{"prompt":"x","images":[', "0,", "]}"), 422,
     "unsupported_by_model"),
    ("a 26 MB prompt", JSON, lambda: repeated('{"prompt":"', "x", '"}'), 413, "payload_too_large"),
    ("millions of tiny objects", JSON, lambda: repeated('{"prompt":"x","junk":[', "{},", "]}"), 413,
     "payload_too_large"),
    ("millions of fields", JSON, lambda: repeated('{"prompt":"x",', '"a":0,', "}"), 413, "payload_too_large"),
    ("deep nesting", JSON, lambda: repeated('{"prompt":"x","junk":', "[", ""), 400, "invalid_json"),
    ("an input with a huge unknown field", JSON,
     lambda: repeated('{"prompt":"x","images":[{"junk":[', "0,", "]}]}"), 400, "invalid_image"),
    ("a body one byte over the limit", JSON, lambda: b" " * (BODY_LIMIT + 1), 413, "payload_too_large"),
    ("27 MB of control bytes as the prompt", FORM,
     lambda: form([("image", "a.png", PNG), ("prompt", None, b"\x01" * 26_000_000)]), 413, "payload_too_large"),
    ("65 parts", FORM, lambda: form([("image[]", "a.png", PNG)] * 65), 400, "invalid_multipart"),
    ("64 parts of junk", FORM, lambda: form([("image[]", "x.png", b"\x07" * 300_000)] * 64), 400, "invalid_image"),
]


@pytest.fixture(scope="module")
def fresh(worker_factory):
    return Api(worker_factory("hostile", vars={"RATE_LIMIT_PER_MINUTE": "1000"}))


@pytest.mark.parametrize("name,route,body,status,code", CORPUS, ids=[c[0] for c in CORPUS])
def test_a_hostile_body_is_refused_within_bounded_memory(fresh, name, route, body, status, code):
    key = fresh.test_key()
    path, content_type = route
    r = fresh.http.post(f"{fresh.base}{path}", data=body(), timeout=120,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    assert_error(r, status, code)
    memory = fresh.worker.request_log(r.headers["x-request-id"])["wasm_memory_bytes"]
    assert memory < LIMIT, f"{name}: {memory / MIB:.0f} MiB of wasm memory"


def test_after_the_corpus_the_instance_still_generates(fresh):
    r = fresh.post("/v1/generate", {"prompt": "still here"}, token=fresh.test_key())
    assert r.status_code == 200, r.text[:200]
    memory = fresh.worker.request_log(r.headers["x-request-id"])["wasm_memory_bytes"]
    assert memory < 64 * MIB, f"{memory / MIB:.0f} MiB after the whole corpus"
