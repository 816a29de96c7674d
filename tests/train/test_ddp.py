"""DDP on CPU: 2 processes (gloo), features all-gathered with gradient. The averaged gradients are
equal on both ranks AND equal to the gradient of one process on the same global batch."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mmretrieve.train import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig


def _cfg(root, batch_size):
    return TrainConfig(
        model=ModelConfig(preset="tiny-random"),
        data=DataConfig(kind="synthetic", root=root, val_fraction=0.25),
        optim=OptimConfig(lr=1e-3, max_steps=2, batch_size=batch_size),
        run=RunConfig(progress=False, seed=0, device="cpu"),
    )


def _grads_after_steps(trainer, steps: int) -> dict:
    from mmretrieve.train.distributed import average_gradients

    for _ in range(steps - 1):
        trainer.train_step()
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = torch.stack([trainer.task_loss(t, trainer.step) for t in trainer.streams]).mean()
    loss.backward()
    params = dict(trainer.encoder.named_parameters())
    params["log_scale"] = trainer.logit_scale.log_scale
    average_gradients(list(params.values()), trainer.dist)
    out = {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}
    out["__loss__"] = loss.detach().reshape(1)
    return out


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    from mmretrieve.train import Trainer
    from mmretrieve.train.distributed import DistInfo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = Trainer(_cfg(root, batch_size=3), dist_info=DistInfo(rank, world, 0))
        save_file(_grads_after_steps(trainer, 1), os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_gradients_match(small_corpus, tmp_path):
    from safetensors.torch import load_file

    from mmretrieve.train import Trainer

    mp.spawn(_worker, args=(2, _free_port(), small_corpus, str(tmp_path)), nprocs=2, join=True)
    g0, g1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert g0.keys() == g1.keys() and len(g0) > 10
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k
    # one process, global batch 6 = the two ranks' batches of 3 together
    single = _grads_after_steps(Trainer(_cfg(small_corpus, batch_size=6)), 1)
    assert single["__loss__"].item() == pytest.approx(g0["__loss__"].item(), rel=1e-5)
    worst = max(float((g0[k] - single[k]).norm() / single[k].norm().clamp_min(1e-12)) for k in g0 if k != "__loss__")
    assert worst < 1e-3, worst  # same maths, different float summation order
