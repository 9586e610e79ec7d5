"""Hand-made HS256 tokens, to present the Worker with expired, foreign and tampered ones."""

import base64
import hashlib
import hmac
import json
import secrets
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(secret: str, sub: str, exp_offset: int = 3600, iss: str = "nanobanana", aud: str = "nanobanana-api",
             alg: str = "HS256", ver: int = 0) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"iat": now - 10, "nbf": now - 10, "exp": now + exp_offset, "iss": iss, "aud": aud,
                                "sub": sub, "jti": secrets.token_hex(16), "ver": ver}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"
