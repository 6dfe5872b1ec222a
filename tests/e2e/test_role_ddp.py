"""ROLE's label estimates merged across 2 processes against a single-process replay of the recorded batches."""

from __future__ import annotations

import json

import pytest
import torch

from avgk_lightning.losses import RegularisedOnlineLabelEstimationLoss
from tests.helpers import run_script
from tests.scripts import role_ddp


def _replay(batches_per_rank: list[list[list[list[int]]]]) -> RegularisedOnlineLabelEstimationLoss:
    """One process applies every rank's recorded batches, epoch by epoch (ranks hold disjoint rows)."""
    model, data = role_ddp.build()
    data.setup("fit")
    dataset = data.train_dataset
    loss = RegularisedOnlineLabelEstimationLoss(k=2)
    loss.setup_samples(len(dataset))
    with torch.no_grad():
        for epoch in range(len(batches_per_rank[0])):
            for rank_batches in batches_per_rank:
                for indices in rank_batches[epoch]:
                    images, targets, _ = dataset[torch.tensor(indices)]
                    loss(None, model(images)[1], targets, sample_indices=torch.tensor(indices))
    return loss


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2])
def test_role_estimates_merged_across_processes_equal_a_single_process_replay(tmp_path, devices):
    code, output = run_script("role_ddp", tmp_path, devices)
    assert code == 0, output[-4000:]
    batches = [json.loads((tmp_path / f"batches_rank{rank}.json").read_text()) for rank in range(devices)]
    seen = sorted(index for rank in batches for batch in rank[0] for index in batch)
    assert seen == list(range(192))  # each sample on exactly one process per epoch: nothing lost or repeated
    saved = torch.load(tmp_path / "estimates.pt")
    replayed = _replay(batches)
    assert bool(saved["seen"].all())
    torch.testing.assert_close(saved["estimate_logits"], replayed.estimates.logits, rtol=1e-5, atol=1e-6)
