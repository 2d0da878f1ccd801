"""Writing many rows at once, at the database driver's speed.

SQLAlchemy's executemany turns every row into bound parameters in Python (~10 µs a
row), and psycopg sends them one statement at a time: a bank file of 100,000 payments,
with their audit entries and invoice updates, would spend most of its time there.
Here each column's value goes through the column type's own bind processor (so dates,
UTC datetimes and JSON are stored exactly as the ORM stores them), then straight to the
driver: executemany on SQLite, COPY on PostgreSQL.

Callers see rows as dicts keyed by column name, in the current session's transaction.
These functions write no audit entries: crm.audit.bulk_create/bulk_update do.
"""

import gc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from crm.extensions import db
from crm.table_versions import note_written

_SQLITE_BATCH = 10_000


def id_in(column, ids: Sequence[int]):
    """`column IN (ids)` for up to a few thousand integer ids.

    On PostgreSQL as `column = ANY(:ids)`, one array parameter: an IN list of 1,000 is
    1,000 parameters, a statement too long for psycopg's cache (parsed again on every
    call) and planned anew by PostgreSQL each time.
    On SQLite as `column IN (SELECT value FROM json_each(:ids))`, one JSON parameter:
    SQLAlchemy renders an IN list parameter by parameter on every execution (~5 ms for
    1,000 in Python).
    """
    return _in_one_parameter(column, [int(i) for i in ids], Integer())


def text_in(column, texts: Sequence[str]):
    """`column IN (texts)` for up to a few thousand strings, as `id_in` does it."""
    return _in_one_parameter(column, [str(t) for t in texts], column.type)


def _in_one_parameter(column, items: list, element_type):
    dialect = db.session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return column.in_(items)
    return _in_parameter(column, None, element_type, dialect, _parameter_value(items, dialect))


def id_in_parameter(column, name: str, dialect: str):
    """`id_in` for a statement built once: the ids come at execution, as parameter
    `name` with the value `ids_value(ids, dialect)`."""
    return _in_parameter(column, name, Integer(), dialect)


def id_join_parameter(column, name: str, dialect: str):
    """`id_in_parameter` for a statement that also narrows the rows by an index of its
    own (a batch's rows, say). On PostgreSQL the ids are a table joined to `column`
    (`unnest(:name)`), which it hashes: a prepared statement's generic plan checks
    `= ANY(:name)` by reading the whole array for every row the index finds (1,000 ×
    1,000 comparisons for a batch: 2.5 ms on a quiet machine, against 1.5 ms joined)."""
    if dialect != "postgresql":
        return id_in_parameter(column, name, dialect)
    ids = select(
        func.unnest(bindparam(name, type_=ARRAY(Integer())), type_=Integer()).label("id")
    ).subquery(f"{name}_given")
    return column == ids.c.id


def ids_value(ids: Sequence[int], dialect: str):
    """The value of an `id_in_parameter`."""
    return _parameter_value([int(i) for i in ids], dialect)


def _in_parameter(column, name: str | None, element_type, dialect: str, *value):
    """`column` in the items of one parameter: an array on PostgreSQL, JSON on SQLite."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, *value, type_=ARRAY(element_type)))
    return column.in_(
        select(literal_column("value")).select_from(func.json_each(bindparam(name, *value)))
    )


def _parameter_value(items: list, dialect: str):
    return items if dialect == "postgresql" else json.dumps(items)


# Rows per statement where each row is bound parameters (IN lists, VALUES): far below
# both databases' limits on parameters, and a statement short enough to plan quickly.
CHUNK = 1000


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[list]:
    """`items` in lists of `size`."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def given_rows(name: str, columns: Sequence[tuple[str, TypeEngine]], rows: Sequence[tuple]):
    """`rows` as a table `name` (columns named and typed as given), for an UPDATE … FROM
    to join: many rows' changes in one statement, one parameter per column.

    On PostgreSQL `SELECT unnest(:a) AS a, unnest(:b) AS b …` over arrays; on SQLite the
    columns of a JSON array of rows (`json_each`). A VALUES list would be a parameter
    per value, compiled anew by SQLAlchemy for every length (~0.1 s for 1,000 rows):
    this statement is the same whatever the rows, so it is compiled once. Give the
    target columns' types: values are then stored as the ORM stores them.
    """
    dialect = db.session.get_bind().dialect
    if dialect.name == "postgresql":
        return select(
            *(
                func.unnest(
                    bindparam(None, [row[i] for row in rows], type_=ARRAY(type_)), type_=type_
                ).label(key)
                for i, (key, type_) in enumerate(columns)
            )
        ).subquery(name)
    processors = [type_.dialect_impl(dialect).bind_processor(dialect) for _key, type_ in columns]
    data = [
        [
            process(v) if process is not None and v is not None else v
            for v, process in zip(row, processors, strict=True)
        ]
        for row in rows
    ]
    value = literal_column("value")
    return (
        select(
            *(
                func.json_extract(value, f"$[{i}]", type_=type_).label(key)
                for i, (key, type_) in enumerate(columns)
            )
        )
        .select_from(func.json_each(bindparam(None, json.dumps(data, default=str))))
        .subquery(name)
    )


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for allocation-heavy bulk work.

    Reading and writing 100,000 payments allocates millions of small objects and no
    reference cycles; the collector would walk the growing heap again and again (about
    a third of an OCR import's time). Reference counting still frees everything, and
    collection resumes when the block ends. Process-wide, so keep the block short.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _processors(table: Table, columns: Sequence[str], dialect) -> list[Callable | None]:
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]


def _driver_rows(
    table: Table, columns: Sequence[str], rows: Iterable[dict], common: dict, dialect
) -> Iterable[tuple]:
    """Rows as tuples of driver values in `columns` order.

    Values in `common` are the same for every row and converted once.
    """
    processors = _processors(table, columns, dialect)
    fixed = {}
    for index, name in enumerate(columns):
        if name in common:
            value, process = common[name], processors[index]
            fixed[index] = process(value) if process and value is not None else value
    varying = [
        (index, name, processors[index]) for index, name in enumerate(columns) if index not in fixed
    ]
    template = [fixed.get(index) for index in range(len(columns))]
    for row in rows:
        values = template.copy()
        for index, name, process in varying:
            value = row.get(name)
            values[index] = process(value) if process is not None and value is not None else value
        yield tuple(values)


def defaults_for(table: Table, given: set[str]) -> dict:
    """Column defaults for the columns not in `given`, evaluated once for a batch."""
    values = {}
    for column in table.columns:
        if column.key in given or column.default is None:
            continue
        if column.default.is_scalar:
            values[column.key] = column.default.arg
        elif column.default.is_callable:
            # SQLAlchemy wraps callable defaults to take an execution context; ours
            # (utcnow and the like) ignore it.
            values[column.key] = column.default.arg(None)
    return values


def insert_rows(table: Table, rows: Sequence[dict], common: dict | None = None) -> None:
    """INSERT `rows` (plus the `common` values) into `table`.

    Columns a row leaves out get their column default, as an ORM insert would; ids
    come from the database. The caller reads them back if it needs them.
    """
    if not rows:
        return
    common = common or {}
    common = {**defaults_for(table, set(common) | set(rows[0])), **common}
    columns = [c.key for c in table.columns if c.key in common or c.key in rows[0]]
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        _copy_in(
            connection,
            table.name,
            columns,
            _driver_rows(table, columns, rows, common, connection.dialect),
        )
        return
    statement = insert(table).values({name: bindparam(name) for name in columns})
    _executemany(connection, statement, columns, table, rows, common)


def update_rows(table: Table, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """UPDATE `table` SET `fields` from each row, matched by its "id"."""
    if not rows:
        return
    connection = db.session.connection()
    columns = ["id", *fields]
    if connection.dialect.name == "postgresql":
        # COPY into a scratch table shaped like the target, then one UPDATE … FROM.
        scratch = Table(
            f"bulk_{table.name}",
            MetaData(),
            *(Column(name, table.c[name].type) for name in columns),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        scratch.create(connection)
        rows = _driver_rows(table, columns, rows, {}, connection.dialect)
        _copy_in(connection, scratch.name, columns, rows)
        connection.execute(
            update(table)
            .where(table.c.id == scratch.c.id)
            .values({name: scratch.c[name] for name in fields})
        )
        scratch.drop(connection)
        return
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({name: bindparam(name) for name in fields})
    )
    # The WHERE parameter comes last in SQLite's positional order.
    _executemany(connection, statement, [*fields, "id"], table, rows, {}, rename={"_id": "id"})


def _executemany(
    connection: Connection,
    statement,
    columns: Sequence[str],
    table: Table,
    rows: Sequence[dict],
    common: dict,
    rename: dict | None = None,
) -> None:
    compiled = statement.compile(dialect=connection.dialect)
    rename = rename or {}
    order = [rename.get(name, name) for name in compiled.positiontup]
    if sorted(order) != sorted(columns):
        raise RuntimeError(f"unexpected parameters {order} for columns {columns}")
    values = list(_driver_rows(table, order, rows, common, connection.dialect))
    for start in range(0, len(values), _SQLITE_BATCH):
        connection.exec_driver_sql(str(compiled), values[start : start + _SQLITE_BATCH])


def _copy_in(connection: Connection, table_name: str, columns: Sequence[str], rows) -> None:
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table_name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    note_written(connection, table_name)  # COPY goes around the cursor events
    cursor = connection.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()
