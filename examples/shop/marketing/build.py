"""Build the marketing site into site/ (standard library only).

At build time there is no backend, so the site is static: the pages below, with placeholders
that serve.py fills at run time, ``{{release}}`` with ``SHIPYARD_RELEASE`` and ``{{commit}}``
with ``SHIPYARD_COMMIT``, because one build (one artifact) becomes many releases, and shipyard
reuses an unchanged artifact for later commits: a commit written in at build time would name
the wrong one as soon as that happens. serve.py is copied in, so site/ alone is the
artifact: shipyard starts it there as ``python serve.py --port $PORT``.

Run by hand:
    python build.py && (cd site && python serve.py --port 4003)
"""

from __future__ import annotations

import html
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"

FEATURES = [
    ("Built once", "Every component is built once per change and promoted as is."),
    ("Zero downtime", "New releases are health-checked before traffic moves to them."),
    ("One-step undo", "The previous release stays warm, so rolling back is a route switch."),
]

INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>shop: things you will actually use</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<header><h1>shop</h1><p>Totes, mugs and cards. Nothing you will not use.</p></header>
<main>
<section class="features">
{features}
</section>
<p>Browse the catalogue in the shop; prices include shipping.</p>
</main>
<footer>
release <code id="release">{{{{release}}}}</code>
&middot; commit <code id="commit">{{{{commit}}}}</code>
&middot; env {{{{env}}}} &middot; built {built_at}
</footer>
</body>
</html>
"""

STYLE = """body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 48rem; }
body { padding: 1rem; }
header h1 { margin-bottom: 0; }
.features { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1rem; }
.features article { border: 1px solid #ddd; border-radius: .4rem; padding: .8rem; }
footer { color: #666; font-size: .85rem; margin-top: 2rem; }
"""


def build(site: Path = SITE) -> Path:
    """Render the site into `site` (replacing what was there) and return it."""
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    features = "\n".join(
        f"<article><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p></article>"
        for title, text in FEATURES
    )
    built_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = INDEX.format(features=features, built_at=built_at)
    (site / "index.html").write_text(page, encoding="utf-8")
    (site / "style.css").write_text(STYLE, encoding="utf-8")
    (site / "build.json").write_text(json.dumps({"built_at": built_at}) + "\n", encoding="utf-8")
    shutil.copy2(HERE / "serve.py", site / "serve.py")
    shutil.copy2(HERE / "smoke.py", site / "smoke.py")  # `--tests smoke` runs it in the release
    return site


if __name__ == "__main__":
    out = build()
    print(f"marketing site built in {out}")
