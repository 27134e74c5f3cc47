"""Support for the tests that is not a fixture: stacks, servers and checks they share."""
