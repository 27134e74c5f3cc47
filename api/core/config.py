"""Settings from the environment (and `.env`); `.env.example` documents every field."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import EmailStr, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

PLACEHOLDER_SECRET_KEY = "change-me-in-production-this-is-not-a-secret"


class Settings(BaseSettings):
    # An empty value (`FIRST_SUPERUSER_EMAIL=` in a copy of .env.example) means "not set".
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # Fails closed: a deployment that forgets ENVIRONMENT is production and needs a real key.
    environment: Literal["development", "test", "production"] = "production"
    database_url: str = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/storefront"
    migrations_database_url: str | None = None
    # The role DATABASE_URL logs in as, when it is not the migrations' (the owner): each
    # migration run grants it the rows of every table (api/dbroles.py).
    db_app_role: str | None = None
    db_pool_mode: Literal["null", "queue"] = "queue"
    # The PgBouncer in front (DB_POOL_MODE=null) tracks prepared statements (>= 1.21 with
    # max_prepared_statements > 0): asyncpg may then keep its statement cache.
    db_through_pgbouncer: bool = False
    pgbouncer_prepared_statements: bool = False
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    # Test each pooled connection before lending it (queue mode): through PgBouncer in
    # transaction mode that is BEGIN, an empty query and ROLLBACK, 3 round trips per request.
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
    cors_origins: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    access_token_expire_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    first_superuser_email: EmailStr | None = None
    first_superuser_username: str = "admin"
    first_superuser_password: SecretStr | None = None
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=300, ge=1)

    @field_validator("database_url", "migrations_database_url")
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

    @property
    def statement_cache(self) -> bool:
        """Whether asyncpg may keep named prepared statements on its connections: straight to
        PostgreSQL, or behind a PgBouncer that tracks them. PgBouncer 1.18 in transaction mode
        hands each transaction to any server connection, where a named statement is missing or
        already exists."""
        behind_pgbouncer = self.db_pool_mode == "null" or self.db_through_pgbouncer
        return not behind_pgbouncer or self.pgbouncer_prepared_statements

    @property
    def direct_database_url(self) -> str:
        """The URL migrations use: always straight to PostgreSQL, never through PgBouncer."""
        if self.migrations_database_url:
            return self.migrations_database_url
        if self.db_pool_mode == "queue":
            return self.database_url
        raise ValueError(
            "MIGRATIONS_DATABASE_URL is required when DB_POOL_MODE=null: "
            "DATABASE_URL then points at PgBouncer, and migrations must not go through it"
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
