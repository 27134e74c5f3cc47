"""Settings from the environment (and `.env`); `.env.example` documents every field."""

import logging
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import EmailStr, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

PLACEHOLDER_SECRET_KEY = "change-me-in-production-this-is-not-a-secret"

# Former names of DB_POOL and DB_STATEMENT_CACHE, each with the setting that replaces it: still
# read, and logged as deprecated, until a later release removes them.
DEPRECATED_SETTINGS = {
    "DB_POOL_MODE": "DB_POOL",
    "DB_THROUGH_PGBOUNCER": "DB_STATEMENT_CACHE",
    "PGBOUNCER_PREPARED_STATEMENTS": "DB_STATEMENT_CACHE",
}

logger = logging.getLogger(__name__)


class Settings(BaseSettings):
    # An empty value (`FIRST_SUPERUSER_EMAIL=` in a copy of .env.example) means "not set".
    # A refused value is not repeated in the error: a URL holds its password.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    # Fails closed: a deployment that forgets ENVIRONMENT is production and needs a real key.
    environment: Literal["development", "test", "production"] = "production"
    database_url: str = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/storefront"
    migrations_database_url: str | None = None
    # Where anonymous reads of the public catalog go (a replica, or CloudNativePG's read-only
    # Pooler); unset, every query goes to DATABASE_URL. Same pool and statement cache settings.
    database_read_url: str | None = None
    # Seconds a replica may lag (WAL it has received but not replayed, by the commit time of the
    # last transaction it replayed) before its reads go to DATABASE_URL instead.
    db_read_max_lag: float = Field(default=10.0, gt=0)
    # Seconds between the background checks of the replica's state and lag.
    db_read_check_interval: float = Field(default=1.0, gt=0)
    # The role DATABASE_URL logs in as, when it is not the migrations' (the owner): each
    # migration run grants it the rows of every table (api/dbroles.py).
    db_app_role: str | None = None
    # queue: the app keeps a pool of DB_POOL_SIZE connections. null: none (NullPool), each
    # request connects; for PgBouncer in transaction mode, which pools the server connections.
    db_pool: Literal["null", "queue"] = "queue"
    # Whether asyncpg keeps named prepared statements on its connections: true straight to
    # PostgreSQL and behind a PgBouncer that tracks them (>= 1.21 with max_prepared_statements
    # > 0). PgBouncer 1.18 in transaction mode hands each transaction to any server connection,
    # where a named statement is missing or already exists: false there (unnamed statements).
    db_statement_cache: bool = True
    # DEPRECATED_SETTINGS, read under their own names; _deprecated_names maps them onto the two
    # above. Not settings of their own: left out of dumps and of the repr.
    deprecated_db_pool_mode: Literal["null", "queue"] | None = Field(
        default=None, validation_alias="DB_POOL_MODE", exclude=True, repr=False
    )
    deprecated_db_through_pgbouncer: bool | None = Field(
        default=None, validation_alias="DB_THROUGH_PGBOUNCER", exclude=True, repr=False
    )
    deprecated_pgbouncer_prepared_statements: bool | None = Field(
        default=None, validation_alias="PGBOUNCER_PREPARED_STATEMENTS", exclude=True, repr=False
    )
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    # Replace a pooled connection its server has closed before lending it (queue mode): no
    # round trip (api/core/pool.py).
    db_pool_pre_ping: bool = True
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_command_timeout: float = Field(default=15.0, gt=0)
    db_echo: bool = False
    # TLS to the database (or PgBouncer): off on a private network; the context is built once.
    db_tls: Literal["disable", "require", "verify-full"] = "disable"
    db_tls_ca_file: FilePath | None = None
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET_KEY)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    # X-Request-ID on every answer, in problem bodies and on the request's log lines; off only
    # to measure what it costs.
    request_ids: bool = True
    # One line per request (api.access): method, route template, status, duration, request id,
    # user id, client address. Health probes are left out unless ACCESS_LOG_PROBES.
    access_log: bool = True
    access_log_probes: bool = False
    # GET /metrics (Prometheus) and what feeds it; with METRICS_TOKEN a scraper sends it as a
    # bearer token, without one only loopback clients are answered.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # The commit the image was built from (its GIT_SHA build argument), shown by build info.
    git_sha: str = "unknown"
    cors_origins: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    access_token_expire_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    first_superuser_email: EmailStr | None = None
    first_superuser_username: str = "admin"
    first_superuser_password: SecretStr | None = None
    # Per account and client address: that address is refused for LOGIN_LOCKOUT_SECONDS.
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=300, ge=1)
    # Per account over every address (distributed guessing): addresses the account has not
    # logged in from wait LOGIN_ACCOUNT_DELAY_SECONDS; those it has are let through.
    login_account_max_failures: int = Field(default=50, ge=1)
    login_account_delay_seconds: int = Field(default=30, ge=1)
    # How long the answer to a request with an Idempotency-Key is kept for its retries.
    idempotency_key_ttl_hours: int = Field(default=24, ge=1, le=30 * 24)

    @field_validator("database_url", "migrations_database_url", "database_read_url")
    @classmethod
    def _postgres_asyncpg(cls, url: str | None) -> str | None:
        if url is not None and make_url(url).drivername != "postgresql+asyncpg":
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return url

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _real_secret_outside_development(self) -> "Settings":
        key = self.secret_key.get_secret_value()
        if self.environment != "development" and key == PLACEHOLDER_SECRET_KEY:
            raise ValueError("SECRET_KEY must be set outside development")
        if len(key.encode()) < 32:
            raise ValueError("SECRET_KEY must be at least 32 bytes")
        password = self.first_superuser_password
        if self.first_superuser_email and (
            password is None or len(password.get_secret_value()) < 8
        ):
            raise ValueError("FIRST_SUPERUSER_PASSWORD (8+ characters) goes with the email")
        return self

    @model_validator(mode="after")
    def _deprecated_names(self) -> "Settings":
        """DEPRECATED_SETTINGS with their meaning, logged as the DB_POOL and DB_STATEMENT_CACHE
        they amount to: DB_POOL_MODE is DB_POOL; behind PgBouncer (NullPool, or
        DB_THROUGH_PGBOUNCER=true) the statement cache is PGBOUNCER_PREPARED_STATEMENTS (default
        false), straight to PostgreSQL it is on. A new setting given beside the old ones it
        replaces must say the same: neither is picked over the other."""
        old = {
            field.validation_alias: getattr(self, name)
            for name, field in type(self).model_fields.items()
            if field.validation_alias in DEPRECATED_SETTINGS and getattr(self, name) is not None
        }
        if not old:
            return self
        given = self.model_fields_set
        new: dict[str, object] = {}
        if self.deprecated_db_pool_mode is not None:
            if "db_pool" in given and self.db_pool != self.deprecated_db_pool_mode:
                raise ValueError(
                    f"DB_POOL={self.db_pool} disagrees with the deprecated "
                    f"DB_POOL_MODE={self.deprecated_db_pool_mode}: remove DB_POOL_MODE "
                    "(DB_POOL replaces it)"
                )
            self.db_pool = new["DB_POOL"] = self.deprecated_db_pool_mode
        behind_pgbouncer = self.db_pool == "null" or bool(self.deprecated_db_through_pgbouncer)
        cache = bool(self.deprecated_pgbouncer_prepared_statements) or not behind_pgbouncer
        names_the_cache = old.keys() - {"DB_POOL_MODE"}
        if "db_statement_cache" not in given:
            self.db_statement_cache = new["DB_STATEMENT_CACHE"] = cache
        elif names_the_cache:
            if self.db_statement_cache != cache:
                raise ValueError(
                    f"DB_STATEMENT_CACHE={_env(self.db_statement_cache)} disagrees with the "
                    f"deprecated {_listed(old)}, which with DB_POOL={self.db_pool} mean "
                    f"DB_STATEMENT_CACHE={_env(cache)}: remove the deprecated settings "
                    "(DB_STATEMENT_CACHE replaces them)"
                )
            new["DB_STATEMENT_CACHE"] = cache
        one = len(old) == 1
        logger.warning(
            "%s %s deprecated and will be removed: %s %s; set %s instead",
            _listed(old),
            "is" if one else "are",
            "it means" if one else "they mean",
            _listed(new),
            "that" if len(new) == 1 else "those",
        )
        return self

    @property
    def direct_database_url(self) -> str:
        """The URL migrations use: always straight to PostgreSQL, never through PgBouncer."""
        if self.migrations_database_url:
            return self.migrations_database_url
        if self.db_pool == "queue":
            return self.database_url
        raise ValueError(
            "MIGRATIONS_DATABASE_URL is required when DB_POOL=null: "
            "DATABASE_URL then points at PgBouncer, and migrations must not go through it"
        )


def _env(value: object) -> str:
    """A setting's value as the environment spells it: true, false, null, queue."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _listed(settings: dict[str, object]) -> str:
    """NAME=value pairs for a message: "A=1", "A=1 and B=2", "A=1, B=2 and C=3"."""
    pairs = [f"{name}={_env(value)}" for name, value in settings.items()]
    return (", ".join(pairs[:-1]) + " and " + pairs[-1]) if len(pairs) > 1 else pairs[0]


@lru_cache
def get_settings() -> Settings:
    return Settings()
