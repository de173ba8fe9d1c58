"""Run by the release's own Python in the release folder (``python -c <this file> …``).

It imports the release's Alembic, never shipyard, so it must work on Python 3.9+ with the
standard library and Alembic only. Usage: ``state|upgrade|downgrade CONFIG [REVISION]``; it
prints one line ``SHIPYARD-JSON: {...}`` for shipyard to read.
"""

from __future__ import annotations

import ast
import json
import sys

MARK = "SHIPYARD-JSON: "
# Operations that destroy or rename data; alter_column and add_column are judged by arguments.
DROPS = {"drop_table", "drop_column", "rename_table"}


def _function(tree, name):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _does_nothing(func):
    """A downgrade of only `pass`, a docstring, `...` or `raise` undoes nothing."""
    if func is None:
        return True
    for stmt in func.body:
        if isinstance(stmt, (ast.Pass, ast.Raise)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        return False
    return True


def _keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_false(node):
    return isinstance(node, ast.Constant) and node.value is False


def _text(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return "?"


def _destructive(func):
    """What the upgrade's operations destroy or rename, and the SQL it executes verbatim."""
    found, sql = [], []
    if func is None:
        return found, sql
    for node in ast.walk(func):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        op, args = node.func.attr, node.args
        first = _text(args[0]) if args else "?"
        if op in DROPS:
            found.append(f"{op}({', '.join(_text(a) for a in args[:2])})")
        elif op == "alter_column":
            if _keyword(node, "type_") is not None:
                found.append(f"alter_column({first}, type_=…) changes a column's type")
            if _keyword(node, "new_column_name") is not None:
                found.append(f"alter_column({first}, new_column_name=…) renames a column")
            if _is_false(_keyword(node, "nullable")) and _keyword(node, "server_default") is None:
                found.append(f"alter_column({first}, nullable=False) without a server_default")
        elif op == "add_column":
            for column in args[1:2] or args[:1]:
                if (
                    isinstance(column, ast.Call)
                    and _is_false(_keyword(column, "nullable"))
                    and _keyword(column, "server_default") is None
                ):
                    name = _text(column.args[0]) if column.args else "?"
                    found.append(f"add_column({first}, {name}) nullable=False without a default")
        elif op == "execute" and args and _text(args[0]) != "?":
            sql.append(_text(args[0]))
    return found, sql


def _describe(script, revision):
    with open(revision.path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), revision.path)
    found, sql = _destructive(_function(tree, "upgrade"))
    doc = (revision.doc or "").strip()
    return {
        "revision": revision.revision,
        "label": f"{revision.revision} ({doc})" if doc else revision.revision,
        "reversible": not _does_nothing(_function(tree, "downgrade")),
        "destructive": found,
        "sql": sql,
    }


def _current(config, script):
    from alembic.runtime.environment import EnvironmentContext

    heads = []

    def read(rev, context):
        heads.extend(context.get_current_heads())
        return []

    with EnvironmentContext(config, script, fn=read, dont_mutate=True):
        script.run_env()
    return sorted(heads)


def main(argv):
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    action, config_file = argv[0], argv[1]
    target = argv[2] if len(argv) > 2 else ""
    config = Config(config_file)
    script = ScriptDirectory.from_config(config)
    if action == "upgrade":
        command.upgrade(config, target or "heads")
    elif action == "downgrade":
        current = _current(config, script)
        if current:
            undo = script.iterate_revisions(tuple(current), target or "base")
            for revision in undo:
                described = _describe(script, revision)
                if not described["reversible"]:
                    print(MARK + json.dumps({"irreversible": described["label"]}))
                    return
            command.downgrade(config, target or "base")
    elif action != "state":
        raise SystemExit(f"unknown action {action!r}")
    current = _current(config, script)
    heads = sorted(script.get_heads())
    lower = tuple(current) if current else "base"
    pending = list(script.iterate_revisions("heads", lower)) if heads else []
    pending.reverse()  # oldest first, the order an upgrade applies them
    result = {
        "current": ",".join(current) or None,
        "head": ",".join(heads) or None,
        "branch_points": sorted(r.revision for r in script.walk_revisions() if r.is_branch_point),
        "pending": [_describe(script, r) for r in pending],
    }
    print(MARK + json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
