"""How a replica check's figures are judged (api/core/replica.py); the checks themselves run on
a real streaming replica in tests/replica/."""

import pytest
from pydantic import ValidationError

from api.core.replica import judge
from tests.support.app import settings_for_tests


@pytest.mark.parametrize(
    ("lag", "status"), [(0.0, "ok"), (9.99, "ok"), (10.0, "ok"), (10.01, "lagging")]
)
def test_a_streaming_replica_is_usable_up_to_the_bound(lag: float, status: str) -> None:
    state = judge(in_recovery=True, receiving=True, lag_seconds=lag, max_lag=10.0)

    assert (state.status, state.lag_seconds) == (status, lag)
    assert state.checked_at is not None


def test_a_replica_that_does_not_stream_is_skipped_whatever_its_replay() -> None:
    state = judge(in_recovery=True, receiving=False, lag_seconds=0.0, max_lag=10.0)

    assert (state.status, state.lag_seconds) == ("lagging", None)


def test_a_replica_with_an_unknown_lag_is_skipped() -> None:
    """WAL received and not replayed, and no transaction replayed since it started."""
    state = judge(in_recovery=True, receiving=True, lag_seconds=None, max_lag=10.0)

    assert state.status == "lagging"


def test_a_clock_ahead_of_the_replicas_is_no_negative_lag() -> None:
    state = judge(in_recovery=True, receiving=True, lag_seconds=-0.2, max_lag=10.0)

    assert (state.status, state.lag_seconds) == ("ok", 0.0)


def test_a_promoted_replica_is_current() -> None:
    state = judge(in_recovery=False, receiving=False, lag_seconds=None, max_lag=10.0)

    assert (state.status, state.lag_seconds) == ("ok", 0.0)


def test_the_read_url_is_an_asyncpg_url() -> None:
    with pytest.raises(ValidationError, match="postgresql\\+asyncpg"):
        settings_for_tests(database_read_url="postgresql://replica/storefront")
    url = "postgresql+asyncpg://app:x@replica:5432/storefront"
    assert settings_for_tests(database_read_url=url).database_read_url == url
