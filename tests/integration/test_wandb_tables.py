"""The W&B tables of `test`, read back from the offline run with wandb's own reader (`wandb leet inspect`)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
from lightning.pytorch.loggers import WandbLogger

from avgk_lightning.data import SyntheticAmbiguityDataModule
from avgk_lightning.wandb_tables import RESULT_COLUMNS, TestTables
from tests.helpers import TinyCNNModule, cpu_trainer


def _read_back(run_dir: Path) -> dict:
    """The summary of an offline run as `wandb leet inspect --summary --json` prints it."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    (log,) = run_dir.glob("*.wandb")
    output = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(log)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(output)["summary"]


def _table(run_dir: Path, entry: dict) -> wandb.Table:
    assert entry["_type"] == "table-file"
    return wandb.Table.from_json(json.loads((run_dir / "files" / entry["path"]).read_text()), None)


def _same(logged, expected):
    return logged is None and expected is None or logged == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        wandb.finish()  # a run an earlier test left open would be reused by the logger
        logger = WandbLogger(save_dir=str(root), offline=True, mode="offline")  # whatever an earlier test set up
        data = SyntheticAmbiguityDataModule(train_size=256, val_size=128, test_size=129, batch_size=64)
        counts = data.class_counts.tolist()
        model = TinyCNNModule(num_classes=40, k=2, eval_ks=[1, 2, 3], class_counts=counts, class_names=data.class_names)
        trainer = cpu_trainer(default_root_dir=root, max_epochs=1, callbacks=[TestTables()], logger=logger)
        trainer.fit(model, data)
        trainer.test(model, data, verbose=False)
        wandb.finish()
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    return model, run_dir, _read_back(run_dir)


def test_the_results_table_holds_each_head_and_k_of_the_test_results(tested):
    model, run_dir, summary = tested
    table = _table(run_dir, summary["test/results"])
    assert table.columns == RESULT_COLUMNS
    rows = {(row[0], row[1]): row[2:] for row in table.data}
    assert set(rows) == {(head, k) for head in ("multilabel", "softmax", "oracle") for k in (1.0, 2.0, 3.0)}
    for (head, k), (accuracy, size, top_k) in rows.items():
        result = model.test_results[head].values
        assert accuracy == pytest.approx(float(result[f"avgk_acc@{k:g}"]), abs=1e-6)
        assert size == pytest.approx(float(result[f"set_size@{k:g}"]), abs=1e-6)
        expected_top_k = result.get(f"topk_acc@{k:g}")
        assert _same(top_k, None if expected_top_k is None else float(expected_top_k))


def test_the_per_class_table_holds_each_class_s_accuracy_per_head(tested):
    model, run_dir, summary = tested
    table = _table(run_dir, summary["test/per_class"])
    heads = [head for head in model.test_results if 2.0 in model.test_results[head].per_class_accuracy]
    assert table.columns[:3] == ["class", "name", "training images"] and len(table.columns) == 3 + len(heads)
    assert [row[:3] for row in table.data] == [
        [index, name, count] for index, (name, count) in enumerate(zip(model.class_names, model.class_counts))
    ]
    for column, head in enumerate(heads, start=3):
        expected = model.test_results[head].per_class_accuracy[2.0].tolist()
        assert all(_same(row[column], None if math.isnan(value) else value) for row, value in zip(table.data, expected))
    assert any(row[3] is None for row in table.data)  # classes absent from the 129 test samples stay empty


def test_the_set_size_histogram_counts_every_test_sample(tested):
    model, _, summary = tested
    histogram = summary["test/set_size_histogram"]
    counts = model.test_results["multilabel"].set_size_histograms[2.0]
    assert histogram["_type"] == "histogram" and sum(histogram["values"]) == 129
    assert histogram["values"] == counts[: len(histogram["values"])].tolist()
    assert histogram["bins"] == list(range(len(histogram["values"]) + 1))
