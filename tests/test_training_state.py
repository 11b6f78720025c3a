"""Resumable training state: exact round trip, a kill mid-save keeps the last checkpoint, other runs are refused."""

from __future__ import annotations

import json

import pytest
import torch

from anomaly_vlm import training_state
from anomaly_vlm.errors import CheckpointError
from anomaly_vlm.training_state import STATE_JSON, load_state, save_state

IDENTITY = {"lr": 0.1, "seed": 3, "betas": (0.5, 0.999)}


def _run(steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(steps):
        model(torch.ones(3, 4)).square().sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_state_round_trips_exactly(tmp_path):
    model, optimizer, scheduler = _run(3)
    save_state(tmp_path, IDENTITY, {"model": model.state_dict()}, optimizer, {"step": 3}, scheduler)
    fresh, fresh_optimizer, fresh_scheduler = _run(0, seed=1)
    resumed = load_state(tmp_path, IDENTITY, fresh_optimizer, fresh_scheduler)
    fresh.load_state_dict(resumed.tensors["model"])
    assert resumed.meta == {"step": 3}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == [{**g, "betas": tuple(g["betas"])} for g in loaded["param_groups"]]
    assert all(torch.equal(saved["state"][i][k], loaded["state"][i][k]) for i in saved["state"] for k in saved["state"][i])


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, _ = _run(1)
    save_state(tmp_path, IDENTITY, {"model": model.state_dict()}, optimizer, {"step": 1})

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_state, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, IDENTITY, {"model": _run(2)[0].state_dict()}, optimizer, {"step": 2})
    resumed = load_state(tmp_path, IDENTITY, _run(0)[1])
    assert resumed.meta["step"] == 1 and torch.equal(resumed.tensors["model"]["weight"], model.weight)


def test_another_run_is_refused_before_anything_is_restored(tmp_path):
    assert load_state(tmp_path, IDENTITY, _run(0)[1]) is None
    model, optimizer, _ = _run(2)
    save_state(tmp_path, IDENTITY, {"model": model.state_dict()}, optimizer, {"step": 2})
    fresh_optimizer = _run(0)[1]
    with pytest.raises(CheckpointError, match=r"another run \(lr differ\)"):
        load_state(tmp_path, {**IDENTITY, "lr": 0.2}, fresh_optimizer)
    assert not fresh_optimizer.state_dict()["state"]
    assert json.loads((tmp_path / STATE_JSON).read_text())["step"] == 2
