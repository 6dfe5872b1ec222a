"""ROLE's label-estimate matrix without training: sample indices from the data modules, a wrong-sized checkpoint."""

import pytest
import torch

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.losses import RegularisedOnlineLabelEstimationLoss


def test_training_batches_end_with_sample_indices_when_asked():
    data = SyntheticAmbiguityDataModule(train_size=50, val_size=10, test_size=10, batch_size=16)
    data.setup("fit")
    data.sample_indices = True
    seen = torch.cat([batch[-1] for batch in data.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(50))
    batch = next(iter(data.train_dataloader()))
    assert len(batch) == 4
    dataset = data.train_dataset
    for image, index in zip(batch[0], batch[3]):
        assert torch.equal(image, dataset[int(index)][0])  # the index is that image's
    assert len(next(iter(data.val_dataloader()))) == 3  # evaluation batches are unchanged


def test_role_refuses_a_checkpoint_of_another_training_split():
    loss = RegularisedOnlineLabelEstimationLoss(k=2)
    loss.setup_samples(10)
    with pytest.raises(ValueError, match="estimates have 12 rows .* but the training split has 10 samples"):
        loss.load_extra_state({"estimate_logits": torch.zeros(12, 4), "seen": torch.zeros(12, dtype=torch.bool)})
