"""A local, Hub-compatible HTTP server and the repositories it serves, for tests without Hub access."""
