"""ROLE's label-estimate matrix: sample indices from the data modules, checkpoints, and 1 vs 2 processes."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.losses import RegularisedOnlineLabelEstimationLoss
from tests.helpers import TinyCNNModule, cpu_trainer, run_script
from tests.scripts import role_ddp


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


def _fit(tmp_path, max_epochs: int, ckpt_path: str | None = None, model=None):
    model = model or TinyCNNModule(num_classes=40, k=2, method="role", eval_ks=[2])
    data = SyntheticAmbiguityDataModule(train_size=96, val_size=40, test_size=40, batch_size=32)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = cpu_trainer(max_epochs=max_epochs, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def test_role_trains_every_row_and_its_estimates_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, _ = _fit(tmp_path, max_epochs=1)
    estimates = model.loss.estimate_logits.clone()
    assert estimates.shape == (96, 40) and bool(model.loss.seen.all())
    loaded = TinyCNNModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=False)
    assert torch.equal(loaded.loss.estimate_logits, estimates)
    assert torch.equal(loaded.loss.seen, model.loss.seen)
    # Resuming continues from the saved estimates (the rows change again in the second epoch).
    resumed, _ = _fit(tmp_path / "resumed", max_epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.loss.estimate_logits.shape == (96, 40)
    assert not torch.equal(resumed.loss.estimate_logits, estimates)


def test_role_refuses_a_checkpoint_of_another_training_split():
    loss = RegularisedOnlineLabelEstimationLoss(k=2)
    loss.setup_samples(10)
    with pytest.raises(ValueError, match="estimates have 12 rows .* but the training split has 10 samples"):
        loss.load_extra_state({"estimate_logits": torch.zeros(12, 4), "seen": torch.zeros(12, dtype=torch.bool)})


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
    torch.testing.assert_close(saved["estimate_logits"], replayed.estimate_logits, rtol=1e-5, atol=1e-6)
