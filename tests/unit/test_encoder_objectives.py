"""The visitor-contrastive objective: partner sampling and the negatives it leaves out, on hand-built cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.encoder.objectives import ObjectiveConfig, nt_xent
from training.encoder.train import group_codes, partner_index


def test_partner_is_another_session_of_the_same_visitor_or_itself_when_alone():
    groups = group_codes(["b", "a", "b", "c", "a", "b"])
    rng = np.random.default_rng(0)
    seen: dict[int, set[int]] = {i: set() for i in range(6)}
    for _ in range(200):
        p = partner_index(groups, rng)
        assert (groups[p] == groups).all()
        for i, j in enumerate(p):
            seen[i].add(int(j))
    assert seen[3] == {3}  # "c" has one session: its own (augmented) view is the positive
    assert seen[0] == {2, 5} and seen[2] == {0, 5} and seen[5] == {0, 2}  # every other member, never itself
    assert seen[1] == {4} and seen[4] == {1}


def test_nt_xent_leaves_same_visitor_rows_out_of_the_negatives():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    groups = torch.tensor([0, 0, 1, 2])
    masked = nt_xent(a, b, 0.5, groups)
    # by hand: rows 0 and 1 do not see each other as negatives, in either direction
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.5
    logits[0, 1] = logits[1, 0] = float("-inf")
    target = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.isclose(masked, expected)
    assert not torch.isclose(masked, nt_xent(a, b, 0.5))
    assert torch.isclose(nt_xent(a, b, 0.5, torch.arange(4)), nt_xent(a, b, 0.5))  # all distinct: unchanged


def test_unknown_positives_is_refused():
    with pytest.raises(ValueError, match="positives"):
        ObjectiveConfig(positives="session")
