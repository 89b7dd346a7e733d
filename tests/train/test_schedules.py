"""The papers' warm-up schedules: hand values, the plan the module gives them, YAML, resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.sampling import LLaDASampler
from espo.tasks import Sudoku
from espo.train.policy import PolicySpec
from espo.train.schedules import WarmupSchedule, plan_schedule


def optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lrs(scheduler: WarmupSchedule, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])  # the lr the next optimiser step uses
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_constant_with_warmup_hand_values():
    sched = WarmupSchedule(optimizer(2.0), warmup_ratio=0.001, planned_steps=4000)  # ceil(4.0) = 4 steps
    assert lrs(sched, 7) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]  # HF: the first step runs at lr 0


@pytest.mark.parametrize(("ratio", "planned", "warmup"), [(0.001, 3736, 4), (0.001, 499_750, 500),
                                                          (1e-4, 7700, 1), (0.0, 100, 0)])
def test_warmup_length_is_the_ceiling_of_ratio_times_plan(ratio, planned, warmup):
    assert WarmupSchedule(optimizer(), warmup_ratio=ratio, planned_steps=planned).warmup() == warmup


def test_cosine_to_a_floor_hand_values():
    sched = WarmupSchedule(optimizer(), warmup_steps=2, decay="cosine", min_lr_rate=0.1, planned_steps=10)
    factors = [sched.factor(s) for s in (0, 1, 2, 6, 10, 20)]
    assert factors == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1, 0.1])  # 0.1 + 0.9 · ½(1 + cos(π · 4/8))


def test_no_warmup_starts_at_the_peak():
    assert lrs(WarmupSchedule(optimizer(3.0)), 2) == [3.0, 3.0]
    cosine = WarmupSchedule(optimizer(1.0), decay="cosine", planned_steps=4)
    # The hand values are printed to 6 decimals (±5e-7); abs 1e-6 (observed 4.2e-7). The rest: float64 of a cos.
    assert lrs(cosine, 5) == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.0], abs=1e-6)


def test_plan_from_trainer_or_epoch():
    sched = WarmupSchedule(optimizer(), warmup_ratio=0.01)
    plan_schedule(sched, max_steps=400, max_epochs=-1, epoch_steps=50)
    assert sched.total == 400 and sched.warmup() == 4
    epoch = WarmupSchedule(optimizer(), warmup_ratio=0.01, planned_steps="epoch")
    plan_schedule(epoch, max_steps=400, max_epochs=-1, epoch_steps=1000)
    assert epoch.total == 1000 and epoch.warmup() == 10
    d1 = WarmupSchedule(optimizer(), warmup_ratio=1e-4, planned_steps="epoch", epochs=10)  # d1: 10 epochs
    plan_schedule(d1, max_steps=7700, max_epochs=-1, epoch_steps=467 * 12)
    assert d1.total == 56_040 and d1.warmup() == 6
    fixed = WarmupSchedule(optimizer(), warmup_ratio=0.001, planned_steps=499_750)
    plan_schedule(fixed, max_steps=5000, max_epochs=-1, epoch_steps=10)
    assert fixed.warmup() == 500  # the paper's plan, not this run's max_steps
    epochs = WarmupSchedule(optimizer(), warmup_ratio=0.01)
    plan_schedule(epochs, max_steps=-1, max_epochs=3, epoch_steps=100)
    assert epochs.total == 300
    with pytest.raises(ValueError, match="needs a plan"):
        plan_schedule(WarmupSchedule(optimizer(), warmup_ratio=0.01), max_steps=-1, max_epochs=-1, epoch_steps=1)


def test_module_gives_the_schedule_its_plan(small_model):
    task = Sudoku(prompt_format="raw", batch_size=8, num_train=40)  # global: 4 per process
    task.setup("fit")
    factory = lambda opt: WarmupSchedule(opt, warmup_ratio=0.1, planned_steps="epoch")  # noqa: E731
    module = DiffusionRL(PolicySpec("no/such/dir"), ESPO(), LLaDASampler(gen_length=20, block_length=20, steps=20),
                         num_generations=2, num_iterations=2, lr_scheduler=factory)
    module._trainer = SimpleNamespace(max_steps=7, max_epochs=-1, world_size=2, datamodule=task)
    task.trainer = module._trainer
    module.policy = small_model
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.total == 20 // 4 * 2  # 40 rows over 2 processes, 4 per batch, μ = 2
    assert sched.warmup() == 1


def test_state_dict_round_trip_resumes_the_schedule():
    sched = WarmupSchedule(optimizer(), warmup_ratio=0.5)
    plan_schedule(sched, max_steps=8, max_epochs=None, epoch_steps=1)
    lrs(sched, 3)
    # Lightning's resume: configure_optimizers builds and plans a fresh schedule, then loads the state.
    resumed = WarmupSchedule(optimizer(), warmup_ratio=0.5)
    plan_schedule(resumed, max_steps=100, max_epochs=None, epoch_steps=1)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.total == 8 and resumed.last_epoch == 3 and resumed.get_lr() == [0.75]


@pytest.mark.parametrize("kwargs", [{"warmup_ratio": 2.0}, {"warmup_steps": -1}, {"decay": "linear"},
                                    {"min_lr_rate": 1.5}, {"planned_steps": 0}, {"epochs": 0},
                                    {"planned_steps": "epochs"}])
def test_bad_settings_fail_early(kwargs):
    with pytest.raises(ValueError):
        WarmupSchedule(optimizer(), **kwargs)


@pytest.mark.parametrize(("name", "warmup"), [("sudoku", 500), ("gsm8k", None)])
def test_recipes_build_the_papers_schedule_from_yaml(name, warmup, monkeypatch: pytest.MonkeyPatch):
    from pathlib import Path

    from espo.cli import cli

    monkeypatch.setattr("sys.argv", ["espo"])
    config = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    parsed = cli(["--config", str(config)], run=False)
    sched = parsed.model.scheduler_factory(optimizer())
    assert isinstance(sched, WarmupSchedule) and sched.warmup_ratio == 0.001 and sched.decay == "constant"
    if warmup is None:
        assert sched.plan_source == "epoch"  # the loaded training split decides (ESPO: one epoch)
    else:
        assert sched.warmup() == warmup
