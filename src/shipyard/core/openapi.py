"""What changed between two versions of an API contract, as its consumers see it (pure).

For OpenAPI (and Swagger 2) documents, JSON or YAML: removed paths and operations, removed
response fields and newly required request fields or parameters break consumers; added
ones do not. Anything else (another format, a file that does not parse) is "changed",
never guessed to be harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DEPTH = 8  # nested schemas compared this deep ($ref cycles end here)


@dataclass(frozen=True)
class ContractDiff:
    """Breaking and additive differences; `openapi` says whether both sides were compared."""

    openapi: bool
    breaking: list[str] = field(default_factory=list)
    additive: list[str] = field(default_factory=list)

    @property
    def additive_only(self) -> bool:
        return self.openapi and not self.breaking

    def summary(self) -> str:
        if not self.openapi:
            return "changed"
        items = self.breaking or self.additive or ["no difference a consumer sees"]
        shown = "; ".join(items[:5])
        return shown + (f"; and {len(items) - 5} more" if len(items) > 5 else "")


def parse_document(text: str | None) -> dict[str, Any] | None:
    """An OpenAPI/Swagger document (JSON or YAML), or None (absent, unreadable, not OpenAPI)."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        import yaml  # only for YAML contracts: not on the CLI's start-up path

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    if isinstance(data, dict) and ("openapi" in data or "swagger" in data):
        return _dict(data)
    return None


def diff_contract(old_text: str | None, new_text: str | None) -> ContractDiff:
    """Compare two versions of a contract file (None: the file is absent on that side)."""
    new = parse_document(new_text)
    if old_text is None and new is not None:
        return ContractDiff(True, additive=["new contract document"])
    old = parse_document(old_text)
    if new_text is None and old is not None:
        return ContractDiff(True, breaking=["contract document removed"])
    if old is None or new is None:
        return ContractDiff(False)
    breaking: list[str] = []
    additive: list[str] = []
    old_paths, new_paths = _keyed(old.get("paths")), _keyed(new.get("paths"))
    for path in sorted(set(old_paths) - set(new_paths)):
        breaking.append(f"removed path {path}")
    for path in sorted(set(new_paths) - set(old_paths)):
        additive.append(f"added path {path}")
    for path in sorted(set(old_paths) & set(new_paths)):
        before, after = _dict(old_paths[path]), _dict(new_paths[path])
        for method in _METHODS:
            op = f"{method.upper()} {path}"
            if method in before and method not in after:
                breaking.append(f"removed operation {op}")
            elif method in after and method not in before:
                additive.append(f"added operation {op}")
            elif method in before:
                _operation(op, (old, _dict(before[method])), (new, _dict(after[method])), breaking)
    return ContractDiff(True, breaking, additive)


def _dict(value: Any) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _keyed(value: Any) -> dict[str, Any]:
    """A mapping with text keys (YAML reads `200:` as a number)."""
    return {str(k): v for k, v in _dict(value).items()}


Side = tuple[dict[str, Any], dict[str, Any]]  # (document, operation)


def _operation(op: str, old: Side, new: Side, breaking: list[str]) -> None:
    old_doc, before = old
    new_doc, after = new
    was = {_param_key(old_doc, p) for p in _params(old_doc, before) if p.get("required")}
    for param in _params(new_doc, after):
        key = _param_key(new_doc, param)
        if param.get("required") and key not in was:
            breaking.append(f"{op}: parameter {key[1]} ({key[0]}) is now required")
    old_body = _body_schema(old_doc, before)
    new_body = _body_schema(new_doc, after)
    for name in _required_fields(new_doc, new_body, old_doc, old_body, "", _DEPTH):
        breaking.append(f"{op}: request field {name} is now required")
    old_responses, new_responses = _keyed(before.get("responses")), _keyed(after.get("responses"))
    for code in sorted(set(old_responses) & set(new_responses)):
        was_schema = _response_schema(old_doc, old_responses[code])
        now_schema = _response_schema(new_doc, new_responses[code])
        for name in _removed_fields(old_doc, was_schema, new_doc, now_schema, "", _DEPTH):
            breaking.append(f"{op}: response {code} no longer has field {name}")
    for code in sorted(set(old_responses) - set(new_responses)):
        breaking.append(f"{op}: response {code} removed")


def _resolve(doc: dict[str, Any], node: Any) -> dict[str, Any]:
    """Follow local `$ref`s (`#/components/schemas/X`, `#/definitions/X`)."""
    for _ in range(_DEPTH):
        schema = _dict(node)
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = doc
        for part in ref[2:].split("/"):
            target = _dict(target).get(part.replace("~1", "/").replace("~0", "~"))
        node = target
    return _dict(node)


def _params(doc: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]]:
    raw = op.get("parameters")
    return [_resolve(doc, p) for p in raw] if isinstance(raw, list) else []


def _param_key(doc: dict[str, Any], param: dict[str, Any]) -> tuple[str, str]:
    return (str(param.get("in", "")), str(param.get("name", "")))


def _body_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    body = _resolve(doc, op.get("requestBody"))
    if body:
        return _json_schema(doc, body)
    for param in _params(doc, op):  # Swagger 2: an `in: body` parameter
        if param.get("in") == "body":
            return _resolve(doc, param.get("schema"))
    return {}


def _response_schema(doc: dict[str, Any], response: Any) -> dict[str, Any]:
    response = _resolve(doc, response)
    if "schema" in response:  # Swagger 2
        return _resolve(doc, response["schema"])
    return _json_schema(doc, response)


def _json_schema(doc: dict[str, Any], holder: dict[str, Any]) -> dict[str, Any]:
    content = _dict(holder.get("content"))
    media = content.get("application/json") or next(iter(content.values()), None)
    return _resolve(doc, _dict(media).get("schema"))


def _properties(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    props: dict[str, dict[str, Any]] = {}
    for part in [schema, *(_resolve(doc, s) for s in schema.get("allOf") or [])]:
        for name, sub in _keyed(part.get("properties")).items():
            props[name] = _resolve(doc, sub)
    if schema.get("type") == "array" or "items" in schema:
        # The items are one more level (`[]`), which the callers' depth bounds: a schema
        # whose items refer to itself is valid and must not recurse without end.
        props["[]"] = _resolve(doc, schema.get("items"))
    return props


def _required(schema: dict[str, Any]) -> set[str]:
    raw = schema.get("required")
    return {str(r) for r in raw} if isinstance(raw, list) else set()


def _removed_fields(
    old_doc: dict[str, Any],
    old: dict[str, Any],
    new_doc: dict[str, Any],
    new: dict[str, Any],
    prefix: str,
    depth: int,
) -> list[str]:
    if depth <= 0:
        return []
    before, after = _properties(old_doc, old), _properties(new_doc, new)
    found = [f"{prefix}{n}" for n in sorted(set(before) - set(after))]
    for name in sorted(set(before) & set(after)):
        found += _removed_fields(
            old_doc, before[name], new_doc, after[name], f"{prefix}{name}.", depth - 1
        )
    return found


def _required_fields(
    new_doc: dict[str, Any],
    new: dict[str, Any],
    old_doc: dict[str, Any],
    old: dict[str, Any],
    prefix: str,
    depth: int,
) -> list[str]:
    if depth <= 0:
        return []
    found = [f"{prefix}{n}" for n in sorted(_required(new) - _required(old))]
    before, after = _properties(old_doc, old), _properties(new_doc, new)
    for name in sorted(set(before) & set(after)):
        found += _required_fields(
            new_doc, after[name], old_doc, before[name], f"{prefix}{name}.", depth - 1
        )
    return found
