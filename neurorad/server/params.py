"""Bounded request parameters shared by the REST API and the web pages.

Ids are database primary keys: positive and at most 2**63 - 1 (the largest SQLite INTEGER and
PostgreSQL BIGINT); a larger number reaching the driver overflows (a 500 with a traceback), so
it is refused at the edge with 422. ``limit`` is at least 1 (SQLite reads ``LIMIT -1`` as "no
limit") and ``offset`` is bounded like an id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_DB_ID = 2**63 - 1

#: A path parameter naming a row by its id.
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID)]
#: Rows to skip in a listing.
Offset = Annotated[int, Query(ge=0, le=MAX_DB_ID)]


def limit_query(default: int, maximum: int):
    """``limit`` query parameter: 1..maximum rows, ``default`` when absent."""
    return Query(default, ge=1, le=maximum)
