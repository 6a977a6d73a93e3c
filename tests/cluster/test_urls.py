"""Cluster URLs: refused clearly when they cannot name a cluster, SOS-6030 when no seed answers."""

from __future__ import annotations

import pytest

import sos_kernel
from sos_kernel.errors import BackendUnavailable, InvalidURL

from ..conftest import _free_port

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000,127.0.0.1:x/",  # a seed without a port number
        "redis+cluster://127.0.0.1:7000,127.0.0.1:70000/",  # a port out of range
        "redis+cluster://127.0.0.1:7000/3",  # a cluster has one database
        "redis+cluster://127.0.0.1:7000/?socket_timeout=1",  # no such cluster parameter
        "redis+cluster://127.0.0.1:7000/?durability=fast",
    ],
)
async def test_a_cluster_url_that_names_no_cluster_is_refused(url: str) -> None:
    with pytest.raises(InvalidURL):
        await sos_kernel.open(url)


async def test_a_cluster_no_seed_of_which_answers_is_unavailable() -> None:
    url = f"redis+cluster://127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}/"
    with pytest.raises(BackendUnavailable):
        await sos_kernel.open(url)
