"""checkpoint.upgrade: checkpoints of earlier releases are brought to the current format, key by key; and a resumed
training keeps the loss options of its checkpoint."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning.checkpoint import check_resumed_loss, upgrade
from avgk_lightning.errors import InvalidInputError

STOCK = ModelCheckpoint(monitor="val/avgk_acc@2", mode="max").state_key  # where a stock callback finds its state


def test_an_earlier_release_s_checkpoint_gets_the_current_keys():
    weight, estimates = torch.ones(3), {"estimate_logits": torch.zeros(2, 3), "seen": torch.ones(2, dtype=torch.bool)}
    old = {
        "state_dict": {"backbone.conv.weight": weight, "softmax_head.bias": weight, "multilabel_head.bias": weight},
        "callbacks": {"BestAndLastCheckpoint" + STOCK.removeprefix("ModelCheckpoint"): {"best_model_score": 0.5}},
        "average_k": {"loss_state": estimates},
    }
    upgrade(old)
    assert sorted(old["state_dict"]) == [
        "network.backbone.conv.weight",
        "network.multilabel_head.bias",
        "network.softmax_head.bias",
    ]
    assert old["callbacks"] == {STOCK: {"best_model_score": 0.5}}  # a resumed run keeps its best score
    assert old["average_k"]["loss_state"] == {"label_estimates": estimates}


def test_a_current_checkpoint_is_left_as_it_is():
    weight, estimates = torch.ones(3), {"seen": torch.ones(2)}
    current = {
        "state_dict": {"network.backbone.conv.weight": weight},
        "callbacks": {STOCK: {"best_model_score": 0.5}},
        "average_k": {"loss_state": {"label_estimates": estimates}},
    }
    upgrade(current)
    assert current["state_dict"] == {"network.backbone.conv.weight": weight}
    assert current["callbacks"] == {STOCK: {"best_model_score": 0.5}}
    assert current["average_k"]["loss_state"]["label_estimates"] is estimates


def test_a_resumed_training_must_share_the_loss_options_of_its_checkpoint():
    saved = {"average_k": {"loss_options": {"mu": 1.0, "bce_reduction": "sum", "warmup_epochs": 0}}}
    assert check_resumed_loss(saved, {"mu": 1.0, "bce_reduction": "sum", "warmup_epochs": 0}) is None
    with pytest.raises(InvalidInputError) as error:
        check_resumed_loss(saved, {"mu": 0.5, "bce_reduction": "mean", "warmup_epochs": 0})
    assert str(error.value) == (
        "The checkpoint's training ran with mu=1.0, bce_reduction='sum', but this run's loss has mu=0.5, "
        "bce_reduction='mean': to resume it as it began, pass --model.init_args.mu 1.0 --model.init_args.loss_options "
        "'{bce_reduction: sum}' (or start a new run, without --ckpt_path)."
    )


def test_a_two_head_checkpoint_of_an_earlier_release_resumes_with_a_warning_naming_the_old_default():
    earlier = {"average_k": {"num_classes": 10}}
    warning = check_resumed_loss(earlier, {"mu": 1.0, "bce_reduction": "mean", "warmup_epochs": 0})
    assert "0.2.0 summed the two-head BCE" in warning and "'{bce_reduction: sum}'" in warning
    assert check_resumed_loss(earlier, {"label_smoothing": 0.1}) is None  # no default of that loss changed
