"""LoRA adapters: exact identity at step 0, only adapters train, merged weights load with the plain
inference path, and a LoRA training run resumes exactly and exports merged weights."""
import os

import pytest
import torch
import torch.nn.functional as F

from mmretrieve.models import create_encoder
from mmretrieve.models.temporal import TransformerHead
from mmretrieve.train import (DataConfig, LockConfig, LoraConfig, ModelConfig, OptimConfig, RunConfig, Trainer,
                              TrainConfig, add_lora, apply_locks, config_from_dict, lora_parameters, merge_lora,
                              merged_state_dict, override, parameter_groups, train)
from mmretrieve.train.lora import has_lora, is_lora_parameter, load_lora_state, lora_sites, lora_state
from mmretrieve.train.loss import LogitScale

CAPTIONS = ["a red circle", "a blue square", "a green triangle"]


def _encoder():
    return create_encoder("tiny-random", device="cpu", video_head="transformer")


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {"pixels": torch.randn(3, 3, 32, 32, generator=g), "frames": torch.randn(2, 4, 3, 32, 32, generator=g),
            "mask": torch.tensor([[True, True, True, False], [True, True, True, True]]),
            "mels": torch.randn(2, 1, 32, 128, generator=g)}


def _embed(enc, x=None):
    x = x or _inputs()
    with torch.inference_mode():
        return {"text": enc.encode_text(CAPTIONS), "image": enc.encode_image(x["pixels"]),
                "video": enc.encode_video(x["frames"], x["mask"]), "audio": enc.encode_audio(x["mels"])}


def _contrastive_steps(enc, steps=3, lr=1e-2):
    """A few AdamW steps on the adapters only (text <-> image InfoNCE)."""
    opt = torch.optim.AdamW(lora_parameters(enc), lr=lr, weight_decay=0.0)
    x = _inputs()
    enc.train()
    for _ in range(steps):
        t, i = enc.encode_text(CAPTIONS), enc.encode_image(x["pixels"])
        logits = 20.0 * t @ i.t()
        loss = F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.t(), torch.arange(3))
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()


def test_identity_at_init_and_only_adapters_trainable():
    plain = _encoder()
    ref_plain = _embed(plain)
    for p in plain.parameters():
        p.requires_grad_(False)
    ref = _embed(plain)
    enc = _encoder()
    names = add_lora(enc, towers=("image", "text", "audio"), targets=("attn", "mlp"), rank=4, alpha=8, seed=0)
    # open_clip blocks: packed in_proj (q, k, v), out_proj, c_fc, c_proj; 2 layers per tower
    assert len(names) == 3 * 2 * 4
    assert "clip.visual.transformer.resblocks.0.attn.in_proj_weight" in names
    assert "audio.transformer.resblocks.1.mlp.c_proj.weight" in names
    got = _embed(enc)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k  # B = 0: bit-for-bit the frozen model
        # torch's F.linear on the (non-contiguous) input of MultiheadAttention picks another matmul
        # order when the weight requires grad, even under inference_mode: ~1e-7 apart
        assert torch.allclose(ref_plain[k], got[k], atol=1e-6), k
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(is_lora_parameter(n) or n.startswith("video_head.") for n in trainable)
    assert {n for n in trainable if not n.startswith("video_head.")} == {
        n for n, _ in enc.named_parameters() if is_lora_parameter(n)}
    # the in_proj adapter is one (A, B) pair per q / k / v block, as for separate Linears
    site = next(s for s in lora_sites(enc) if s.key.endswith("resblocks.0.attn.in_proj_weight"))
    assert site.lora.lora_A.shape == (3, 4, 64) and site.lora.lora_B.shape == (3, 64, 4)
    assert site.lora.lora_B.abs().sum() == 0


def test_trainer_locks_with_lora_and_lr_groups():
    cfg = TrainConfig(lock=LockConfig(text=True), lora=LoraConfig(enabled=True, towers=("image",), rank=4),
                      data=DataConfig(tasks=("image", "video")))
    enc = _encoder()
    add_lora(enc, towers=cfg.lora.towers, rank=4, alpha=8, seed=0, freeze=False)
    counts = apply_locks(enc, cfg)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    image = {n for n in trainable if n.startswith("clip.visual.")}
    assert image - {"clip.visual.proj"} == {n for n, _ in enc.named_parameters()
                                            if is_lora_parameter(n) and n.startswith("clip.visual.")}
    assert "clip.visual.proj" in image  # train_projection
    assert not any(n.startswith(("clip.transformer.", "audio.")) for n in trainable)  # text locked, no audio task
    assert any(n.startswith("video_head.") for n in trainable)
    # rank 4 on in_proj (3 blocks), out_proj, c_fc (64 -> 128), c_proj (128 -> 64); width 64, 2 layers
    per_layer = 3 * 4 * (64 + 64) + 4 * (64 + 64) + 4 * (64 + 128) + 4 * (128 + 64)
    assert counts["image_lora"] == 2 * per_layer
    assert counts["image"] == enc.clip.visual.proj.numel()
    # adapters are new modules (lr), the pretrained projection gets lr_pretrained
    enc._clip_info = {**enc._clip_info, "checkpoint": "pretend-pretrained"}
    cfg2 = override(cfg, {"optim.lr": 1e-3, "optim.lr_pretrained": 1e-5})
    groups = parameter_groups(enc, LogitScale(0.07), cfg2)
    names = {id(p): n for n, p in enc.named_parameters()}
    for g in groups:
        for p in g["params"]:
            if is_lora_parameter(names.get(id(p), "")):
                assert g["name"].startswith("new") and g["lr"] == 1e-3
            if names.get(id(p)) == "clip.visual.proj":
                assert g["name"] == "pretrained" and g["lr"] == 1e-5
    no_proj = apply_locks(enc, override(cfg, {"lora.train_projection": False}))
    assert "image" not in no_proj and no_proj["image_lora"] == counts["image_lora"]


def test_steps_change_outputs_but_not_base_weights():
    enc = _encoder()
    add_lora(enc, towers=("image",), seed=0)
    frozen = {n: p.detach().clone() for n, p in enc.named_parameters() if not is_lora_parameter(n)}
    before = _embed(enc)
    _contrastive_steps(enc)
    after = _embed(enc)
    assert (after["image"] - before["image"]).abs().max() > 1e-3
    assert torch.equal(after["text"], before["text"]) and torch.equal(after["audio"], before["audio"])
    for n, p in enc.named_parameters():
        if not is_lora_parameter(n):
            assert torch.equal(p, frozen[n]), n
    assert all(s.lora.lora_B.abs().sum() > 0 for s in lora_sites(enc))
    # the checkpoint form of the adapters restores them only onto the same frozen base
    tensors, meta = lora_state(enc)
    other = _encoder()
    add_lora(other, towers=("image",), seed=5)
    load_lora_state(other, tensors, meta)
    assert torch.equal(_embed(other)["image"], after["image"])
    with torch.no_grad():
        lora_sites(other)[0].module.parametrizations.in_proj_weight.original.mul_(1.001)
    with pytest.raises(ValueError, match="frozen base weight differs"):
        load_lora_state(other, tensors, meta)


def test_merge_matches_and_loads_through_the_plain_path(tmp_path):
    enc = _encoder()
    add_lora(enc, towers=("image", "audio"), targets=("q", "v", "mlp"), rank=4, alpha=8, seed=0)
    _contrastive_steps(enc)
    adapted = _embed(enc)
    state = merged_state_dict(enc)
    fresh = _encoder()
    assert sorted(state) == sorted(fresh.state_dict())  # original keys, no adapter tensors
    assert has_lora(enc)
    merged_names = merge_lora(enc)
    assert len(merged_names) == 2 * 2 * 3 and not has_lora(enc)
    assert type(enc.clip.visual.transformer.resblocks[0].attn) is torch.nn.MultiheadAttention
    assert "forward" not in vars(enc.clip.visual.transformer.resblocks[0].mlp.c_fc)  # class forward again
    assert sorted(enc.state_dict()) == sorted(fresh.state_dict())
    merged = _embed(enc)
    for k in adapted:
        assert torch.allclose(adapted[k], merged[k], atol=1e-5), k
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k]), k
    path = tmp_path / "merged.safetensors"
    enc.save_weights(path)
    loaded = create_encoder("tiny-random", device="cpu", video_head="transformer", weights=str(path))
    again = _embed(loaded)
    for k in adapted:
        assert torch.allclose(adapted[k], again[k], atol=1e-5), k
    # only q and v rows of the packed projection moved
    e = 64
    diff = (loaded.clip.visual.transformer.resblocks[0].attn.in_proj_weight
            - fresh.clip.visual.transformer.resblocks[0].attn.in_proj_weight).abs().sum(dim=1)
    assert diff[:e].sum() > 0 and diff[e:2 * e].sum() == 0 and diff[2 * e:].sum() > 0
    assert torch.equal(loaded.clip.visual.transformer.resblocks[0].attn.out_proj.weight,
                       fresh.clip.visual.transformer.resblocks[0].attn.out_proj.weight)


def test_rank_dropout_and_any_module():
    head = TransformerHead(32, layers=2)
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    head.eval()
    ref = head(x, mask)
    names = add_lora(head, targets=("attn", "mlp"), rank=2, alpha=4, dropout=0.5, seed=0)
    assert names == [f"blocks.{i}.{w}" for i in range(2)
                     for w in ("attn.in_proj_weight", "attn.out_proj.weight", "mlp.0.weight", "mlp.2.weight")]
    assert torch.equal(head(x, mask), ref)
    with torch.no_grad():
        for p in lora_parameters(head):
            p.normal_(0, 0.1)
    assert torch.equal(head(x, mask), head(x, mask))  # eval: no dropout
    head.train()
    torch.manual_seed(0)
    assert not torch.equal(head(x, mask), head(x, mask))  # train: rank dropout
    head.eval()
    assert torch.equal(head(x, mask), head(x, mask))
    # a bare Linear: y = W x + b + (alpha / r) B(A(x)), input dropout while training
    lin = torch.nn.Linear(8, 4)
    x8 = torch.randn(5, 8)
    ref = lin(x8)
    assert add_lora(lin, rank=2, alpha=2, dropout=0.5, seed=1) == ["weight"]
    assert torch.equal(lin(x8), ref) and not lin.parametrizations.weight.original.requires_grad
    with torch.no_grad():
        lora = lin.parametrizations.weight[0]
        lora.lora_B.normal_()
        w0 = lin.parametrizations.weight.original.clone()
    lin.eval()
    want = x8 @ w0.t() + lin.bias + (x8 @ lora.lora_A[0].t()) @ lora.lora_B[0].t()
    assert torch.allclose(lin(x8), want, atol=1e-5)
    merge_lora(lin)
    assert torch.allclose(lin(x8), want, atol=1e-5) and type(lin) is torch.nn.Linear


def test_gradient_checkpointing_gives_the_same_step(small_corpus):
    def one_step(gc):
        cfg = TrainConfig(model=ModelConfig(preset="tiny-random"),
                          data=DataConfig(kind="synthetic", root=small_corpus, tasks=("image", "video")),
                          optim=OptimConfig(lr=1e-2, max_steps=1, batch_size=4),
                          lora=LoraConfig(enabled=True, towers=("image", "text"), rank=4),
                          run=RunConfig(progress=False, seed=0, grad_checkpointing=gc))
        t = Trainer(cfg)
        row = t.train_step()
        return row, {n: p.detach().clone() for n, p in t.encoder.named_parameters() if is_lora_parameter(n)}

    (row_a, a), (row_b, b) = one_step(False), one_step(True)
    assert row_a["loss"] == pytest.approx(row_b["loss"], rel=1e-6)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_config_yaml_overrides_and_errors():
    cfg = config_from_dict({"lock": {"text": True},
                            "lora": {"enabled": True, "towers": ["image", "audio"], "rank": 4, "alpha": 8}})
    assert cfg.lora.towers == ("image", "audio") and cfg.lora.rank == 4 and cfg.lora.alpha == 8.0
    cfg2 = override(cfg, {"lora.rank": 16, "lora.towers": "image", "lora.targets": ["q", "v"]})
    assert cfg2.lora.rank == 16 and cfg2.lora.towers == ("image",) and cfg2.lora.targets == ("q", "v")
    with pytest.raises(ValueError, match="lora.towers.*lock.text"):
        override(cfg, {"lora.towers": ["text"]})
    with pytest.raises(ValueError, match="lora.targets"):
        override(cfg, {"lora.targets": ["qkv"]})
    with pytest.raises(ValueError, match="lora.rank"):
        override(cfg, {"lora.rank": 0})
    with pytest.raises(ValueError, match="lora.*unknown key"):
        config_from_dict({"lora": {"ranks": 4}})


def _cfg(root, out, export=None):
    return TrainConfig(
        model=ModelConfig(preset="tiny-random", video_head="transformer"),
        data=DataConfig(kind="synthetic", root=root, val_fraction=0.25, tasks=("image", "video", "audio")),
        optim=OptimConfig(lr=5e-3, warmup_steps=1, max_steps=4, batch_size=4),
        lock=LockConfig(text=True),
        lora=LoraConfig(enabled=True, towers=("image", "audio"), rank=4, alpha=8, dropout=0.1),
        run=RunConfig(out=str(out), progress=False, seed=2, log_every=1, export=export),
    )


def test_lora_training_resumes_exactly_and_exports_merged(small_corpus, tmp_path):
    export = tmp_path / "full.safetensors"
    full = train(_cfg(small_corpus, tmp_path / "full", str(export)), resume=False)
    assert full.step == 4
    stopped = Trainer(_cfg(small_corpus, tmp_path / "killed")).fit(resume=False, stop_after=2)
    assert stopped.step == 2
    del stopped
    res = Trainer(_cfg(small_corpus, tmp_path / "killed")).fit(resume=True)
    assert res.history[0]["step"] == 3 and res.step == 4
    for row, ref in zip(res.history, full.history[2:]):
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7), row["step"]
    a, b = full.encoder.state_dict(), res.encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    fresh = _encoder()
    base = fresh.state_dict()
    for s in lora_sites(full.encoder):  # frozen bases untouched, adapters trained
        assert torch.equal(s.module.parametrizations[s.tensor_name].original, base[s.key]), s.key
        assert s.lora.lora_B.abs().sum() > 0
    ckpt = tmp_path / "full" / "last"
    assert sorted(os.listdir(ckpt)) == ["lora.safetensors", "model.safetensors", "optimizer.pt", "state.json",
                                        "trainer.safetensors"]
    want = _embed(full.encoder)
    for weights in (ckpt / "model.safetensors", tmp_path / "full" / "best" / "model.safetensors", export):
        enc = create_encoder("tiny-random", device="cpu", video_head="transformer", weights=str(weights))
        assert not has_lora(enc)
        got = _embed(enc)
        for k in want:
            assert torch.allclose(want[k], got[k], atol=1e-5), (weights, k)
    # a LoRA checkpoint refuses to resume into a run without LoRA (and the other way round)
    plain = override(_cfg(small_corpus, tmp_path / "full"), {"lora.enabled": False})
    with pytest.raises(ValueError, match="LoRA"):
        Trainer(plain).resume_from(str(ckpt))
