from tests.server.conftest import make_server  # noqa: F401  (a real server on port 0)
