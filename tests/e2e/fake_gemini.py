"""A fake of Gemini's generateContent endpoint on 127.0.0.1, speaking its wire format.

`POST /v1beta/models/{model}:generateContent` with `x-goog-api-key`. What it answers is
chosen by directives in the prompt, so concurrent tests never share state:

    (none)                    an image: a thought text, a thought (draft) image, then the PNG
    #jpeg                     the final image is image/jpeg
    #block                    200, no candidates, promptFeedback.blockReason = SAFETY
    #finish:REASON            200, one candidate with finishReason REASON and no image
    #textonly                 200, STOP with a text part only
    #badkey                   400 INVALID_ARGUMENT with reason API_KEY_INVALID
    #garbage                  200 with a body that is not JSON
    #malformed                200 JSON with candidates of the wrong shape
    #status:CODE:TIMES:TAG    answer CODE (Google's error envelope) to the first TIMES calls
                              carrying TAG, then succeed
    #retry:SECS:TIMES:TAG     like #status with 429 and a google.rpc.RetryInfo retryDelay
    #slow:SECS                sleep SECS before answering
    #failfrom:K:TAG           every call carrying TAG from the K-th on fails with 500 (so with
                              n=3 and K=3, two images arrive and the third fails all retries)
    #bigpng:KB                the final image is a PNG of about KB kilobytes of noise
    #thoughts:N               usageMetadata reports N thinking tokens
    #svg                      the final image is an SVG with script, declared image/svg+xml
    #svgaspng                 the same SVG bytes, declared image/png
    #retrydelay:VALUE:TAG     429 with RetryInfo retryDelay "VALUE" (any text, e.g. 1e300s),
                              every time
    #hold:TAG                 do not answer until the test calls `release(TAG)` (or 120 s
                              pass): orders a test by what it can observe, not by sleeping
    #barrier:N:TAG            answer no call carrying TAG until N of them have arrived (or
                              60 s pass, then 500): proves N calls were in flight at once

Input images (`inlineData` parts before the text) are checked as Gemini checks them: an
image/* mimeType and base64 data that decodes, else 400 INVALID_ARGUMENT. The recorded
request keeps the parts' types and sizes under "inputs".

An image answer carries a realistic `usageMetadata` (`usage_metadata()`): prompt tokens
split by modality (text by length, 258 per 768-pixel tile of each input image), the
model's documented image tokens for the asked `imageSize`, output text and thoughts that
vary with the prompt.

Every request is recorded (path, headers, parsed body) for tests to inspect, and
`expect(TEXT, calls=N)` holds a test to an exact number of calls carrying TEXT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOGLE_KEY = "fake-google-key-for-tests"


def png_bytes(width: int = 8, height: int = 8, rgb=(200, 30, 90)) -> bytes:
    """A real, decodable PNG."""
    row = b"\x00" + bytes(rgb) * width
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def noise_png(size: int) -> bytes:
    """A real PNG of random pixels (incompressible), about `size` bytes."""
    import os
    side = max(1, int((size / 3) ** 0.5))
    row = lambda: b"\x00" + os.urandom(3 * side)  # noqa: E731
    raw = b"".join(row() for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


# A 1x1 baseline JPEG.
JPEG_BYTES = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////"
    "////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgB"
    "AQABPxA="
)

FINAL_PNG = png_bytes(8, 8, (200, 30, 90))
SVG_BYTES = b"<svg xmlns='http://www.w3.org/2000/svg' onload='fetch(\"/v1/keys\")'><script>alert(1)</script></svg>"
DRAFT_PNG = png_bytes(4, 4, (0, 0, 0))


# Output image tokens per image, as Google documents them per model and imageSize.
IMAGE_TOKENS = {
    "gemini-3.1-flash-image": {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    "gemini-3-pro-image": {"1K": 1120, "2K": 1120, "4K": 2000},
}
# An input image costs 258 tokens per 768x768 tile (at least one), as Gemini counts them.
TILE_TOKENS = 258
FINAL_TEXT = "Here is your image."


def text_tokens(text: str) -> int:
    """About four characters a token, as Gemini's documentation estimates."""
    return max(1, (len(text) + 3) // 4)


def usage_metadata(model: str, body: dict | None, prompt: str, input_sizes: list[tuple[int, int]]) -> dict:
    """What the fake reports for one image answer, varying with the prompt, the inputs and
    the resolution, so nothing a test checks can be hard-coded in the Worker."""
    size = ((body or {}).get("generationConfig", {}).get("imageConfig", {}) or {}).get("imageSize", "1K")
    image_out = IMAGE_TOKENS.get(model, IMAGE_TOKENS["gemini-3.1-flash-image"]).get(size, 1120)
    history = (body or {}).get("_history") or {"text": "", "sizes": []}
    text_in = text_tokens(history["text"] + prompt)
    image_in = sum(TILE_TOKENS * max(1, -(-w // 768)) * max(1, -(-h // 768))
                   for w, h in [*history["sizes"], *input_sizes])
    text_out = text_tokens(FINAL_TEXT) + text_tokens("Thinking about composition...")
    thoughts = 64 + len(prompt) % 97
    if m := re.search(r"#thoughts:(\d+)", prompt):
        thoughts = int(m.group(1))  # a model that thought far longer than usual
    details_in = [{"modality": "TEXT", "tokenCount": text_in}] + (
        [{"modality": "IMAGE", "tokenCount": image_in}] if image_in else [])
    return {
        "promptTokenCount": text_in + image_in, "promptTokensDetails": details_in,
        "candidatesTokenCount": image_out + text_out,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_out},
                                    {"modality": "TEXT", "tokenCount": text_out}],
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": text_in + image_in + image_out + text_out + thoughts,
    }


SIGNING_KEY = b"fake-gemini-thought-signatures"


def signature(content: str) -> str:
    """The thoughtSignature the fake puts on a part: bound to the part's content."""
    return base64.b64encode(hmac.new(SIGNING_KEY, content.encode(), hashlib.sha256).digest() * 4).decode()


def check_signatures(earlier: list[dict]) -> str | None:
    """Gemini's rule for the earlier turns of a multi-turn request: every model turn comes
    back with its parts' signatures exactly as they were sent. The error it answers
    otherwise, or None. Thought parts need not come back."""
    for turn in earlier:
        if turn.get("role") != "model":
            continue
        for i, part in enumerate(turn["parts"]):
            if "inlineData" in part:
                content = part["inlineData"]["data"]
                if part.get("thoughtSignature") != signature(content):
                    return "Image part is missing a thought_signature in content position 2, part position " + str(i + 1)
            elif i == 0 and part.get("thoughtSignature") != signature(part.get("text", "")):
                return "Text part is missing a thought_signature in content position 2, part position 1"
    return None


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height from its header (8x8 for anything else)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return 8, 8


def error_body(code: int, status: str, message: str, details=None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status, "details": details or []}}).encode()


STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._holds: dict[str, threading.Event] = {}
        self._arrived = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, content_type, body = fake.answer(self.path, dict(self.headers), raw)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the Worker gave up (deadline) before we answered

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests_with(self, text: str) -> list[dict]:
        """Recorded requests whose prompt contains `text`."""
        with self._lock:
            return [r for r in self.requests if text in r.get("prompt", "")]

    def calls(self, text: str) -> int:
        """How many calls carried `text` in their prompt."""
        return len(self.requests_with(text))

    @contextmanager
    def expect(self, text: str, calls: int):
        """Holds the block to exactly `calls` upstream calls carrying `text`."""
        before = self.calls(text)
        yield
        made = self.calls(text) - before
        assert made == calls, f"expected {calls} upstream call(s) carrying {text!r}, the fake saw {made}"

    def wait_for_calls(self, text: str, count: int, timeout: float = 60) -> list[dict]:
        """Blocks until `count` calls carrying `text` have arrived (an observable order,
        never a sleep); fails after `timeout`, far past any expected time."""
        deadline = time.time() + timeout
        with self._arrived:
            while self.calls(text) < count and time.time() < deadline:
                self._arrived.wait(0.2)
        found = self.requests_with(text)
        assert len(found) >= count, f"{len(found)} call(s) carrying {text!r} arrived, expected {count}"
        return found

    def _hold(self, tag: str) -> threading.Event:
        with self._lock:
            return self._holds.setdefault(tag, threading.Event())

    def release(self, tag: str) -> None:
        """Lets every call held by `#hold:TAG` answer."""
        self._hold(tag).set()

    def _count(self, tag: str) -> int:
        with self._lock:
            self._counts[tag] = self._counts.get(tag, 0) + 1
            return self._counts[tag]

    def answer(self, path: str, headers: dict, raw: bytes) -> tuple[int, str, bytes]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        prompt = ""
        try:
            # The new turn is the last one; earlier turns of a conversation come before it.
            prompt = " ".join(p.get("text", "") for p in body["contents"][-1]["parts"])
        except (TypeError, KeyError, IndexError):
            pass
        inputs, bad_input = [], None
        try:
            bad_input = check_signatures(body["contents"][:-1])
        except (TypeError, KeyError, IndexError, AttributeError):
            bad_input = "Invalid JSON payload received."
        try:
            for part in body["contents"][-1]["parts"]:
                if "inlineData" in part:
                    data = part["inlineData"]
                    try:
                        decoded = base64.b64decode(data["data"], validate=True)
                    except (ValueError, KeyError):
                        decoded = b""
                    if not data.get("mimeType", "").startswith("image/") or not decoded:
                        bad_input = "Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
                    inputs.append({"mime_type": data.get("mimeType"), "sha256": hashlib.sha256(decoded).hexdigest(),
                                   "bytes": len(decoded), "size": png_size(decoded)})
        except (TypeError, KeyError, IndexError):
            pass
        history = {"text": "", "sizes": []}  # what earlier turns of a conversation add to the prompt
        try:
            for turn in body["contents"][:-1]:
                for part in turn["parts"]:
                    if "inlineData" in part:
                        history["sizes"].append(png_size(base64.b64decode(part["inlineData"]["data"])))
                    elif not part.get("thought"):
                        history["text"] += part.get("text", "")
        except (TypeError, KeyError, IndexError, ValueError):
            pass
        with self._lock:
            # The base64 of images is not kept: a bench sends hundreds of megabytes of it.
            for turn in (body or {}).get("contents", []) if isinstance(body, dict) else []:
                for part in turn.get("parts", []) if isinstance(turn, dict) else []:
                    if isinstance(part, dict) and "inlineData" in part:
                        part["inlineData"]["data"] = f"<{len(part['inlineData'].get('data', ''))} base64 chars>"
            if isinstance(body, dict):
                body["_history"] = history
            entry = {"path": path, "headers": {k.lower(): v for k, v in headers.items()}, "body": body,
                     "prompt": prompt, "inputs": inputs, "at": time.time(), "answered": None, "image": False,
                     "roles": [c.get("role") for c in (body or {}).get("contents", []) if isinstance(c, dict)]}
            self.requests.append(entry)
        with self._arrived:
            self._arrived.notify_all()
        status, content_type, out = self._respond(path, headers, body, prompt, bad_input, inputs)
        # What this call cost upstream: an answer with a final image is one Gemini bills.
        entry["answered"], entry["image"] = status, status == 200 and b'"finishReason": "STOP"' in out and b"inlineData" in out
        if entry["image"]:
            entry["usage"] = json.loads(out).get("usageMetadata")
        return status, content_type, out

    def images_answered(self, text: str) -> int:
        """How many calls carrying `text` were answered with an image (what Google bills)."""
        return sum(1 for r in self.requests_with(text) if r["image"])

    def usage_sent(self, text: str) -> list[dict]:
        """The usageMetadata of each answer with an image to a call carrying `text`."""
        return [r["usage"] for r in self.requests_with(text) if r["image"] and r.get("usage")]

    def _respond(self, path: str, headers: dict, body, prompt: str, bad_input, inputs) -> tuple[int, str, bytes]:
        if not re.fullmatch(r"/v1beta/models/[A-Za-z0-9._-]+:generateContent", path):
            return 404, "application/json", error_body(404, "NOT_FOUND", f"unknown path {path}")
        if {k.lower(): v for k, v in headers.items()}.get("x-goog-api-key") != GOOGLE_KEY or "#badkey" in prompt:
            return 400, "application/json", error_body(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
            )
        if body is None:
            return 400, "application/json", error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if bad_input:
            return 400, "application/json", error_body(400, "INVALID_ARGUMENT", bad_input)

        if m := re.search(r"#hold:(\w+)", prompt):
            self._hold(m.group(1)).wait(120)
        if m := re.search(r"#barrier:(\d+):(\w+)", prompt):
            needed, tag = int(m.group(1)), m.group(2)
            deadline = time.time() + 60
            with self._arrived:
                while self.calls(f"#barrier:{needed}:{tag}") < needed and time.time() < deadline:
                    self._arrived.wait(0.2)
            if self.calls(f"#barrier:{needed}:{tag}") < needed:
                return 500, "application/json", error_body(500, "INTERNAL", "barrier: the other calls never came")
        if m := re.search(r"#slow:([\d.]+)", prompt):
            time.sleep(float(m.group(1)))
        if m := re.search(r"#status:(\d{3}):(\d+):(\w+)", prompt):
            code, times, tag = int(m.group(1)), int(m.group(2)), m.group(3)
            if self._count("status:" + tag) <= times:
                return code, "application/json", error_body(code, STATUS_NAMES.get(code, "UNKNOWN"), "The model is overloaded. Please try again later.")
        if m := re.search(r"#retry:(\d+):(\d+):(\w+)", prompt):
            secs, times, tag = m.group(1), int(m.group(2)), m.group(3)
            if self._count("retry:" + tag) <= times:
                return 429, "application/json", error_body(
                    429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                    [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{secs}s"}],
                )
        if m := re.search(r"#retrydelay:(\S+?):(\w+)", prompt):
            return 429, "application/json", error_body(
                429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": m.group(1)}],
            )
        if m := re.search(r"#failfrom:(\d+):(\w+)", prompt):
            if self._count("failfrom:" + m.group(2)) >= int(m.group(1)):
                return 500, "application/json", error_body(500, "INTERNAL", "An internal error has occurred.")

        if "#garbage" in prompt:
            return 200, "text/html", b"<html>upstream proxy error</html>"
        if "#malformed" in prompt:
            return 200, "application/json", json.dumps({"candidates": [{"content": "not-an-object"}]}).encode()
        if "#block" in prompt:
            return 200, "application/json", json.dumps({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}).encode()
        if m := re.search(r"#finish:([A-Z_]+)", prompt):
            return 200, "application/json", json.dumps({"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": m.group(1), "index": 0}]}).encode()
        if "#textonly" in prompt:
            return 200, "application/json", json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "I can describe it, but here is no picture."}]}, "finishReason": "STOP"}]}).encode()

        mime, final = ("image/jpeg", JPEG_BYTES) if "#jpeg" in prompt else ("image/png", FINAL_PNG)
        if m := re.search(r"#bigpng:(\d+)", prompt):
            mime, final = "image/png", noise_png(int(m.group(1)) * 1024)
        if "#svgaspng" in prompt:
            mime, final = "image/png", SVG_BYTES
        elif "#svg" in prompt:
            mime, final = "image/svg+xml", SVG_BYTES
        final_b64 = base64.b64encode(final).decode()
        # As Gemini 3 image models do: a signature on the first part after the thoughts and
        # on the image, which must come back unchanged when the conversation continues.
        parts = [
            {"text": "Thinking about composition...", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(DRAFT_PNG).decode()}, "thought": True},
            {"text": FINAL_TEXT, "thoughtSignature": signature(FINAL_TEXT)},
            {"inlineData": {"mimeType": mime, "data": final_b64}, "thoughtSignature": signature(final_b64)},
        ]
        return 200, "application/json", json.dumps({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage_metadata(path.split("/")[-1].split(":")[0], body, prompt,
                                            [i["size"] for i in inputs]),
            "modelVersion": path.split("/")[-1].split(":")[0],
        }).encode()
