"""Copying a collection's existing documents in ``_id`` order, resumable after any page.

The copy pages through ``find().sort({_id: 1})`` and remembers the last
``_id`` it emitted; a restart continues with ``{_id: {$gt: last}}``. MongoDB
compares values of different BSON types only inside a *type bracket*
(numbers with numbers, strings with strings, ...), so ``$gt`` alone would stop
at the end of the bracket of ``last`` and miss, say, string ``_id`` values
after numeric ones. When a bracket is exhausted the copy therefore jumps to
the next non-empty bracket in MongoDB's sort order, using each bracket's
smallest value as a ``$gte`` bound (plain comparison operators, which every
MongoDB-compatible server implements).

Resuming by ``$gt`` is only sound if the server sorts ``_id`` the way it
compares it. Each page is checked where the order is unambiguous (bracket
order, numbers, ObjectIds, dates; strings are left alone because a collection
collation may order them differently from Python): a server that sorts
otherwise would make the copy skip documents, so that is an error, never a
silent gap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable
from typing import Any

from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import OperationFailure, PyMongoError

from fluxion_flows.spi import Document

_EPOCH_FLOOR = dt.datetime(1, 1, 1)


def _bracket_filters() -> list[tuple[Callable[[Any], bool], dict[str, Any]]]:
    """MongoDB's cross-type sort order, as (membership test, filter selecting the whole bracket)."""
    return [
        (lambda v: isinstance(v, MinKey), {"$type": "minKey"}),
        (lambda v: v is None, {"$type": "null"}),
        (
            lambda v: isinstance(v, int | float | Int64 | Decimal128) and not isinstance(v, bool),
            {"$gte": float("-inf")},
        ),
        (lambda v: isinstance(v, str), {"$gte": ""}),
        (lambda v: isinstance(v, dict), {"$gte": {}}),
        (lambda v: isinstance(v, bytes | Binary | uuid.UUID), {"$gte": Binary(b"", 0)}),
        (lambda v: isinstance(v, ObjectId), {"$gte": ObjectId(b"\x00" * 12)}),
        (lambda v: isinstance(v, bool), {"$gte": False}),
        (lambda v: isinstance(v, dt.datetime), {"$gte": _EPOCH_FLOOR}),
        (lambda v: isinstance(v, Timestamp), {"$gte": Timestamp(0, 0)}),
        (lambda v: isinstance(v, Regex | re.Pattern), {"$type": "regex"}),
        (lambda v: isinstance(v, MaxKey), {"$type": "maxKey"}),
    ]


_BRACKETS = _bracket_filters()


def bracket_of(value: Any) -> int:
    """Index of ``value``'s type bracket in MongoDB's sort order (unknown types sort last)."""
    for index, (member, _) in enumerate(_BRACKETS):
        if member(value):
            return index
    return len(_BRACKETS)


CURSOR_LOST_CODES = frozenset({43, 237})
"""CursorNotFound, CursorKilled: the server dropped an idle cursor; reopen it after the last ``_id``."""


class SnapshotReader:
    """Reads a collection in ``_id`` order in pages; ``last_id`` is the resume point after each page.

    One server cursor serves the whole copy (a single index scan), read a page
    at a time; if the server drops it (idle too long while the pipeline was
    backpressured) the copy reopens a cursor after ``last_id``.

    A cursor that ends after yielding documents is not taken at its word: a
    fresh cursor after ``last_id`` must confirm the end. A server shutting
    down can close an open cursor with an empty final batch instead of an
    error (nx-27017 does), and trusting that end would finish the copy with
    the rest of the collection never read. The confirmation costs one empty
    query per remaining type bracket, once per copy.
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        page_size: int,
        *,
        last_id: Any = None,
        started: bool = False,
    ) -> None:
        self._collection = collection
        self._page_size = max(1, page_size)
        self.last_id = last_id
        self._started = started
        self._cursor: AsyncCursor[dict[str, Any]] | None = None
        self._bracket: int | None = None
        """The bracket the open cursor started in; None for the initial, unfiltered cursor."""
        self._cursor_moved = False
        """Whether the open cursor has moved ``last_id``: if so, its end needs confirming."""
        self.done = False
        self.copied = 0

    async def next_page(self) -> list[Document]:
        """The next documents in ``_id`` order; empty once the copy is complete."""
        while not self.done:
            cursor = self._cursor
            if cursor is None:
                cursor = self._start_cursor(self._resume_query(), self._current_bracket())
            try:
                page = await cursor.to_list(self._page_size)
            except OperationFailure as exc:
                if exc.code not in CURSOR_LOST_CODES:
                    raise
                await self.drop_cursor()  # reopened after last_id on the next turn
                continue
            if not page:
                if self._cursor_moved:
                    await self.drop_cursor()  # confirm the end: reopen after last_id on the next turn
                else:
                    await self._advance()
                continue
            if self._bracket is not None:
                # Only the cursor's own bracket counts (a lax server may match numbers for `$gte: false`).
                page = [doc for doc in page if bracket_of(doc.get("_id")) >= self._bracket]
            if page:
                check_order(page, self.last_id if self._started else None)
                self._started = True
                self.last_id = page[-1]["_id"]
                self.copied += len(page)
                self._cursor_moved = True
                return page
        return []

    def _current_bracket(self) -> int | None:
        return None if not self._started else bracket_of(self.last_id)

    def _resume_query(self) -> dict[str, Any]:
        return {} if not self._started else {"_id": {"$gt": self.last_id}}

    def _start_cursor(self, query: dict[str, Any], bracket: int | None) -> AsyncCursor[dict[str, Any]]:
        """Open the cursor for ``query`` in ``_id`` order; ``bracket`` None means unfiltered."""
        self._cursor = self._collection.find(query, sort=[("_id", 1)], batch_size=self._page_size)
        self._bracket = bracket
        self._cursor_moved = False
        return self._cursor

    async def _advance(self) -> None:
        """The open cursor is exhausted: go on with the next type bracket, or finish."""
        finished = self._bracket
        await self.drop_cursor()
        if finished is None or finished + 1 >= len(_BRACKETS):
            self.done = True
            return
        self._start_cursor({"_id": _BRACKETS[finished + 1][1]}, finished + 1)

    async def drop_cursor(self) -> None:
        """Forget the open cursor (even a lost one): the next page reopens a cursor after ``last_id``."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(PyMongoError):  # its connection is gone; the server drops it too
                await cursor.close()

    async def close(self) -> None:
        await self.drop_cursor()


class SnapshotOrderError(RuntimeError):
    """The server returned ``_id`` values out of order: resuming by ``$gt`` would skip documents."""


def check_order(page: list[Document], previous: Any) -> None:
    """Raise SnapshotOrderError unless ``page`` continues ``previous`` in increasing ``_id`` order."""
    has_previous = previous is not None
    for document in page:
        current = document.get("_id")
        if has_previous and _out_of_order(previous, current):
            raise SnapshotOrderError(
                f"the server returned _id {current!r} after {previous!r} when sorting by _id: it sorts "
                "differently from how it compares, so the initial snapshot cannot be copied resumably "
                "(documents would be skipped)"
            )
        previous, has_previous = current, True


def _out_of_order(previous: Any, current: Any) -> bool:
    before, after = bracket_of(previous), bracket_of(current)
    if before != after:
        return after < before
    left, right = _comparable(previous), _comparable(current)
    if left is None or right is None:
        return False
    try:
        return not left < right
    except (TypeError, decimal.InvalidOperation):
        return False


def _comparable(value: Any) -> Any:
    """A Python value ordered like MongoDB orders ``value``, where that is unambiguous; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, int | float):
        return decimal.Decimal(value)
    if isinstance(value, ObjectId):
        return value.binary
    if isinstance(value, dt.datetime):
        return (
            value.replace(tzinfo=None)
            if value.tzinfo is None
            else value.astimezone(dt.UTC).replace(tzinfo=None)
        )
    return None
