"""The campaign's network harness: rule N6 (a subnet is never shared, also between two
campaigns building networks at the same moment)."""

from __future__ import annotations

import multiprocessing
import subprocess

import pytest

from safekeeper_recovery.faults import unavailable_reason
from safekeeper_recovery.faults._network import RESERVATIONS, Network, _reserved_by_a_live_process

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=f"the fault campaign cannot run here: "
                                       f"{unavailable_reason()}")


def test_two_networks_before_either_is_built_get_different_subnets() -> None:
    """The race behind seed 125 of the 100-schedule campaign: a subnet used to be chosen by
    the routes alone, which exist only once a network is built."""
    first, second = Network("t1", 3), Network("t2", 3)
    try:
        assert first.subnet != second.subnet
        assert (RESERVATIONS / first.subnet).read_text() == (RESERVATIONS / second.subnet
                                                             ).read_text()
    finally:
        first.close()
        second.close()
    assert not (RESERVATIONS / first.subnet).exists()
    assert not (RESERVATIONS / second.subnet).exists()


def _subnet_of_a_new_network(_: int) -> str:
    net = Network("tp", 3)  # left reserved: the process exits with it
    return net.subnet


def test_networks_of_concurrent_processes_get_different_subnets() -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        subnets = pool.map(_subnet_of_a_new_network, range(3), chunksize=1)
        pool.close()
        pool.join()  # the workers have exited: their reservations are stale now
    assert len(set(subnets)) == 3, subnets
    # Their processes are gone: their reservations are stale, free to be taken again
    # (asked directly: another test's network may be built at the same moment).
    try:
        assert not any(_reserved_by_a_live_process(subnet) for subnet in subnets)
    finally:
        for subnet in subnets:  # leave nothing behind
            (RESERVATIONS / subnet).unlink(missing_ok=True)


def test_a_subnet_with_a_route_is_never_chosen() -> None:
    net = Network("t4", 3)
    try:
        routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                                capture_output=True, text=True, check=True).stdout
        assert f"{net.subnet}." not in routes
    finally:
        net.close()
