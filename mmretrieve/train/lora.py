"""LoRA adapters (Hu et al., 2021) for the transformer towers, as weight parametrizations.

A LoRA'd weight ``W`` (out x in) is replaced, for every module that reads it, by

    W' = W + (alpha / r) * B @ A          A: r x in (random), B: out x r (zeros)

so ``y = W' x + b = W x + b + (alpha / r) * B (A x)``. ``B`` starts at zero, hence the adapted model
gives exactly the frozen model's outputs at step 0. Every adapted weight is registered through
``torch.nn.utils.parametrize`` (one mechanism for storage, ``state_dict`` keys and merging; any code
reading ``module.weight`` sees W'). How the forward pass uses it depends on the module:

* ``nn.MultiheadAttention`` hands its packed ``in_proj_weight`` and ``out_proj.weight`` straight to
  ``F.multi_head_attention_forward`` (or the fused fast path) without calling a Linear, so there the
  delta is applied in weight space: W' is computed and used. The packed q/k/v projection gets one
  (A, B) pair per selected block (q, k, v), as if they were separate Linears.
* An ``nn.Linear`` that is called as a module (the MLP's ``c_fc`` / ``c_proj``) runs the low-rank
  branch on the activations instead, ``W x + b + (alpha / r) * B(A(dropout(x)))``: no W' and no
  full-size weight gradient is computed, which is what makes LoRA cheaper than fine-tuning.

Targets, per transformer block of a tower: ``q``, ``k``, ``v``, ``out`` (the attention's output
projection), ``attn`` (= q, k, v, out) and ``mlp`` (every Linear under a module called ``mlp``:
open_clip's ``c_fc`` and ``c_proj``). Towers of a ``MultiModalEncoder``: ``image``
(``clip.visual``), ``text`` (the rest of ``clip``) and ``audio``; any other module can be adapted
whole.

``dropout``: for Linear layers the paper's dropout on the input x of the low-rank branch. Inside
MultiheadAttention there is no separate branch to drop inputs of, so there it is *rank dropout*:
while training, each of the r rank components of a delta is dropped with probability p (the rest
rescaled by 1 / (1 - p)), once per weight computation.

``merge_lora`` folds the deltas into the base weights and removes the parametrizations: the
module's state dict then has its original keys (``...attn.in_proj_weight``) and loads with the
inference path, which knows nothing of LoRA. ``merged_state_dict`` gives the same dict without
touching the module (what checkpoints and exports write).

Cost: a weight-space W' (attention) is a new tensor at each access and its gradient is full-size
(then reduced to A and B); inside ``lora_cached(module)`` (``parametrize.cached`` plus computing
every attention W' on entry) each is computed once for a whole forward + backward. The trainer does
that per micro-step, so the frames of a video batch going through the image tower in chunks share
one W' per layer (and gradient checkpointing recomputes nothing of it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import types
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "LoraDelta",
    "LoraSite",
    "TOWERS",
    "TARGETS",
    "add_lora",
    "lora_sites",
    "lora_parameters",
    "lora_named_parameters",
    "is_lora_parameter",
    "has_lora",
    "merge_lora",
    "merged_state_dict",
    "lora_cached",
    "lora_state",
    "load_lora_state",
    "lora_base_keys",
]

TOWERS = ("image", "text", "audio")
TARGETS = ("attn", "q", "k", "v", "out", "mlp")
_FORMAT = "mmretrieve-lora/1"
_INITS = ("kaiming", "gaussian")


class LoraDelta(nn.Module):
    """Parametrization ``W -> W + (alpha / r) * B @ A`` on row blocks of ``W``.

    ``blocks``: (first row, number of rows) per adapted block, all of the same size (one block for
    a Linear; up to three for a packed q/k/v projection). ``lora_A`` is (blocks, r, in), ``lora_B``
    (blocks, rows, r).
    """

    def __init__(self, weight: torch.Tensor, blocks: Sequence[tuple[int, int]], rank: int, alpha: float,
                 dropout: float = 0.0, init: str = "kaiming", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ValueError(f"LoRA needs a 2-D weight, got shape {tuple(weight.shape)}")
        if rank < 1:
            raise ValueError(f"rank={rank}: must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout}: must be in [0, 1)")
        if init not in _INITS:
            raise ValueError(f"init={init!r}: choose one of {', '.join(_INITS)}")
        blocks = tuple((int(s), int(n)) for s, n in sorted(blocks))
        sizes = {n for _, n in blocks}
        out_f, in_f = weight.shape
        if not blocks or len(sizes) != 1 or blocks[0][0] < 0 or blocks[-1][0] + blocks[-1][1] > out_f or any(
                a[0] + a[1] > b[0] for a, b in zip(blocks, blocks[1:])):
            raise ValueError(f"blocks {blocks}: need non-overlapping row blocks of one size within {out_f} rows")
        self.blocks = blocks
        self.shape = (out_f, in_f)
        self.rank, self.alpha, self.dropout, self.init = int(rank), float(alpha), float(dropout), init
        self.scale = self.alpha / self.rank
        rows = blocks[0][1]
        a = torch.empty(len(blocks), rank, in_f, dtype=torch.float32)
        for i in range(len(blocks)):
            if init == "kaiming":  # what nn.Linear does for its weight (bound 1 / sqrt(in))
                nn.init.kaiming_uniform_(a[i], a=math.sqrt(5), generator=generator)
            else:
                nn.init.normal_(a[i], std=1.0 / rank, generator=generator)
        self.lora_A = nn.Parameter(a.to(device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(len(blocks), rows, rank, device=weight.device, dtype=weight.dtype))
        self._whole = blocks[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(blocks, blocks[1:])) and \
            blocks[-1][0] + blocks[-1][1] == out_f

    def delta(self, train: bool | None = None) -> torch.Tensor:
        """``(alpha / r) * B @ A`` laid out like the weight (zeros outside the blocks). ``train``:
        apply rank dropout (default: ``self.training``)."""
        a = self.lora_A
        train = self.training if train is None else train
        if train and self.dropout > 0:
            keep = torch.rand(a.shape[0], a.shape[1], 1, device=a.device) >= self.dropout
            a = a * (keep.to(a.dtype) / (1.0 - self.dropout))
        d = torch.bmm(self.lora_B, a) * self.scale  # (blocks, rows, in)
        if self._whole:
            return d.reshape(self.shape)
        pieces, row = [], 0
        for (start, n), part in zip(self.blocks, d):
            if start > row:
                pieces.append(d.new_zeros(start - row, self.shape[1]))
            pieces.append(part)
            row = start + n
        if row < self.shape[0]:
            pieces.append(d.new_zeros(self.shape[0] - row, self.shape[1]))
        return torch.cat(pieces)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta().to(weight.dtype)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """``(alpha / r) * B(A(dropout(x)))`` for a single-block (whole Linear) adapter."""
        if len(self.blocks) != 1 or not self._whole:
            raise RuntimeError("the activation-space branch needs one block covering the whole weight")
        h = F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x
        return F.linear(F.linear(h, self.lora_A[0]), self.lora_B[0]) * self.scale

    def describe(self) -> dict:
        return {"blocks": [list(b) for b in self.blocks], "rank": self.rank, "alpha": self.alpha,
                "dropout": self.dropout, "init": self.init}

    def extra_repr(self) -> str:
        return f"shape={self.shape}, blocks={self.blocks}, rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}"


def _lora_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Forward of a LoRA'd Linear: the frozen layer plus the low-rank branch (W' never formed)."""
    plist = self.parametrizations.weight
    return F.linear(x, plist.original, self.bias) + plist[0].branch(x)


class LoraSite(NamedTuple):
    """One adapted weight: ``key`` is its plain state-dict name (``...attn.in_proj_weight``)."""

    key: str
    module: nn.Module
    tensor_name: str
    lora: LoraDelta


# ----------------------------------------------------------------------------- finding targets
def _is_encoder(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("clip", "audio", "video_head"))


def tower_of(name: str) -> str:
    """Which tower a parameter or module of MultiModalEncoder belongs to: image, text, audio,
    video_head, clip_scale (the CLIP model's own temperature) or other."""
    if name == "clip.visual" or name.startswith("clip.visual."):
        return "image"
    if name == "clip.logit_scale" or name.startswith("clip.logit_bias"):
        return "clip_scale"
    if name.startswith("clip."):
        return "text"
    if name.startswith("audio."):
        return "audio"
    if name.startswith("video_head."):
        return "video_head"
    return "other"


def _lora_tower(name: str) -> str:
    """tower_of, with CLIP's temperature counted in the text tower (what freezing a LoRA'd text tower covers)."""
    tower = tower_of(name)
    return "text" if tower == "clip_scale" else tower


def _candidates(module: nn.Module, towers: set[str] | None, targets: set[str]):
    """(owner qualified name, owner, tensor name, row blocks, activation-space forward) for every
    weight to adapt."""
    qkv = [i for i, t in enumerate("qkv") if t in targets]
    for name, m in module.named_modules():
        if ".parametrizations." in f".{name}." or (towers is not None and _lora_tower(name) not in towers):
            continue
        if isinstance(m, nn.MultiheadAttention):
            e = m.embed_dim
            if qkv:
                if m._qkv_same_embed_dim:
                    yield name, m, "in_proj_weight", [(i * e, e) for i in qkv], False
                else:
                    for i in qkv:
                        yield name, m, f"{'qkv'[i]}_proj_weight", [(0, e)], False
            if "out" in targets:
                yield f"{name}.out_proj" if name else "out_proj", m.out_proj, "weight", [(0, e)], False
        elif isinstance(m, nn.Linear) and (name == "" or ("mlp" in targets and "mlp" in name.split(".")[:-1])):
            yield name, m, "weight", [(0, m.out_features)], True  # a bare Linear passed in: always


def add_lora(module_or_encoder: nn.Module, towers: Sequence[str] | None = ("image",),
             targets: Sequence[str] = ("attn", "mlp"), rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             *, init: str = "kaiming", seed: int | None = None, freeze: bool = True) -> list[str]:
    """Add LoRA adapters; returns the plain names of the adapted weights.

    module_or_encoder: a ``MultiModalEncoder`` (``towers`` picks image / text / audio) or any module
        (adapted whole; ``towers`` is ignored); a bare ``nn.Linear`` is adapted whatever ``targets``.
    targets: some of ``q k v out attn mlp`` (see the module docstring).
    seed: initialise ``A`` from this seed (the global RNG is left alone); None uses the global RNG.
    freeze: set ``requires_grad=False`` on every other parameter of the adapted towers (module),
        leaving only the adapters trainable there.
    """
    targets = tuple([targets] if isinstance(targets, str) else targets)
    bad = sorted(set(targets) - set(TARGETS))
    if bad or not targets:
        raise ValueError(f"targets={list(targets)!r}: a non-empty list of {', '.join(TARGETS)}")
    tower_set: set[str] | None = None
    if _is_encoder(module_or_encoder):
        towers = tuple([towers] if isinstance(towers, str) else (towers or ()))
        bad = sorted(set(towers) - set(TOWERS))
        if bad or not towers:
            raise ValueError(f"towers={list(towers)!r}: a non-empty list of {', '.join(TOWERS)}")
        tower_set = set(towers)
    targets_set = set(targets)
    if "attn" in targets_set:
        targets_set |= {"q", "k", "v", "out"}
    found = list(_candidates(module_or_encoder, tower_set, targets_set))
    if not found:
        where = f"towers {sorted(tower_set)}" if tower_set is not None else type(module_or_encoder).__name__
        raise ValueError(f"add_lora: no {'/'.join(targets)} weights found in {where} (LoRA adapts "
                         f"nn.MultiheadAttention and the nn.Linear layers of modules called 'mlp')")
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    names = []
    for owner_name, owner, tensor_name, blocks, activation in found:
        key = f"{owner_name}.{tensor_name}" if owner_name else tensor_name
        if parametrize.is_parametrized(owner, tensor_name):
            raise ValueError(f"{key}: already parametrized (add_lora called twice?)")
        delta = LoraDelta(getattr(owner, tensor_name), blocks, rank, alpha, dropout, init, generator)
        delta.eval()  # registering evaluates it once: no dropout draw from the global RNG
        parametrize.register_parametrization(owner, tensor_name, delta)
        delta.train(owner.training)
        if activation:
            owner.forward = types.MethodType(_lora_linear_forward, owner)
        names.append(key)
    if freeze:
        for name, p in module_or_encoder.named_parameters():
            if tower_set is None or _lora_tower(name) in tower_set:
                p.requires_grad_(is_lora_parameter(name))
    return names


# ----------------------------------------------------------------------------- inspecting
def lora_sites(module: nn.Module) -> list[LoraSite]:
    """Every LoRA'd weight of ``module``, in module order."""
    out = []
    for name, m in module.named_modules():
        if not parametrize.is_parametrized(m):
            continue
        for tensor_name, plist in m.parametrizations.items():
            loras = [p for p in plist if isinstance(p, LoraDelta)]
            if loras:
                if len(plist) != 1:
                    raise ValueError(f"{name}.{tensor_name}: LoRA must be the only parametrization of a weight")
                out.append(LoraSite(f"{name}.{tensor_name}" if name else tensor_name, m, tensor_name, loras[0]))
    return out


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoraDelta) for m in module.modules())


def is_lora_parameter(name: str) -> bool:
    """Whether a ``named_parameters`` name is a LoRA adapter (``...parametrizations.W.0.lora_A``)."""
    return ".parametrizations." in f".{name}" and name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def lora_named_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if is_lora_parameter(n)]


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (what an optimiser should train)."""
    return [p for _, p in lora_named_parameters(module)]


def _activation_space(site: LoraSite) -> bool:
    return getattr(site.module.forward, "__func__", None) is _lora_linear_forward


def lora_base_keys(module: nn.Module) -> list[str]:
    return [s.key for s in lora_sites(module)]


@contextlib.contextmanager
def lora_cached(module: nn.Module) -> Iterator[None]:
    """Inside, each weight-space LoRA'd weight (attention) of ``module`` is computed once
    (``parametrize.cached``), on entry: outside any gradient-checkpointed region, whose recomputation
    would otherwise find it cached and save fewer tensors than the first pass. Activation-space
    Linears never form W'. Does nothing without LoRA."""
    sites = lora_sites(module)
    if not sites:
        yield
        return
    with parametrize.cached():
        for site in sites:
            if not _activation_space(site):
                getattr(site.module, site.tensor_name)
        yield


def _parametrized_prefix(key: str) -> tuple[str, str]:
    owner, _, tensor = key.rpartition(".")
    return (f"{owner}." if owner else ""), tensor


def _merged_weight(site: LoraSite) -> torch.Tensor:
    original = site.module.parametrizations[site.tensor_name].original
    return (original + site.lora.delta(train=False).to(original.dtype)).detach()


# ----------------------------------------------------------------------------- merging
def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a merged copy would have (original keys, deltas folded in); ``module`` is
    not changed."""
    state = module.state_dict()
    with torch.no_grad():
        for site in lora_sites(module):
            prefix, tensor = _parametrized_prefix(site.key)
            inner = f"{prefix}parametrizations.{tensor}."
            for k in [k for k in state if k.startswith(inner)]:
                del state[k]
            state[site.key] = _merged_weight(site)
    return state


def merge_lora(module: nn.Module) -> list[str]:
    """Fold every LoRA delta into its base weight and remove the parametrizations, in place; the
    module is then a plain module with its original state-dict keys. Returns the merged names.
    The merged weights keep the base weights' ``requires_grad`` (frozen when trained with LoRA)."""
    names = []
    with torch.no_grad():
        for site in lora_sites(module):
            merged = _merged_weight(site)
            parametrize.remove_parametrizations(site.module, site.tensor_name, leave_parametrized=False)
            if _activation_space(site):
                del site.module.forward  # back to the class's forward
            getattr(site.module, site.tensor_name).copy_(merged)
            names.append(site.key)
    return names


# ----------------------------------------------------------------------------- checkpoints
def _sha256(t: torch.Tensor) -> str:
    raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw.tobytes()).hexdigest()


def lora_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(adapter tensors under their state-dict names, metadata) for a checkpoint. The metadata
    records each adapted weight's blocks, rank, alpha and the SHA-256 of its frozen base, so a
    resume can check it rebuilt the very same base weights."""
    state = module.state_dict()
    tensors = {k: v for k, v in state.items() if is_lora_parameter(k)}
    sites = {}
    for site in lora_sites(module):
        base = site.module.parametrizations[site.tensor_name].original
        sites[site.key] = {**site.lora.describe(), "base_sha256": _sha256(base)}
    return tensors, {"format": _FORMAT, "sites": json.dumps(sites, sort_keys=True)}


def load_lora_state(module: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, str],
                    where: str = "<lora state>") -> None:
    """Restore adapters written by :func:`lora_state` into a module with the same LoRA layout,
    after checking that the frozen base weights are the same (SHA-256)."""
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{where}: not an mmretrieve LoRA state (format {meta.get('format')!r})")
    saved = json.loads(meta["sites"])
    live = {s.key: s for s in lora_sites(module)}
    if set(saved) != set(live):
        only_file, only_live = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
        raise ValueError(f"{where}: LoRA layout differs from this model's (adapted only in the file: "
                         f"{only_file[:3]}, only here: {only_live[:3]}); use the run's lora settings")
    for key, site in live.items():
        want, have = saved[key], site.lora.describe()
        for field in ("blocks", "rank", "alpha"):
            if want[field] != have[field]:
                raise ValueError(f"{where}: {key}: {field} {want[field]} in the file, {have[field]} here")
        base = site.module.parametrizations[site.tensor_name].original
        if _sha256(base) != want["base_sha256"]:
            raise ValueError(f"{where}: {key}: the frozen base weight differs from the one the adapters were "
                             f"trained on (different preset, pretrained or model.weights?)")
    own = {k: v for k, v in module.state_dict().items() if is_lora_parameter(k)}
    if set(own) != set(tensors):
        raise ValueError(f"{where}: adapter tensors do not match this model's "
                         f"({sorted(set(own) ^ set(tensors))[:3]})")
    with torch.no_grad():
        named = dict(lora_named_parameters(module))
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(named[k].shape):
                raise ValueError(f"{where}: {k}: shape {tuple(v.shape)} vs {tuple(named[k].shape)}")
            named[k].copy_(v)
