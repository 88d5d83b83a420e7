"""The training protocol in process: settings, Keras early stopping, determinism, resume, outputs."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from jetshards import write_dataset
from salt.data.loader import load_split
from salt.data.shards import load_manifest
from salt.models import load_model
from salt.train import train
from salt.training.early_stopping import EarlyStopping
from salt.training.optim import KerasAdam, loss_sum
from salt.training.settings import TrainSettings
from salt.training.signals import EXIT_PREEMPTED, SIGNAL_HOOK_ENV, Preempted

torch.set_num_threads(1)
SCHEDULE = [[32, 2], [64, 2]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), chunk_jets=64)


def run(data, out, seed=1, spec=None, **settings):
    s = TrainSettings.from_dict({"schedule": SCHEDULE, "loader": "memory", "workers": 0} | settings)
    return train(data, dict(spec or {"model": "salt"}), s, seed=seed, device="cpu", out_dir=out)


def weights(out):
    return load_model(out / "model.pt")[0].state_dict()


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def history(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def val_loss_of(out, manifest_path):
    model, _ = load_model(out / "model.pt")
    val = load_split(load_manifest(manifest_path), "val")
    with torch.no_grad():
        return float(loss_sum(model(val.x, val.mask), val.y)) / len(val)


# -- settings -------------------------------------------------------------------------------

def test_settings_reject_unknown_keys_and_values():
    with pytest.raises(ValueError, match=r"unknown keys \['shedule'\]"):
        TrainSettings.from_dict({"schedule": SCHEDULE, "shedule": 1})
    with pytest.raises(ValueError, match="resolved by the train rule"):
        TrainSettings.from_dict({"schedule": SCHEDULE, "schedules": {}})
    with pytest.raises(ValueError, match="precision"):
        TrainSettings.from_dict({"schedule": SCHEDULE, "precision": "fp16"})
    with pytest.raises(ValueError, match="schedule"):
        TrainSettings.from_dict({"schedule": [[32, 0]]})
    s = TrainSettings.from_dict({"schedule": SCHEDULE})
    assert s.schedule == [(32, 2), (64, 2)] and s.eps == 1e-7 and s.lr == 1e-3 and s.patience == 40
    assert "checkpoint_minutes" not in s.result_dict()


# -- Keras Adam ------------------------------------------------------------------------------

def test_keras_adam_follows_the_keras_update_rule():
    torch.manual_seed(0)
    w0, grads = torch.randn(5, dtype=torch.float64), [torch.randn(5, dtype=torch.float64) for _ in range(4)]
    w = torch.nn.Parameter(w0.clone())
    opt = KerasAdam([w], lr=1e-3, eps=1e-7)
    m, v, expected = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), w0.clone()
    for t, g in enumerate(grads, start=1):   # keras/optimizers/adam.py update_step, by hand
        w.grad = g.clone()
        opt.step()
        m, v = m + (g - m) * 0.1, v + (g * g - v) * 0.001
        expected -= 1e-3 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (v.sqrt() + 1e-7)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)


def test_keras_and_torch_adam_differ_only_in_where_eps_goes():
    torch.manual_seed(0)
    grads = [torch.randn(5, dtype=torch.float64) * 1e-6 for _ in range(3)]   # small: eps matters
    out = {}
    for name, eps in (("keras", 0.0), ("torch", 0.0), ("keras_eps", 1e-7), ("torch_eps", 1e-7)):
        w = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
        opt = (KerasAdam([w], eps=eps) if name.startswith("keras") else torch.optim.Adam([w], lr=1e-3, eps=eps))
        for g in grads:
            w.grad = g.clone()
            opt.step()
        out[name] = w.detach()
    torch.testing.assert_close(out["keras"], out["torch"], rtol=1e-12, atol=0)
    assert not torch.allclose(out["keras_eps"], out["torch_eps"], rtol=1e-3, atol=0)


# -- Keras EarlyStopping semantics (TF 2.15) ------------------------------------------------

class Marked(torch.nn.Module):
    """A model whose single weight says which epoch it comes from."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def feed(stopper, model, values, first_epoch=0):
    for i, v in enumerate(values):
        model.w.data.fill_(first_epoch + i)
        if stopper.update(first_epoch + i, v, model):
            return first_epoch + i
    return None


def test_early_stopping_restores_the_best_epoch_when_it_stops():
    model, es = Marked(), EarlyStopping(patience=2)
    assert feed(es, model, [1.0, 0.9, 0.95, 0.97, 0.5]) == 3   # two epochs without improvement
    assert model.w.item() == 1 and es.best == 0.9 and es.best_epoch == 1


def test_early_stopping_restores_nothing_when_the_phase_runs_out():
    model, es = Marked(), EarlyStopping(patience=3)
    assert feed(es, model, [1.0, 0.9, 0.95]) is None
    assert model.w.item() == 2                                   # the last epoch's weights stay


def test_early_stopping_equal_is_no_improvement_and_nan_keeps_first_weights():
    model, es = Marked(), EarlyStopping(patience=2)
    assert feed(es, model, [math.nan, math.nan, math.nan], first_epoch=10) == 11
    assert model.w.item() == 10                                  # the phase's first weights come back
    model, es = Marked(), EarlyStopping(patience=1)
    assert feed(es, model, [0.5, 0.5], first_epoch=4) == 5


def test_early_stopping_never_stops_at_absolute_epoch_zero():
    model, es = Marked(), EarlyStopping(patience=1)
    assert feed(es, model, [math.nan, 2.0]) is None              # epoch 0 is exempt, epoch 1 improves


# -- training --------------------------------------------------------------------------------

def test_two_runs_are_bit_identical_and_record_what_they_did(data, tmp_path):
    s1 = run(data, tmp_path / "a")
    run(data, tmp_path / "b")
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    ha, hb = history(tmp_path / "a"), history(tmp_path / "b")
    drop = ("wall_s", "epoch_s", "jets_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ha] == \
           [{k: v for k, v in r.items() if k not in drop} for r in hb]
    assert [r["batch_size"] for r in ha] == ["32", "32", "64", "64"]
    assert {r["device"] for r in ha} == {"cpu"} and {r["precision"] for r in ha} == {"fp32"}
    assert not (tmp_path / "a/checkpoint.pt").exists()          # removed once model.pt is written
    _, extra = load_model(tmp_path / "a/model.pt")
    assert extra["summary"]["device"] == "cpu" and extra["summary"]["precision"] == "fp32"
    assert extra["summary"]["attempts"] == 1 and s1["epochs"] == 4
    assert extra["provenance"]["device"]["device"] == "cpu"
    other = run(data, tmp_path / "c", seed=2)
    assert other["final_val_loss"] != s1["final_val_loss"]


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_resume_after_a_signal_gives_the_same_weights(data, tmp_path, monkeypatch, loader):
    opts = {"loader": loader, "buffer_jets": 96}
    run(data, tmp_path / "ref", **opts)
    out = tmp_path / "int"
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "23")   # inside epoch 1 (19 batches of 32 per epoch)
    with pytest.raises(Preempted):
        run(data, out, **opts)
    assert (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "45:USR1")   # inside the second phase (38 + 10 batches of 64)
    with pytest.raises(Preempted):
        run(data, out, **opts)
    monkeypatch.delenv(SIGNAL_HOOK_ENV)
    summary = run(data, out, **opts)
    assert summary["attempts"] == 3
    assert_identical(weights(out), weights(tmp_path / "ref"))
    assert [r["val_loss"] for r in history(out)] == [r["val_loss"] for r in history(tmp_path / "ref")]
    assert [r["attempt"] for r in history(out)] == ["1", "2", "3", "3"]


def test_checkpoint_of_other_settings_is_not_resumed(data, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"
    monkeypatch.setenv(SIGNAL_HOOK_ENV, "5")
    with pytest.raises(Preempted):
        run(data, out, seed=7)
    monkeypatch.delenv(SIGNAL_HOOK_ENV)
    run(data, out, seed=1, checkpoint_minutes=0.5)   # another seed: start afresh
    assert "different ['seed']" in caplog.text
    run(data, tmp_path / "ref", seed=1)
    assert_identical(weights(out), weights(tmp_path / "ref"))


def test_a_phase_that_stops_early_ends_on_its_best_epoch(data, tmp_path):
    s = run(data, tmp_path / "es", schedule=[[16, 60]], patience=1)
    rows = history(tmp_path / "es")
    assert s["stopped_early_phases"] == [0] and len(rows) < 60
    best = min(float(r["val_loss"]) for r in rows)
    assert float(rows[-1]["val_loss"]) > best                  # the last epoch did not improve ...
    assert val_loss_of(tmp_path / "es", data) == pytest.approx(best, rel=1e-5)   # ... its weights are gone


def test_global_best_option_ends_on_the_lowest_validation_loss(data, tmp_path):
    # one long phase with large patience never stops early: "phase" keeps the last weights,
    # "global" the best ones
    s = run(data, tmp_path / "g", schedule=[[300, 12]], patience=40, early_stopping="global", spec={"model": "linformer"})
    rows = history(tmp_path / "g")
    best = min(float(r["val_loss"]) for r in rows)
    assert s["final_weights"].startswith("global best") and s["stopped_early_phases"] == []
    assert val_loss_of(tmp_path / "g", data) == pytest.approx(best, rel=1e-5)


def test_binary_task_uses_one_sigmoid_output(tmp_path):
    manifest = write_dataset(tmp_path / "bin", classes=("bkg", "sig"))
    run(manifest, tmp_path / "out", spec={"model": "linformer", "classes": 1})
    model, _ = load_model(tmp_path / "out/model.pt")
    assert model.spec.classes == 1
    y = torch.tensor([0, 1, 1])
    logits = torch.tensor([[-2.0], [0.5], [3.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="sum")
    assert loss_sum(logits, y) == pytest.approx(float(expected))


def test_bf16_autocast_is_recorded(data, tmp_path):
    s = run(data, tmp_path / "bf", schedule=[[64, 1]], precision="bf16")
    assert s["precision"] == "bf16" and {r["precision"] for r in history(tmp_path / "bf")} == {"bf16"}


def test_spec_that_does_not_fit_the_shards_names_the_manifest(data, tmp_path):
    with pytest.raises(ValueError, match=r"particles=99 .*manifest.json"):
        run(data, tmp_path / "x", spec={"model": "salt", "particles": 99})


def test_exit_code_is_documented():
    from salt.train import add_arguments
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert str(EXIT_PREEMPTED) in parser.epilog and EXIT_PREEMPTED == 75
