"""Token summaries: each layer's token states condensed into K vectors before the heads.

The paper's heads read every token of the layers they use (``tokens x hidden``
per layer and row): a cache of frozen states then grows with rows x tokens
(about 2.2 GiB per 10,000 MovieLens rows with all-MiniLM-L6-v2), and every head
step attends over every token. With ``ModelConfig.token_summary = K`` the heads
read, per layer, K vectors instead:

* slot 0: the mean of the row's tokens (the sentence embedding all-MiniLM-L6-v2 was trained for);
* slots 1 .. K-1: the means of K-1 consecutive, equally long parts of the row's tokens
  (the first part of a prompt describes the user, the last the item: the parts keep that apart).

The ladders, the gate and the towers are unchanged: they see a "sequence" of K
vectors, none of them padding. A row's summary depends only on its own tokens
(padding has weight zero), so it does not depend on the other rows of its batch.
K = 0 keeps every token (the paper).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def summary_weights(mask: torch.Tensor, slots: int) -> torch.Tensor:
    """[B, K, T] weights: row b's slot k averages the row's real tokens that slot k covers."""
    real = mask.to(torch.float32)
    count = real.sum(dim=1, keepdim=True).clamp(min=1.0)  # [B, 1]
    mean = (real / count).unsqueeze(1)  # [B, 1, T]
    if slots == 1:
        return mean
    parts = slots - 1
    position = (torch.cumsum(real, dim=1) - 1.0).clamp(min=0.0)  # index of each token among the row's tokens
    part = torch.div(position * parts, count, rounding_mode="floor").long().clamp(max=parts - 1)
    member = torch.nn.functional.one_hot(part, parts).to(torch.float32) * real.unsqueeze(-1)  # [B, T, parts]
    member = member / member.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.cat([mean, member.transpose(1, 2)], dim=1)


def summarize(states: Sequence[Optional[torch.Tensor]], mask: torch.Tensor, slots: int
              ) -> tuple[list[Optional[torch.Tensor]], torch.Tensor]:
    """Every kept layer of ``states`` ([B, T, H]) as [B, K, H] summaries, and their mask (all True);
    ``slots`` = 0 returns the states and the mask unchanged."""
    if slots == 0:
        return list(states), mask.bool()
    weights = summary_weights(mask, slots)
    summarized: list[Optional[torch.Tensor]] = []
    for h in states:
        summarized.append(None if h is None else torch.bmm(weights.to(device=h.device, dtype=h.dtype), h))
    return summarized, torch.ones(mask.shape[0], slots, dtype=torch.bool, device=mask.device)


__all__ = ["summarize", "summary_weights"]
