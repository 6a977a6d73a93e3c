"""The server's default limits (re-exported by :mod:`sos_kernel.server`; here so its modules need not import it)."""

REQUEST_BYTES_MAX = 20 * 1024 * 1024
"""The largest request body by default: a whole 16 MiB message (the bus's ``payload_bytes_max``) with room for
its JSON envelope."""
LARGE_BODY_BYTES_MIN = 1024 * 1024
"""A request body of at least this many bytes is large: it takes one of ``large_bodies_max`` turns."""
LARGE_BODIES_MAX = 4
"""Large request bodies read and answered at once, server-wide."""
LARGE_BODIES_PER_TENANT_MAX = 1
"""Of those, how many one tenant may hold: the others are always left to other tenants."""
BODY_READ_S_MAX = 60.0
"""A large body must arrive within this many seconds of its turn (408 otherwise): a slow sender frees its turn."""
LINGER_S = 30.0
"""How long a subscription waits for its client to reconnect before it is closed."""
PING_S = 15.0
"""Keep-alive comments on an idle event stream, so proxies keep it open and a dead client is noticed."""
METRICS_TOKEN_CHARS_MIN = 16
"""The shortest metrics token accepted: it reads every tenant's counters, so it must not be guessable."""
