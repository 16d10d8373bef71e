from __future__ import annotations

from shared.delivery import GiveUp, Retry, decide
from shared.streams import Topology


def test_transient_failures_retry_with_growing_delays_then_give_up() -> None:
    consumer = Topology("pmc").scraper
    decisions = [decide(n, consumer, transient=True) for n in range(1, consumer.max_deliver + 1)]
    retries = [d for d in decisions if isinstance(d, Retry)]
    assert len(retries) == consumer.max_deliver - 1
    assert [r.delay for r in retries] == sorted(r.delay for r in retries)
    assert retries[0].delay > 0
    assert isinstance(decisions[-1], GiveUp)


def test_permanent_failure_gives_up_at_once() -> None:
    assert isinstance(decide(1, Topology("pmc").scraper, transient=False), GiveUp)


def test_the_notifiers_consumers_never_give_up_on_a_transient_failure() -> None:
    topology = Topology("pmc")
    for consumer in (topology.notifier, topology.notifier_account, topology.notifier_provider):
        assert consumer.max_deliver == -1
        decision = decide(10_000, consumer, transient=True)
        assert decision == Retry(300.0), "capped at 5 minutes, and never dead-lettered"
        assert isinstance(decide(1, consumer, transient=False), GiveUp), "undecodable: at once"
