"""Training under real faults and its arithmetic: SIGKILLed `mmretrieve train` processes resume to the
weights and log of an uninterrupted run; gradient accumulation; bf16 autocast on the CPU."""
from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mmretrieve.train import DataConfig, ModelConfig, OptimConfig, RunConfig, Trainer, TrainConfig, train

STEPS = 12


# ---------------------------------------------------------------------------------------- SIGKILL
def _train_cmd(corpus: str, out: str) -> list[str]:
    return [sys.executable, "-m", "mmretrieve", "train", "--recipe", "synthetic-sample", "--data", corpus,
            "--out", out, "--preset", "tiny-random", "--no-progress",
            "--set", "model.preset_weights=true", "--set", "lock.token_embedding=false",
            "--set", f"optim.max_steps={STEPS}", "--set", "optim.batch_size=4", "--set", "optim.warmup_steps=2",
            "--set", "data.num_workers=0", "--set", "run.log_every=1", "--set", "run.save_every=2",
            "--set", "run.eval_every=null", "--set", "run.export=null"]


def _logged_steps(out: str) -> int:
    try:
        with open(os.path.join(out, "log.csv"), newline="", encoding="utf-8") as f:
            return max((int(r["step"]) for r in csv.DictReader(f)), default=0)
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or replaced right now


def _run_until(cmd: list[str], out: str, threshold: int, deadline: float) -> tuple[bool, int]:
    """Start the run; SIGKILL it once `threshold` steps are logged. (killed before the end?, steps logged)"""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _logged_steps(out) >= threshold:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return True, _logged_steps(out)
            time.sleep(0.005)
        if proc.poll() is None:
            raise AssertionError("the training run did not finish in time")
        assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
        return False, _logged_steps(out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _log_rows(out: str) -> list[dict]:
    with open(os.path.join(out, "log.csv"), newline="", encoding="utf-8") as f:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkilled_train_resumes_to_the_weights_and_log_of_an_uninterrupted_run(small_corpus, tmp_path):
    seed = int(os.environ.get("MMR_KILL_SEED", "14"))
    thresholds = sorted(random.Random(seed).sample(range(1, STEPS), 3))
    deadline = time.monotonic() + 400
    ref_dir = str(tmp_path / "reference")  # the uninterrupted run, beside the killed ones
    ref = subprocess.Popen(_train_cmd(small_corpus, ref_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_dir = str(tmp_path / "killed")
    cmd = _train_cmd(small_corpus, killed_dir)
    schedule = []
    for threshold in thresholds:
        killed, logged = _run_until(cmd, killed_dir, threshold, deadline)
        schedule.append((threshold, killed, logged))
    kills = [s for s in schedule if s[1] and s[2] < STEPS]
    assert len(kills) >= 2, f"the kills did not land mid-run: {schedule}"
    killed, logged = _run_until(cmd, killed_dir, STEPS + 1, deadline)  # resume to the end
    assert not killed and logged == STEPS

    try:
        assert ref.wait(max(1.0, deadline - time.monotonic())) == 0, ref.stderr.read().decode()[-3000:]
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait(30)
    assert _logged_steps(ref_dir) == STEPS

    got = load_file(os.path.join(killed_dir, "last", "model.safetensors"))
    want = load_file(os.path.join(ref_dir, "last", "model.safetensors"))
    assert sorted(got) == sorted(want)
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{len(differ)} tensors differ after kills at {schedule}: {differ[:5]}"
    rows, ref_rows = _log_rows(killed_dir), _log_rows(ref_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert rows == ref_rows, f"log differs after kills at {schedule}"
    print(f"kill schedule (threshold, killed, steps logged): {schedule}")


# ---------------------------------------------------------------------------------------- arithmetic
def _cfg(root: str, *, batch_size: int = 4, grad_accum: int = 1, amp: str = "none", steps: int = 1) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(preset="tiny-random"),
        data=DataConfig(kind="synthetic", root=root, val_fraction=0.25),
        optim=OptimConfig(lr=2e-3, max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, grad_clip=None),
        run=RunConfig(out=None, progress=False, seed=1, amp=amp),
    )


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"encoder.{n}": p.grad.detach().clone() for n, p in trainer.encoder.named_parameters()
           if p.grad is not None}
    out.update({f"logit_scale.{n}": p.grad.detach().clone() for n, p in trainer.logit_scale.named_parameters()
                if p.grad is not None})
    return out


def test_gradient_accumulation_equals_one_backward_over_the_k_micro_batches(small_corpus):
    """grad_accum=k draws micro-batches 0..k-1 and accumulates the gradient of their mean loss: the same
    gradient (within float tolerance) as one backward pass of that mean loss, and the same update.
    (Each micro-batch is its own contrastive problem, as the trainer documents: the k x larger batch
    would also contrast items across micro-batches, so its loss is a different function.)"""
    k = 3
    accumulated = Trainer(_cfg(small_corpus, grad_accum=k))
    row = accumulated.train_step()
    got = _grads(accumulated)

    single = Trainer(_cfg(small_corpus, grad_accum=1))
    single.optimizer.zero_grad(set_to_none=True)
    losses = [torch.stack([single.task_loss(t, m) for t in single.streams]).mean() for m in range(k)]
    torch.stack(losses).mean().backward()
    want = _grads(single)

    assert sorted(got) == sorted(want) and len(want) > 10
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    assert row["loss"] == pytest.approx(float(torch.stack(losses).mean().detach()), rel=1e-5)
    # and it is not the gradient of the first micro-batch alone (accumulation really adds them)
    single.optimizer.zero_grad(set_to_none=True)
    torch.stack([single.task_loss(t, 0) for t in single.streams]).mean().backward()
    first_only = _grads(single)
    assert any(not torch.allclose(first_only[n], want[n], rtol=1e-3, atol=1e-5) for n in want)

    # the optimiser step on that one-pass gradient gives the accumulated run's weights
    fresh = Trainer(_cfg(small_corpus, grad_accum=1))
    fresh.optimizer.zero_grad(set_to_none=True)
    torch.stack([torch.stack([fresh.task_loss(t, m) for t in fresh.streams]).mean() for m in range(k)]).mean().backward()
    fresh.optimizer.step()
    for (name, p), (_, q) in zip(accumulated.encoder.named_parameters(), fresh.encoder.named_parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_on_cpu_trains_with_finite_loss_close_to_fp32(small_corpus):
    steps = 4
    fp32 = train(_cfg(small_corpus, steps=steps), resume=False)
    bf16 = train(_cfg(small_corpus, steps=steps, amp="bf16"), resume=False)
    assert [r["step"] for r in bf16.history] == list(range(1, steps + 1))
    for a, b in zip(fp32.history, bf16.history):
        assert math.isfinite(b["loss"]), b
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05), (a["step"], a["loss"], b["loss"])
    # bf16 really ran: the losses are close, not identical
    assert any(a["loss"] != b["loss"] for a, b in zip(fp32.history, bf16.history))
    assert all(torch.isfinite(p).all() for p in bf16.encoder.parameters())
