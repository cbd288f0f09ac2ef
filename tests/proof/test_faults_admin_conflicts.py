"""100 concurrent conflicting admin writes through two gateways and a direct ConfigWriter."""

from __future__ import annotations

from bench.faults import admin_conflicts
from tests.proof._fault_support import show


def test_concurrent_conflicting_admin_writes_lose_nothing_and_converge(kafka_bootstrap: str) -> None:
    result = admin_conflicts(kafka_bootstrap, writers=100)
    print(show(result))
    outcomes = result["outcomes"]
    # Every write is either acknowledged or refused with 409: no other status, no lost request.
    assert set(outcomes) <= {"200", "409"}, show(result)
    assert result["acknowledged"] + result["rejected_409"] == 100, show(result)
    assert result["acknowledged"] >= 1 and result["rejected_409"] >= 1, "no contention happened\n" + show(result)
    # No lost update: every acknowledged write is in the final state, no refused one is.
    assert result["lost_updates"] == [], show(result)
    assert result["rejected_but_present"] == [], show(result)
    # One accepted proposal per acknowledged write, on top of the create (revision 1).
    assert result["final_revision"] == 1 + result["acknowledged"], show(result)
    # Every instance (two gateways, the direct writer's reader) ends in the same state.
    assert result["final_states_equal"] and result["fingerprints_equal"], show(result)
