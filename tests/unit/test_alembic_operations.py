"""Which Alembic operations the helper calls destructive, and which downgrades undo nothing.

The helper runs inside a release's Python; its judgement of a revision's source is plain `ast`
work, tested here on the operations a revision file contains.
"""

from __future__ import annotations

import ast

import pytest

from shipyard.effects.migrations import alembic_helper as helper


def judge(body: str) -> list[str]:
    tree = ast.parse(f"def upgrade():\n{body}")
    found, _sql = helper._destructive(helper._function(tree, "upgrade"))
    return found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('    op.drop_table("orders")', ["drop_table(orders)"]),
        ('    op.drop_column("products", "price")', ["drop_column(products, price)"]),
        (
            '    with op.batch_alter_table("p") as b:\n        b.drop_column("name")',
            ["drop_column(name)"],
        ),
        ('    op.rename_table("a", "b")', ["rename_table(a, b)"]),
        (
            '    op.alter_column("p", "price", type_=sa.Text())',
            ["alter_column(p, type_=…) changes a column's type"],
        ),
        (
            '    op.alter_column("p", "name", new_column_name="title")',
            ["alter_column(p, new_column_name=…) renames a column"],
        ),
        (
            '    op.alter_column("p", "sku", nullable=False)',
            ["alter_column(p, nullable=False) without a server_default"],
        ),
        (
            '    op.add_column("p", sa.Column("sku", sa.Text, nullable=False))',
            ["add_column(p, sku) nullable=False without a default"],
        ),
        # safe: additive, nullable, with a default, or a comment-only change
        ('    op.add_column("p", sa.Column("sku", sa.Text, nullable=True))', []),
        (
            '    op.add_column("p", sa.Column("n", sa.Text, nullable=False, server_default="0"))',
            [],
        ),
        ('    op.alter_column("p", "sku", nullable=False, server_default="x")', []),
        ('    op.create_index("ix", "p", ["sku"])', []),
        ('    op.drop_index("ix")', []),
    ],
)
def test_destructive_operations(body: str, expected: list[str]) -> None:
    assert judge(body) == expected


def test_sql_run_by_op_execute_is_handed_on() -> None:
    tree = ast.parse('def upgrade():\n    op.execute("DROP TABLE orders")\n')
    assert helper._destructive(helper._function(tree, "upgrade")) == ([], ["DROP TABLE orders"])


@pytest.mark.parametrize(
    ("source", "undoes_nothing"),
    [
        ("def downgrade():\n    pass\n", True),
        ('def downgrade():\n    """Nothing to do."""\n', True),
        ("def downgrade():\n    raise NotImplementedError\n", True),
        ("x = 1\n", True),  # no downgrade at all
        ('def downgrade():\n    op.drop_column("p", "sku")\n', False),
    ],
)
def test_empty_downgrades_are_irreversible(source: str, undoes_nothing: bool) -> None:
    tree = ast.parse(source)
    assert helper._does_nothing(helper._function(tree, "downgrade")) is undoes_nothing
