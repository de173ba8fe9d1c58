"""Smoke test of a new backend release, run by `shipyard deploy --tests smoke` before the switch.

shipyard runs it in the release folder with ``SHIPYARD_URL_BACKEND`` pointing at the new,
not yet public release. Standard library only; exits non-zero (with the reason) on a failure.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.request import urlopen

base = os.environ["SHIPYARD_URL_BACKEND"].rstrip("/")
with urlopen(f"{base}/api/products", timeout=5) as answer:
    products = json.load(answer)
if not isinstance(products, list) or not products:
    sys.exit(f"GET /api/products: expected a non-empty list, got {products!r:.200}")
with urlopen(f"{base}/api/version", timeout=5) as answer:
    version = json.load(answer)
print(f"backend smoke ok: {len(products)} products, release {version.get('release')}")
