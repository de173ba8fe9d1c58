"""Smoke test of a new admin release, run by `shipyard deploy --tests smoke` before the switch.

``SHIPYARD_URL_ADMIN`` is the new admin release, which itself reaches the new backend release.
"""

from __future__ import annotations

import os
import sys
from urllib.request import urlopen

base = os.environ["SHIPYARD_URL_ADMIN"].rstrip("/")
with urlopen(f"{base}/", timeout=5) as answer:
    page = answer.read().decode("utf-8", "replace")
if "<table" not in page:
    sys.exit("GET /: the admin page shows no product table")
print(f"admin smoke ok: {len(page)} bytes")
