"""The test suite. Fixtures are in tests/fixtures/, the helpers that are not fixtures in
tests/support/ (docs/testing.md has the map)."""

import pytest

# The helpers' asserts report what they compared, as a test module's do: pytest rewrites a
# module's asserts only when it is marked before its first import, and this package is imported
# before any of its modules.
pytest.register_assert_rewrite("tests.support")
