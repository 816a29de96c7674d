"""Textual-inversion training (Pic2Word): learn the mapping network from images alone.

The encoder stays frozen. For each batch the reference vectors go through the mapping network; the
text tower encodes the training prompt ("a photo of *") with the pseudo tokens in place of ``*``;
a symmetric contrastive loss pulls that text vector towards its own reference vector and away from
the others in the (globally gathered) batch. Captions are not used, so a folder of images is enough.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mmretrieve.modality import Modality
from mmretrieve.models.inversion import TextualInversion, config_for

from .data import Batch, collate
from .index_data import VectorSet
from .distributed import gather_objects, gather_with_grad
from .loss import contrastive_loss, positives_matrix

__all__ = ["build_inversion", "freeze_encoder", "reference_batch", "inversion_loss", "validate_inversion"]


def build_inversion(config, encoder) -> TextualInversion:
    """The network a run's ``inversion`` section describes, sized for ``encoder``, seeded by ``run.seed``."""
    inv = config.inversion
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        net = TextualInversion(config_for(encoder, hidden_dim=inv.hidden_dim, layers=inv.layers, tokens=inv.tokens,
                                          dropout=inv.dropout, input=inv.input, template=inv.template,
                                          train_prompt=inv.prompt, compose=inv.compose))
    net.source = f"run {config.run.out or config.name}"
    return net.to(encoder.device)


def freeze_encoder(encoder) -> None:
    """No encoder parameter trains in an inversion run (Pic2Word keeps CLIP frozen)."""
    for p in encoder.parameters():
        p.requires_grad_(False)


def reference_batch(encoder, net: TextualInversion, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(network input, L2-normalised target) for a batch of images or clips, without gradient."""
    with torch.no_grad():
        if batch.precomputed:  # stored vectors (data.kind=index): already what a normalized network takes
            if net.config.input != "normalized":
                raise ValueError("stored index vectors are L2-normalised: they train input=normalized networks only")
            x = F.normalize(batch.media.to(device).float(), dim=-1)
            return x, x
        if batch.modality is Modality.IMAGE:
            pixels = batch.media.to(device)
            if net.config.input == "raw":
                x = encoder.clip.encode_image(pixels.to(dtype=next(encoder.clip.parameters()).dtype)).float()
                return x, F.normalize(x, dim=-1)
            x = encoder.encode_image(pixels)
            return x, x
        if batch.modality is Modality.VIDEO:
            frames, mask = batch.media
            x = encoder.encode_video(frames.to(device), mask.to(device))
            return x, x
    raise ValueError(f"inversion training takes image or video batches, not {batch.modality.value}")


def inversion_loss(encoder, net: TextualInversion, batch, scale: torch.Tensor, dist, device: torch.device,
                   ) -> torch.Tensor:
    """Contrastive loss between the prompt-with-pseudo-tokens vectors and their reference vectors."""
    x, target = reference_batch(encoder, net, batch, device)
    text = net.train_features(encoder, x)
    text = gather_with_grad(text.float(), dist)
    target = gather_with_grad(target.float(), dist)
    keys = [k for part in gather_objects(list(batch.item_keys), dist) for k in part]
    return contrastive_loss(text, target, scale, positives_matrix(keys, device=text.device))


def validate_inversion(encoder, net: TextualInversion, pairs, decoder, *, batch_size: int = 64) -> dict:
    """Held-out recall: each item's "a photo of *" vector retrieves the items (its own is the answer).

    ``pairs``: a PairSet (media decoded with ``decoder``) or a VectorSet (stored vectors)."""
    device = encoder.device
    was_training = net.training
    net.eval()
    text_parts, target_parts = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                idx = tuple(range(start, min(start + batch_size, len(pairs))))
                if isinstance(pairs, VectorSet):
                    batch = Batch(pairs.modality, torch.from_numpy(pairs.vectors[list(idx)]), (), idx, idx,
                                  precomputed=True)
                else:
                    chunk = pairs.samples[idx[0]:idx[-1] + 1]
                    batch = Batch(pairs.modality, collate(pairs.modality, [decoder(s) for s in chunk]), (), idx, idx)
                x, target = reference_batch(encoder, net, batch, device)
                text_parts.append(net.train_features(encoder, x).cpu())
                target_parts.append(target.cpu())
    finally:
        net.train(was_training)
    sims = torch.cat(text_parts) @ torch.cat(target_parts).t()
    own = sims.diagonal().unsqueeze(1)
    ranks = (sims > own).sum(dim=1).numpy()
    n = len(ranks)
    return {"t2x": {"R@1": float(np.mean(ranks < 1) * 100), "R@5": float(np.mean(ranks < 5) * 100),
                    "R@10": float(np.mean(ranks < 10) * 100),
                    "mAP@10": float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0)) * 100),  # one relevant item
                    "MdR": float(np.median(ranks) + 1),
                    "chance_R@1": 100.0 / max(1, n)}}
