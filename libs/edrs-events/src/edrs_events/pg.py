"""The PostgreSQL connection the outbox, the inbox and the services' stores take: a plain
connection or one lent by a pool (`pool.acquire()` lends a proxy, not an asyncpg.Connection)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
