"""The web console in headless Chromium: sign up, key, copy, generate, usage, history,
editing (upload, edit, edit the result, the chain in history), the webhook secret, a
background generation watched until it succeeds, revoke, refusal, then an admin suspending that account; keyboard only, every control
labelled; screenshots in test-output/."""

import subprocess

from harness import OUTPUT_DIR, ROOT
from helpers import promote


def test_console_in_headless_chromium(api):
    admin = api.register()
    promote(api.worker, admin["user"]["email"])
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "browser" / "console.mjs"), api.base, str(OUTPUT_DIR / "console"),
         admin["user"]["email"], admin["password"]],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ["1-sign-in", "2-keys", "3-playground", "4-usage", "5-history", "5b-edited", "5c-chain", "5d-async", "5e-conversation", "6-revoked", "7-refused",
                 "8-admin", "9-suspended"]:
        assert (OUTPUT_DIR / "console" / f"{name}.png").stat().st_size > 1000
