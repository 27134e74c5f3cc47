import pytest


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
def via(request: pytest.FixtureRequest) -> str:
    """The Users tests run twice: straight to PostgreSQL, and through PgBouncer on NullPool."""
    param: str = request.param
    return param
