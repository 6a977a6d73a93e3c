"""The failover test kills a master of a cluster of its own: it runs in the cluster session only
(``SOS_TEST_TARGETS=redis-cluster``, ``nox -s cluster``), not in the default run."""

from __future__ import annotations

from ..conftest import REDIS_CLUSTER, SELECTED_TARGETS

collect_ignore = [] if REDIS_CLUSTER in SELECTED_TARGETS else ["test_failover.py"]
