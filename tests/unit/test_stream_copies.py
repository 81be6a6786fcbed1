"""How `ragbus status` reads a stream's copies from the leader's view (no server: the leader's answers as
nats-server 2.15 gives them)."""

from __future__ import annotations

from nats.js.api import StreamInfo

from ragbus.ops import _copies


def _info(*replicas: dict) -> StreamInfo:
    return StreamInfo.from_response({
        "config": {"name": "CHUNKS", "num_replicas": 3},
        "state": {"messages": 0, "bytes": 0, "first_seq": 0, "last_seq": 0, "consumer_count": 0},
        "cluster": {"leader": "n1", "replicas": list(replicas)}})


def test_healthy_behind_silent_and_never_heard_copies_are_told_apart() -> None:
    healthy = {"name": "n2", "current": True, "active": 70_000_000}
    assert _copies(_info(healthy, {"name": "n3", "current": False, "active": 400_000_000})) == (
        "R3: n1 (leader), n2, [yellow]n3 catching up[/yellow]", set())
    assert _copies(_info(healthy, {"name": "n3", "current": False, "active": 7_000_000_000})) == (
        "R3: n1 (leader), n2, [red]n3 offline[/red] (7 s)", {"n3"})
    # a leader elected after n3 died has no time for it: active 0 (seen in CI, once shown as "catching up")
    assert _copies(_info(healthy, {"name": "n3", "current": False, "active": 0})) == (
        "R3: n1 (leader), n2, [red]n3 offline[/red]", {"n3"})
    assert _copies(_info(healthy, {"name": "n3", "current": False, "offline": True, "active": 9_000_000_000})) == (
        "R3: n1 (leader), n2, [red]n3 offline[/red]", {"n3"})
