"""checkpoint.upgrade: checkpoints of earlier releases are brought to the current format, key by key."""

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from avgk_lightning.checkpoint import upgrade

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
