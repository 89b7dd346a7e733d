"""The Countdown generator: seeded instances, each solvable."""

from __future__ import annotations

from espo.tasks import Countdown
from espo.tasks.countdown.gen import make_instance, solve


def test_countdown_generator_instances_are_solvable():
    for i in range(30):
        ex = make_instance(7, i)
        assert len(ex["numbers"]) == 3 and 1 <= ex["target"] <= 100
        expression = solve(ex["numbers"], ex["target"])
        assert expression is not None
        assert Countdown().reward([f"<answer>{expression}</answer>"], [ex]) == [1.0]
    assert make_instance(7, 3) == make_instance(7, 3) != make_instance(8, 3)
