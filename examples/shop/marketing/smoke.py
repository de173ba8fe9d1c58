"""Smoke test of a new marketing release, run by `shipyard deploy --tests smoke` before the switch.

Copied into site/ by build.py (site/ is the artifact); ``SHIPYARD_URL_MARKETING`` is the new release.
"""

from __future__ import annotations

import os
import sys
from urllib.request import urlopen

base = os.environ["SHIPYARD_URL_MARKETING"].rstrip("/")
with urlopen(f"{base}/", timeout=5) as answer:
    page = answer.read().decode("utf-8", "replace")
if "<h1>shop</h1>" not in page:
    sys.exit("GET /: the home page has no shop heading")
print(f"marketing smoke ok: {len(page)} bytes")
