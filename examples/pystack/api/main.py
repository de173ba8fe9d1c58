"""The API: FastAPI, served by uvicorn from the component's own environment."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/api/hello")
def hello() -> dict[str, str]:
    return {"hello": "world", "release": os.environ.get("SHIPYARD_RELEASE", "dev")}
