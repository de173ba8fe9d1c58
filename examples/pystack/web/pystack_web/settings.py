"""Settings of the web component: everything that varies comes from the environment."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "notes"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "pystack_web.urls"
# `shared/` is linked into every release by shipyard: the database outlives releases.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("WEB_DATABASE", str(BASE_DIR / "shared" / "web.sqlite3")),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
