"""The one place that talks to PostgreSQL: the engine and its pool, the transaction the store
opens per operation, the single statement that commits by itself, the driver's fast path, and
the mapping of every database fault to the project's exceptions.

The store's statements run on psycopg's own cursor of a pooled connection (`rows`,
`autocommit_rows`), rows built straight into their classes: SQLAlchemy's result machinery,
rebuilt for every textual statement, and a copy of each row into a dict were a large share of
the worker's client CPU per job (bench/queues.py and bench/repository.py measure it).
SQLAlchemy keeps what it is good at: the pool, its pre-ping and its recycling after an outage."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowFactory, RowMaker, no_result, tuple_row
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.pool import PoolProxiedConnection

from ai_service.errors import DatabaseUnavailable, InvalidInput, ServiceError, fault_summary

Row = TypeVar("Row")
Params = dict[str, Any]


def make_engine(
    url: str, pool_size: int = 5, application_name: str = "ai-service", pre_ping: bool = True
) -> Engine:
    """An engine whose pool survives a PostgreSQL restart. With pre_ping, a stale connection is
    found and replaced before use, at the cost of a round trip per checkout. Without it, the
    first statement after a restart fails (DatabaseUnavailable) and the pool drops every
    connection older than that failure: right for a caller that retries anyway."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=5,
        # A failed statement's text would quote its parameters: job inputs, that is prompts.
        hide_parameters=True,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )


def database_fault(exc: BaseException) -> ServiceError | None:
    """The project's exception for a database fault, or None for one that is a bug in a
    statement (it stays as raised). Lost or refused connections, timeouts and a server shutting
    down are DatabaseUnavailable, whether the driver raised them (the fast path) or SQLAlchemy
    did (checkout, pre-ping, BEGIN and COMMIT); a value the database refuses is InvalidInput."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool is exhausted or connecting hangs
        return DatabaseUnavailable(reason=fault_summary(exc))
    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return DatabaseUnavailable(reason=fault_summary(exc))
        exc = exc.orig
    if isinstance(exc, UnicodeEncodeError):
        # A parameter the driver could not encode before sending it (an unpaired surrogate).
        return InvalidInput("the database refused a value", {
            "database": ["text holds an unpaired UTF-16 surrogate, which UTF-8 cannot encode"]})
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(reason=fault_summary(exc))
    if isinstance(exc, psycopg.DataError):
        lines = str(exc).splitlines()
        return InvalidInput("the database refused a value", {
            "database": [lines[0] if lines else "invalid value"]})
    return None


@contextmanager
def database_faults() -> Iterator[None]:
    """Database faults raised inside become the project's exceptions (see database_fault)."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, psycopg.Error, UnicodeEncodeError) as exc:
        translated = database_fault(exc)
        if translated is None:
            raise
        raise translated from exc


_PSYCOPG = postgresql_psycopg.dialect()


@functools.lru_cache(maxsize=1024)
def driver_sql(sql: str) -> str:
    """A statement's `:name` parameters as psycopg takes them (`%(name)s`), by its text, so
    equal statements share one entry."""
    return str(text(sql).compile(dialect=_PSYCOPG))


def class_rows(cls: type[Row]) -> RowFactory[Row]:
    """Rows built straight into a frozen, slotted dataclass of ai_service/rows.py. What psycopg's
    class_row does, without a dict of keyword arguments and the frozen __init__ per row, which
    made the worker's claim-and-complete path measurably slower than plain dicts
    (bench/repository.py's worker_loop measures it): each column is set through its slot.
    A statement must answer exactly the class's fields, or it fails at once, naming them."""
    setters = {f.name: getattr(cls, f.name).__set__ for f in dataclasses.fields(cls)}
    makers: dict[tuple[str, ...], RowMaker[Row]] = {}  # by the statement's columns

    def factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
        # The column names from the result itself: `cursor.description` would build a Column
        # object per column on every statement.
        result = cursor.pgresult
        if result is None or not result.nfields:
            return no_result
        names = tuple(result.fname(i).decode() for i in range(result.nfields))
        maker = makers.get(names)
        if maker is None:
            if sorted(names) != sorted(setters):
                raise TypeError(f"{cls.__name__} has fields {sorted(setters)}; "
                                f"the statement answered {sorted(names)}")
            maker = makers[names] = functools.partial(
                _build, cls, [setters[name] for name in names])
        return maker

    return factory


def _build(cls: type[Row], setters: Sequence[Callable[[Any, Any], None]],
           values: Sequence[Any]) -> Row:
    row = object.__new__(cls)
    for set_column, value in zip(setters, values, strict=True):
        set_column(row, value)
    return row


class Driver:
    """Connections for the store. Every method maps database faults (database_fault)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The same pool, for work that is a single statement: PostgreSQL runs it as a
        # transaction of its own, so BEGIN and COMMIT would only add two round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, committed when the block ends without an exception."""
        with database_faults(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction whose every statement sees the database as its first one
        did (REPEATABLE READ): for reads that must agree, such as a job and its events, which
        a change committing between them would otherwise set apart."""
        with database_faults(), self.engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """For exactly one statement on SQLAlchemy's path, which commits by itself."""
        with database_faults(), self._autocommit.connect() as conn:
            yield conn

    def rows(self, conn: Connection, sql: str, params: Params,
             row_factory: RowFactory[Row] = tuple_row) -> list[Row]:
        """A statement of an open transaction, on the driver's cursor."""
        connection = conn.connection.dbapi_connection
        with database_faults():
            try:
                return _fetch(connection, sql, params, row_factory)
            except psycopg.Error as exc:
                self._lost_connection(exc, connection, conn.invalidate)
                raise

    def autocommit_rows(self, sql: str, params: Params,
                        row_factory: RowFactory[Row] = tuple_row) -> list[Row]:
        """One statement that commits by itself, on a pooled connection the driver switches to
        autocommit and back: a SQLAlchemy Connection around it, with its isolation-level
        bookkeeping at checkout and checkin, would cost a noticeable share of a claim's client
        CPU; the pool still checks out, pings and recycles. Written out flat, without a context
        manager per concern, since the worker runs it twice per job."""
        with database_faults():
            pooled = self.engine.raw_connection()
            try:
                connection = pooled.driver_connection
                try:
                    connection.autocommit = True
                    return _fetch(connection, sql, params, row_factory)
                except psycopg.Error as exc:
                    self._lost_connection(exc, connection, pooled.invalidate)
                    raise
            finally:
                _check_in(pooled)

    def _lost_connection(self, exc: psycopg.Error, connection: psycopg.Connection,
                         invalidate: Callable[[BaseException], None]) -> None:
        """A lost connection means the server went away: `invalidate` drops this one and, as
        SQLAlchemy does on its own path, the whole pool is replaced, since every connection in
        it predates the outage and a worker without pre-ping would otherwise meet each one
        failing. The fault is mapped here, once, without passing through SQLAlchemy's
        wrapping; any other driver error is left to database_fault."""
        if self.engine.dialect.is_disconnect(exc, connection, None):
            invalidate(exc)
            self.engine.dispose()
            raise DatabaseUnavailable(reason=fault_summary(exc)) from exc


def _fetch(connection: psycopg.Connection, sql: str, params: Params,
           row_factory: RowFactory[Row]) -> list[Row]:
    with connection.cursor(row_factory=row_factory) as cursor:
        return cursor.execute(driver_sql(sql), params).fetchall()


def _check_in(pooled: PoolProxiedConnection) -> None:
    """Back to the pool as SQLAlchemy hands connections out (not in autocommit), or discarded
    when that cannot be done."""
    if pooled.is_valid:
        try:
            pooled.driver_connection.autocommit = False
        except psycopg.Error as exc:
            pooled.invalidate(exc)
    pooled.close()
