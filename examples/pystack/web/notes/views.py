import json
import os
import urllib.request

from django.http import HttpRequest, JsonResponse

from notes.models import Note


def health(request: HttpRequest) -> JsonResponse:
    # Healthy only once the schema is there: reading the table fails before `migrate`.
    return JsonResponse({"ok": True, "notes": Note.objects.count()})


def index(request: HttpRequest) -> JsonResponse:
    with urllib.request.urlopen(os.environ["SHIPYARD_URL_API"] + "/api/hello", timeout=5) as r:
        api = json.load(r)
    return JsonResponse(
        {"release": os.environ.get("SHIPYARD_RELEASE"), "notes": Note.objects.count(), "api": api}
    )
