"""ROLE's label-estimate matrix without training: sample indices from the data modules, a wrong-sized checkpoint."""

import pytest
import torch

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.losses import RegularisedOnlineLabelEstimationLoss


def test_training_batches_carry_the_sample_indices():
    data = SyntheticAmbiguityDataModule(train_size=50, val_size=10, test_size=10, batch_size=16)
    data.setup("fit")
    seen = torch.cat([batch.index for batch in data.train_dataloader()])
    assert sorted(seen.tolist()) == list(range(50))
    batch = next(iter(data.train_dataloader()))
    dataset = data.train_dataset
    for image, target, index in zip(batch.images, batch.target, batch.index):
        assert torch.equal(image, dataset[int(index)][0]) and target == dataset[int(index)][1]  # that sample's
    val = next(iter(data.val_dataloader()))
    assert val.posteriors is not None and val.index.tolist() == list(range(val.images.shape[0]))


def test_role_refuses_a_checkpoint_of_another_training_split():
    loss = RegularisedOnlineLabelEstimationLoss(k=2)
    loss.setup_samples(10)
    with pytest.raises(ValueError, match="estimates have 12 rows .* but the training split has 10 samples"):
        loss.estimates.load_state_dict(
            {"estimate_logits": torch.zeros(12, 4), "seen": torch.zeros(12, dtype=torch.bool)}
        )
