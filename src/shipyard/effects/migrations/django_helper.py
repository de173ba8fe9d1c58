"""Run inside the release's Django (``python manage.py shell -c <this file>``).

It imports the release's Django, never shipyard, so it uses only the standard library and
Django. Arguments come in ``$SHIPYARD_MIGRATION_ARGS`` (JSON); it prints one line
``SHIPYARD-JSON: {...}``. ``state`` reports the applied leaf per app, the graph's leaves and the
pending migrations with their destructive and irreversible operations; ``down TARGET`` reports
the migrations a downgrade to TARGET would unapply that cannot be reversed.
"""

import json
import os

from django.db import connection
from django.db.migrations import operations as ops
from django.db.migrations.executor import MigrationExecutor

MARK = "SHIPYARD-JSON: "


def _describe(loader, migration, created=None):
    """A pending migration's label, irreversible and destructive operations. `created` holds
    the models (app, lower-case name) that earlier pending migrations create: changing one of
    those destroys no data that exists now (a first deploy runs contenttypes' RemoveField)."""
    app, name = migration.app_label, migration.name
    created = set() if created is None else created
    found, irreversible = [], []
    before = None
    for op in migration.operations:
        kind = type(op).__name__
        if not op.reversible:
            irreversible.append(kind)
        if isinstance(op, ops.CreateModel):
            created.add((app, op.name_lower))
            continue
        model_name = getattr(op, "model_name_lower", None) or getattr(op, "name_lower", None)
        if isinstance(op, ops.RenameModel):
            model_name = op.old_name_lower
        if (app, model_name) in created:
            if isinstance(op, ops.RenameModel):
                created.add((app, op.new_name_lower))
            continue
        if isinstance(op, ops.RemoveField):
            found.append(f"RemoveField {op.model_name}.{op.name}")
        elif isinstance(op, ops.DeleteModel):
            found.append(f"DeleteModel {op.name}")
        elif isinstance(op, ops.RenameField):
            found.append(f"RenameField {op.model_name}.{op.old_name} → {op.new_name}")
        elif isinstance(op, ops.RenameModel):
            found.append(f"RenameModel {op.old_name} → {op.new_name}")
        elif isinstance(op, ops.AlterField):
            if before is None:
                before = loader.project_state((app, name), at_end=False)
            model = before.models.get((app, op.model_name_lower))
            old = model.fields.get(op.name) if model is not None else None
            if old is not None and old.db_type(connection) != op.field.db_type(connection):
                found.append(
                    f"AlterField {op.model_name}.{op.name} changes its type "
                    f"({old.db_type(connection)} → {op.field.db_type(connection)})"
                )
    return {
        "revision": f"{app}.{name}",
        "label": f"{app}.{name}",
        "reversible": not irreversible,
        "irreversible": irreversible,
        "destructive": found,
    }


def _pending(loader, plan):
    created = set()
    return [_describe(loader, m, created) for m, backwards in plan if not backwards]


def _applied_leaves(loader, applied):
    """app → the last applied migration of the app, in the graph's order."""
    leaves = {}
    for node in loader.graph.leaf_nodes():
        for app, name in loader.graph.forwards_plan(node):
            if (app, name) in applied:
                leaves[app] = name
    return leaves


def _joined(mapping):
    return ",".join(f"{app}.{mapping[app]}" for app in sorted(mapping)) or None


def main():
    args = json.loads(os.environ.get("SHIPYARD_MIGRATION_ARGS") or "[]")
    executor = MigrationExecutor(connection)
    loader = executor.loader
    applied = set(loader.applied_migrations)
    leaves = loader.graph.leaf_nodes()
    if args[0] == "state":
        plan = executor.migration_plan(leaves)
        result = {
            "current": _joined(_applied_leaves(loader, applied)),
            "head": _joined(dict(leaves)),
            "apps": sorted({app for app, _ in leaves}),
            "pending": _pending(loader, plan),
        }
    elif args[0] == "down":
        wanted = dict(part.split(".", 1) for part in (args[1] or "").split(",") if part)
        current = _applied_leaves(loader, applied)
        targets = [(app, wanted.get(app)) for app in current if wanted.get(app) != current[app]]
        plan = executor.migration_plan(targets)
        blocked = [
            _describe(loader, m)["label"]
            for m, backwards in plan
            if backwards and not _describe(loader, m)["reversible"]
        ]
        result = {"irreversible": blocked}
    else:
        raise SystemExit(f"unknown action {args[0]!r}")
    print(MARK + json.dumps(result))


main()
