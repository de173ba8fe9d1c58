"""A worker without a port: asks the api for its release every two seconds, until SIGTERM."""

import os
import signal
import time
import urllib.request

from pydantic import BaseModel


class Hello(BaseModel):
    hello: str
    release: str


running = True


def stop(*_: object) -> None:
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
api = os.environ["SHIPYARD_URL_API"]
while running:
    try:
        with urllib.request.urlopen(f"{api}/api/hello", timeout=5) as response:
            answer = Hello.model_validate_json(response.read())
        print(f"api release {answer.release}", flush=True)
    except OSError as exc:
        print(f"api unreachable: {exc}", flush=True)
    time.sleep(2)
