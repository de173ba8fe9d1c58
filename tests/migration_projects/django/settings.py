"""Settings of the test project: the database comes from $DATABASE_URL (a release's secret)."""

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

SECRET_KEY = "not-a-secret-test-project-only"
INSTALLED_APPS = ["shop"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_url = urlsplit(os.environ["DATABASE_URL"])
if _url.scheme == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(Path.cwd() / _url.path.lstrip("/")),
        }
    }
else:
    _options = {k: v[0] for k, v in parse_qs(_url.query).items()}
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": unquote(_url.username or ""),
            "PASSWORD": unquote(_url.password or ""),
            "HOST": _url.hostname or "",
            "PORT": str(_url.port or ""),
            "OPTIONS": _options,
        }
    }
