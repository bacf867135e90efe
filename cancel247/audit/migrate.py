"""Apply and inspect the Alembic migrations shipped in ``cancel247/migrations``."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "cancel247:migrations")
    # ConfigParser treats % as interpolation; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


class SchemaOutdated(Exception):
    """The audit store is not at the newest migration. The message names the command to run."""


def check_schema(engine: Engine) -> None:
    """Raise SchemaOutdated unless the database is at the newest revision shipped."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaOutdated(
            f"the audit store at {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none (empty)'}, expected {head}: run `cancel247 db upgrade`"
        )
