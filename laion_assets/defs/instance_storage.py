"""PostgreSQL event-log storage whose pool slots cannot be claimed twice (deploy/dagster-postgres.yaml uses it).

dagster-postgres 0.29.27 claims a pool slot in two statements on an AUTOCOMMIT connection: ``SELECT id ... FOR
UPDATE SKIP LOCKED``, then ``UPDATE ... WHERE id = <that id>``. The row lock ends with the SELECT, so two run workers
that ask at the same moment can both pick the one free slot and both "claim" it: the `gpu` pool then admits two
steps at once. Our four-runs test on a real PostgreSQL caught it (two `gpu` steps 36 ms apart under a limit of 1).
Here the claim is one statement, which PostgreSQL runs atomically even in AUTOCOMMIT: the row is updated only if it
is still free, and the claim counts only if a row was updated.
"""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencySlotStatus
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config


class PoolSafePostgresEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event-log storage with an atomic pool-slot claim."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PoolSafePostgresEventLogStorage":
        """This class from the same config as dagster-postgres' (``postgres_db`` or ``postgres_url``)."""
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str) -> ConcurrencySlotStatus:
        slots = ConcurrencySlotsTable
        free = db.and_(
            slots.c.concurrency_key == concurrency_key,
            slots.c.step_key.is_(None),
            slots.c.deleted.is_(False),
        )
        one_free = db.select(slots.c.id).where(free).limit(1).with_for_update(skip_locked=True).scalar_subquery()
        with self.index_connection() as conn:
            claimed = conn.execute(
                slots.update().values(run_id=run_id, step_key=step_key).where(slots.c.id == one_free).where(free)
            ).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED
