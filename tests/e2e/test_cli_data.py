"""Each data module trained for one epoch and tested through the CLI, on fixtures in the real formats."""

import json

import pytest
import timm
import torch

from tests.fixtures import (
    write_fake_cifar100,
    write_fake_fashion_mnist,
    write_fake_plantnet,
    write_fake_plantnet_v2,
    write_image_folder,
)
from tests.helpers import (
    checkpoint_of,
    cli_args,
    cli_in_process,
    reference_set_metrics,
    set_head_scores,
    train_py,
)


def _fit_then_test(config, run_root, overrides):
    """`fit` for one epoch, then `test` from its best checkpoint, with the same arguments.

    The logged test accuracies and set sizes must be numpy's count over the set head's scores on the test split
    at the checkpoint's λ_K: the data as the loader gives it, the weights and the thresholds the checkpoint holds.
    """
    common = [*cli_args(config, num_workers=0), *overrides, f"--trainer.default_root_dir={run_root}"]
    fit = cli_in_process(["fit", *common])
    checkpoint = checkpoint_of(run_root)
    test = cli_in_process(["test", *common, f"--ckpt_path={checkpoint}"])
    thresholds = torch.load(checkpoint, weights_only=True)["average_k"]["thresholds"][test.model.loss.set_head]
    scores, target = set_head_scores(test.model, test.datamodule, "test")
    assert len(target) == len(test.datamodule.test_dataset) and sorted(thresholds) == test.model.eval_ks
    for k, threshold in thresholds.items():
        expected = reference_set_metrics(scores, target, threshold)
        for metric in ("avgk_acc", "set_size"):
            logged = test.trainer.callback_metrics[f"test/{metric}@{k:g}"].item()
            assert logged == pytest.approx(expected[metric], abs=1e-6), (metric, k)
    return fit, test


@pytest.mark.slow
def test_cifar100_fit_and_test_with_label_noise(tmp_path, run_root):
    write_fake_cifar100(tmp_path / "data")
    overrides = [
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.verify_checksums=false",
        "--data.init_args.val_size=100",
        "--data.init_args.noise=0.3",
    ]
    fit, test = _fit_then_test("cifar100_resnet18_two_head.yaml", run_root, overrides)
    record = json.loads((run_root / "version_0" / "label_noise.json").read_text())
    assert record["realised_noise_rate"] == pytest.approx(len(record["train_index_of_changed_labels"]) / 300)
    assert 0.15 < record["realised_noise_rate"] < 0.45
    assert fit.model.num_classes == 100 and isinstance(fit.model.network.backbone.maxpool, torch.nn.Identity)
    for name in ("test/avgk_acc@3", "test/softmax/avgk_acc@3", "test/topk_acc@5", "test/set_size@10"):
        assert name in test.trainer.callback_metrics


@pytest.mark.slow
def test_cifar100_densenet_recipe_fits_a_limited_epoch_and_tests(tmp_path, run_root):
    write_fake_cifar100(tmp_path / "data", train_per_class=1)  # DenseNet-BC-40-40: ~50 ms per image on 2 cores
    overrides = [
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.verify_checksums=false",
        "--data.init_args.val_size=20",
        "--data.init_args.noise=0.3",
        "--data.init_args.batch_size=16",
        "--trainer.limit_train_batches=0.2",  # 1 of the 5 batches ("1" would parse as the float 1.0: all)
        "--trainer.num_sanity_val_steps=0",
    ]
    fit, test = _fit_then_test("cifar100_densenet40_two_head.yaml", run_root, overrides)
    record = json.loads((run_root / "version_0" / "label_noise.json").read_text())
    assert record["realised_noise_rate"] == pytest.approx(len(record["train_index_of_changed_labels"]) / 80)
    assert 0.15 < record["realised_noise_rate"] < 0.45
    assert fit.trainer.global_step == 1 and fit.model.num_classes == 100
    assert fit.model.hparams.backbone == "densenet_bc_40_40" and fit.model.network.softmax_head.in_features == 440
    for name in ("test/avgk_acc@3", "test/softmax/avgk_acc@3", "test/topk_acc@5", "test/set_size@10"):
        assert name in test.trainer.callback_metrics


@pytest.mark.slow
@pytest.mark.parametrize("method", ["two_head", "softmax"])
def test_fashion_mnist_fit_and_test_with_noise_and_a_long_tail(tmp_path, run_root, method):
    write_fake_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", train_per_class=40, test_per_class=4)
    overrides = [
        f"--data.init_args.data_dir={tmp_path / 'data'}",
        "--data.init_args.val_size=80",
        "--data.init_args.train_size=null",
        "--data.init_args.noise=0.4",
        "--data.init_args.imbalance=4",
        "--model.init_args.frequency_boundaries=[10,20]",
    ]
    fit, test = _fit_then_test(f"fashion_mnist_{method}.yaml", run_root, overrides)
    record = json.loads((run_root / "version_0" / "label_noise.json").read_text())
    counts = fit.datamodule.class_counts.tolist()
    assert record["train_class_counts"] == counts == fit.model.class_counts
    assert max(counts) / min(counts) == pytest.approx(4, abs=0.5)  # the imbalance ratio, up to rounding
    assert record["realised_noise_rate"] == pytest.approx(len(record["train_index_of_changed_labels"]) / sum(counts))
    assert fit.model.hparams.backbone == "small_vgg" and fit.model.class_names[0] == "T-shirt/top"
    assert 0 <= float(fit.trainer.callback_metrics["train/top1_acc"]) <= 1
    head = "test/softmax/" if method == "two_head" else "test/"
    for name in ("test/avgk_acc@2", "test/avgk_acc_few@2", f"{head}avgk_acc@1.5", "test/set_size@3"):
        assert name in test.trainer.callback_metrics, name


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_plantnet300k_fit_and_test_from_local_weights(tmp_path, run_root, version):
    write = write_fake_plantnet if version == "v1" else write_fake_plantnet_v2
    data_dir = write(tmp_path / "plantnet300K")
    weights = tmp_path / "resnet18.tv_in1k.pth"
    torch.save(
        timm.create_model("resnet18.tv_in1k").state_dict(), weights
    )  # with its 1000-class fc, like the real file
    overrides = [
        f"--data.init_args.data_dir={data_dir}",
        f"--model.init_args.weights_path={weights}",
        "--model.init_args.k=2",
        "--data.init_args.image_size=64",
        "--data.init_args.resize_size=72",
    ]
    fit, test = _fit_then_test("plantnet300k_resnet18_two_head.yaml", run_root, overrides)
    assert fit.datamodule.class_names[0] == "Daucus carota L."
    assert fit.model.class_names == fit.datamodule.class_names and fit.model.class_counts == [1, 6, 3]
    saved = torch.load(checkpoint_of(run_root), weights_only=True)
    assert saved["hyper_parameters"]["class_names"][0] == "Daucus carota L."
    assert saved["PlantNet300KDataModule"]["plantnet_version"] == fit.datamodule.version == version
    assert {"test/avgk_acc@1", "test/avgk_acc@2", "test/softmax/avgk_acc_macro@2"} <= set(test.trainer.callback_metrics)


def test_plantnet_config_without_the_weights_file_says_how_to_get_it(tmp_path, run_root, capsys):
    data_dir = write_fake_plantnet(tmp_path / "plantnet300K")
    with pytest.raises(SystemExit) as exit_info:
        cli_in_process(
            [
                "fit",
                *cli_args("plantnet300k_resnet18_two_head.yaml", data_dir=data_dir),
                "--model.init_args.k=2",
                f"--trainer.default_root_dir={run_root}",
            ]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Backbone weights file not found: weights/resnet18.tv_in1k.pth")
    assert "torch.save(timm.create_model('resnet18.tv_in1k', pretrained=True)" in error
    assert "Traceback" not in error


@pytest.mark.slow
def test_image_folder_fit_and_test_by_class_path(tmp_path, run_root):
    counts = {split: {"rose": 4, "daisy": 3, "tulip": 3} for split in ("train", "val", "test")}
    write_image_folder(tmp_path / "flowers", counts)
    overrides = [
        "--data=avgk_lightning.data.ImageFolderDataModule",
        f"--data.init_args.data_dir={tmp_path / 'flowers'}",
        "--data.init_args.image_size=32",
        "--data.init_args.resize_size=36",
        "--data.init_args.batch_size=4",
    ]
    fit, test = _fit_then_test("synthetic_two_head.yaml", run_root, overrides)
    assert fit.model.num_classes == 3 and fit.datamodule.class_names == ["daisy", "rose", "tulip"]
    assert "test/avgk_acc@2" in test.trainer.callback_metrics


def test_a_data_mistake_ends_with_one_line_and_status_2_from_train_py(tmp_path, run_root):
    write_image_folder(
        tmp_path / "flowers", {"train": {"rose": 2, "daisy": 2, "tulip": 2}, "val": {"lily": 1}, "test": {"rose": 1}}
    )
    code, output = train_py(
        "fit",
        *cli_args(),
        "--data=avgk_lightning.data.ImageFolderDataModule",
        f"--data.init_args.data_dir={tmp_path / 'flowers'}",
        f"--trainer.default_root_dir={run_root}",
    )
    assert code == 2
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1] == (
        f"error: Unknown class folder {tmp_path / 'flowers' / 'val' / 'lily'}: class 'lily' has no folder in "
        f"{tmp_path / 'flowers' / 'train'}. Class indices come from the training split: add training images for it "
        "or remove the folder."
    )


@pytest.mark.slow
def test_a_truncated_download_with_skip_corrupt_trains_and_tests_from_train_py(tmp_path, run_root):
    classes = {"rose": 3, "daisy": 3, "tulip": 2}
    flowers = write_image_folder(tmp_path / "flowers", {split: classes for split in ("train", "val", "test")})
    truncated = flowers / "train" / "rose" / "rose_1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-200])  # an interrupted download: the headers are whole
    common = [
        *cli_args(num_workers=2),
        "--data=avgk_lightning.data.ImageFolderDataModule",
        f"--data.init_args.data_dir={flowers}",
        "--data.init_args.image_size=32",
        "--data.init_args.resize_size=36",
        "--data.init_args.batch_size=2",
        "--data.init_args.skip_corrupt=true",
        f"--trainer.default_root_dir={run_root}",
    ]
    code, output = train_py("fit", *common)
    assert code == 0, output[-3000:]
    assert f"skipping unreadable image {truncated} (image file is truncated" in output
    assert "skip_corrupt: the train split: decoded 8 image(s)" in output
    code, output = train_py("test", *common, f"--ckpt_path={checkpoint_of(run_root)}")  # the scan is remembered
    assert code == 0, output[-3000:]
    assert "skip_corrupt: the test split: decoded 0 image(s)" in output and "8 unchanged since the last scan" in output
