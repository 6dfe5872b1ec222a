import json
import shutil

import pytest
import torch

from avgk_lightning.data import ImageFolderDataModule, PlantNet300KDataModule
from tests.fixtures import (
    PLANTNET_SPECIES,
    V2_SPECIES,
    write_fake_plantnet,
    write_fake_plantnet_v2,
    write_image,
    write_image_folder,
)

COUNTS = {"train": {"rose": 3, "daisy": 2, "tulip": 1}, "val": {"rose": 1, "daisy": 1}, "test": {"tulip": 2}}


def _folder(tmp_path, **kwargs):
    return ImageFolderDataModule(tmp_path, image_size=32, resize_size=36, batch_size=4, num_workers=0, **kwargs)


def test_classes_come_from_the_training_split(tmp_path):
    write_image_folder(tmp_path, COUNTS)
    data = _folder(tmp_path)
    data.setup(None)
    assert data.class_names == ["daisy", "rose", "tulip"] and data.num_classes == 3
    assert data.class_counts.tolist() == [2, 3, 1]
    assert data.test_dataset.labels.tolist() == [2, 2]  # a class absent from val is fine
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (2, 3, 32, 32) and batch.target.tolist() == [0, 1]


def test_unknown_class_in_val_is_named(tmp_path):
    write_image_folder(tmp_path, {**COUNTS, "val": {"lily": 1}})
    data = _folder(tmp_path)
    with pytest.raises(ValueError, match="Unknown class folder .*val/lily: class 'lily' has no folder in .*train"):
        data.setup("fit")


def test_missing_data_dir_and_split_folder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Data directory not found: .*nowhere \\(argument `data_dir`\\)"):
        ImageFolderDataModule(tmp_path / "nowhere")
    write_image_folder(tmp_path, {"train": {"rose": 1}, "val": {"rose": 1}})
    with pytest.raises(FileNotFoundError, match="Split folder not found: .*test"):
        ImageFolderDataModule(tmp_path)


def test_empty_split_is_an_error(tmp_path):
    write_image_folder(tmp_path, {"train": {"rose": 1}, "val": {"rose": 1}})
    (tmp_path / "test" / "rose").mkdir(parents=True)
    with pytest.raises(ValueError, match="Empty split: no images in .*test"):
        _folder(tmp_path).setup("test")


def test_corrupt_image_names_the_file_or_is_skipped_on_request(tmp_path, caplog):
    write_image_folder(tmp_path, COUNTS)
    broken = tmp_path / "train" / "rose" / "rose_9.jpg"
    broken.write_bytes(b"not a jpeg")
    data = _folder(tmp_path)
    data.setup("fit")
    index = [str(p) for p in data.train_dataset.paths].index(str(broken))
    with pytest.raises(ValueError, match="Cannot read image .*rose_9.jpg.*skip_corrupt=True"):
        data.train_dataset[index]
    skipping = _folder(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipping unreadable image .*rose_9.jpg"):
        skipping.setup("fit")
    assert len(skipping.train_dataset) == 6 and str(broken) not in map(str, skipping.train_dataset.paths)
    assert "skipped 1 of 7 images in the train split" in caplog.text


def test_predict_dir_yields_every_image_with_its_index(tmp_path):
    write_image_folder(tmp_path / "data", COUNTS)
    write_image(tmp_path / "new" / "a.png", 1)
    write_image(tmp_path / "new" / "sub" / "b.jpg", 2)
    data = _folder(tmp_path / "data", predict_dir=tmp_path / "new")
    data.setup("predict")
    assert [p.name for p in data.predict_dataset.paths] == ["a.png", "b.jpg"]
    batch = next(iter(data.predict_dataloader()))
    assert batch.images.shape == (2, 3, 32, 32) and batch.target is None and batch.index.tolist() == [0, 1]


def test_timm_model_transforms_on_request(tmp_path):
    write_image_folder(tmp_path, COUNTS)
    data = ImageFolderDataModule(tmp_path, transforms_from_model="resnet50.tv_in1k", num_workers=0)
    data.setup("validate")
    assert data.val_dataset[0][0].shape == (3, 224, 224)


@pytest.fixture()
def plantnet_dir(tmp_path):
    return write_fake_plantnet(tmp_path / "plantnet300K")


def test_plantnet_classes_follow_the_official_mapping(plantnet_dir):
    data = PlantNet300KDataModule(plantnet_dir, image_size=64, resize_size=72, batch_size=4, num_workers=0)
    data.setup(None)
    assert data.version == "v1" and data.layout.species_folders == [
        PLANTNET_SPECIES[2],
        PLANTNET_SPECIES[0],
        PLANTNET_SPECIES[1],
    ]
    assert data.class_names == ["Daucus carota L.", "Lactuca virosa L.", "Cirsium arvense (L.) Scop."]
    assert data.class_counts.tolist() == [1, 6, 3]  # species 1356022, 1355868, 1355920
    image, label = data.train_dataset[0]
    assert image.shape == (3, 64, 64) and label.item() == 1  # images/train/1355868/... is class 1
    assert data.val_dataset[0][0].shape == (3, 64, 64)


def test_plantnet_reference_transforms_crop_224(plantnet_dir):
    data = PlantNet300KDataModule(plantnet_dir, num_workers=0)
    data.setup("test")
    assert data.test_dataset[0][0].shape == (3, 224, 224)


def test_plantnet_missing_metadata_file_is_named(plantnet_dir):
    (plantnet_dir / "plantnet300K_species_id_2_name.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata file not found: .*plantnet300K_species_id_2_name.json"):
        PlantNet300KDataModule(plantnet_dir)


def test_plantnet_metadata_inconsistent_with_folders_is_named(plantnet_dir):
    metadata = json.loads((plantnet_dir / "plantnet300K_metadata.json").read_text())
    image_id = next(key for key, value in metadata.items() if value["split"] == "val")
    metadata[image_id]["split"] = "test"
    (plantnet_dir / "plantnet300K_metadata.json").write_text(json.dumps(metadata))
    data = PlantNet300KDataModule(plantnet_dir, num_workers=0)
    with pytest.raises(ValueError, match=f"disagree with .*plantnet300K_metadata.json: .*{image_id}.jpg: .*split test"):
        data.setup("validate")


def test_plantnet_species_folder_unknown_to_the_mapping_is_named(plantnet_dir):
    shutil.copytree(plantnet_dir / "images" / "train" / PLANTNET_SPECIES[0], plantnet_dir / "images" / "train" / "999")
    with pytest.raises(ValueError, match="Class folder .*train/999 is not a species of .*class_idx_to_species_id"):
        PlantNet300KDataModule(plantnet_dir)


def test_plantnet_batches_are_long_labels(plantnet_dir):
    data = PlantNet300KDataModule(plantnet_dir, image_size=32, resize_size=36, batch_size=8, num_workers=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.images.dtype == torch.uint8 and batch.target.dtype == torch.long  # normalised on the device:
    assert data.on_after_batch_transfer(batch, 0).images.dtype == torch.float32


def test_a_last_training_batch_of_one_sample_is_left_to_the_next_shuffle(tmp_path):
    write_image_folder(tmp_path, {"train": {"rose": 3, "daisy": 2}, "val": {"rose": 1}, "test": {"rose": 1}})
    data = _folder(tmp_path)  # 5 training images, batch 4: the last batch would hold 1
    data.setup("fit")
    assert [len(batch[1]) for batch in data.train_dataloader()] == [4]
    data.batch_size = 3  # 5 = 3 + 2: nothing dropped
    assert [len(batch[1]) for batch in data.train_dataloader()] == [3, 2]
    assert sum(len(batch[1]) for batch in data.val_dataloader()) == 1  # evaluation never drops


def _corrupt_three(root):
    """The corruptions users meet: an interrupted download, an empty file, a non-image with an image suffix."""
    truncated = root / "train" / "rose" / "rose_0.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (root / "train" / "daisy" / "empty.jpg").write_bytes(b"")
    (root / "val" / "rose" / "notes.png").write_text("a text file with an image suffix")
    return {truncated, root / "train" / "daisy" / "empty.jpg", root / "val" / "rose" / "notes.png"}


def test_skip_corrupt_finds_truncated_empty_and_non_images_by_decoding_them(tmp_path):
    write_image_folder(tmp_path, COUNTS)
    bad = _corrupt_three(tmp_path)
    data = _folder(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipping unreadable image .*rose_0.jpg"):
        data.setup("fit")
    used = set(data.train_dataset.paths + data.val_dataset.paths)
    assert not used & bad and len(used) == 6 - 1 + 2  # the train and val images, minus the truncated one
    for dataset in (data.train_dataset, data.val_dataset):  # every image left decodes, none is replaced
        assert len([dataset[index] for index in range(len(dataset))]) == len(dataset) and dataset.replaced == 0


def test_the_scan_is_cached_beside_the_data_and_redone_for_changed_files(tmp_path, monkeypatch):
    from avgk_lightning.data import image_scan

    write_image_folder(tmp_path, COUNTS)
    _corrupt_three(tmp_path)
    decoded = []
    real = image_scan.decode_error
    monkeypatch.setattr(image_scan, "decode_error", lambda path: decoded.append(path.name) or real(path))
    with pytest.warns(UserWarning):
        _folder(tmp_path, skip_corrupt=True).setup("fit")
    assert len(decoded) == 6 + 1 + 2 + 1  # train (with the empty file) and val (with notes.png)
    assert (tmp_path / image_scan.SCAN_CACHE).is_file()
    decoded.clear()
    write_image(tmp_path / "train" / "rose" / "rose_0.jpg", 7)  # the user downloads it again
    data = _folder(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="empty.jpg"):  # still skipped, from the cache
        data.setup("fit")
    assert decoded == ["rose_0.jpg"]
    assert "rose_0.jpg" in {path.name for path in data.train_dataset.paths}


def test_an_image_that_breaks_after_the_scan_is_replaced_and_named(tmp_path):
    write_image_folder(tmp_path, COUNTS)
    data = _folder(tmp_path, skip_corrupt=True)
    data.setup("fit")
    broken = data.val_dataset.paths[0]
    broken.write_bytes(b"")
    with pytest.warns(UserWarning, match=f"skip_corrupt: {broken} became unreadable .*replaced"):
        first, second = data.val_dataset[0], data.val_dataset[1]
    assert torch.equal(first[0], second[0]) and first[1] == second[1]  # the next image stands in, label and all
    assert data.val_dataset.replaced == 1


def test_replacements_in_loader_workers_are_counted_in_the_main_process(tmp_path):
    write_image_folder(tmp_path, COUNTS)
    data = _folder(tmp_path, skip_corrupt=True)
    data.setup("fit")
    data.val_dataset.paths[0].write_bytes(b"")
    loader = torch.utils.data.DataLoader(data.val_dataset, batch_size=1, num_workers=2)
    assert len(list(loader)) == 2  # the workers' warnings go to their own stderr
    assert data.val_dataset.replaced == 1  # added in a worker process, read here


@pytest.mark.parametrize("images_folder", [True, False], ids=["images/ inside", "splits at the top"])
def test_plantnet_v2_is_detected_with_its_folder_numbers_as_classes_and_its_species_names(tmp_path, images_folder):
    root = write_fake_plantnet_v2(tmp_path / "plantnet300K_v2", images_folder)
    data = PlantNet300KDataModule(root, image_size=32, resize_size=36, batch_size=4, num_workers=0)
    data.setup(None)
    assert data.version == "v2" and data.layout.species_folders == ["0000", "0001", "0002"]
    assert data.class_names == [full for full, _ in V2_SPECIES]
    assert data.class_counts.tolist() == [1, 6, 3]
    path = data.train_dataset.paths[1]
    assert path.parent.name == "0001" and data.train_dataset[1][1].item() == 1
    assert len(data.val_dataset) == 4 and len(data.test_dataset) == 4
    assert data.state_dict()["plantnet_version"] == "v2"


def test_plantnet_v2_metadata_that_disagrees_with_a_folder_is_named(tmp_path):
    root = write_fake_plantnet_v2(tmp_path / "v2")
    metadata = root / "plantnet300K_metadata.csv"
    lines = metadata.read_text().splitlines()
    moved = next(index for index, line in enumerate(lines) if ",val," in line)
    lines[moved] = lines[moved].replace(",val,", ",test,")
    metadata.write_text("\n".join(lines) + "\n")
    data = PlantNet300KDataModule(root, num_workers=0)
    with pytest.raises(
        ValueError, match="disagree with .*plantnet300K_metadata.csv: .*jpg: .* says species 0\\d+, split test"
    ):
        data.setup("validate")


def test_plantnet_v2_metadata_without_its_columns_is_named(tmp_path):
    root = write_fake_plantnet_v2(tmp_path / "v2")
    species = root / "species_metadata.csv"
    species.write_text(species.read_text().replace("full_species", "name", 1))
    with pytest.raises(
        ValueError, match="species_metadata.csv has no column full_species .*is it the file of the official"
    ):
        PlantNet300KDataModule(root)


def test_a_folder_of_neither_version_says_what_each_holds(tmp_path):
    write_image_folder(tmp_path / "folders", {"train": {"a": 1}, "val": {"a": 1}, "test": {"a": 1}})
    with pytest.raises(
        ValueError,
        match="is neither Pl@ntNet-300K layout: v1 holds images/.*plantnet300K_metadata.json.* v2 holds .*0000..0999.*plantnet300K_metadata.csv",
    ):
        PlantNet300KDataModule(tmp_path / "folders")


def test_a_forced_version_that_is_not_the_data_s_names_the_missing_file(tmp_path):
    root = write_fake_plantnet_v2(tmp_path / "v2")
    with pytest.raises(FileNotFoundError, match="metadata file not found: .*class_idx_to_species_id.json"):
        PlantNet300KDataModule(root, version="v1")
    with pytest.raises(ValueError, match="`version` to be 'auto' or 'v1' or 'v2', but got 'v3'"):
        PlantNet300KDataModule(root, version="v3")


def test_a_checkpoint_of_the_other_version_is_refused(plantnet_dir, tmp_path):
    v1 = PlantNet300KDataModule(plantnet_dir, num_workers=0)
    v2 = PlantNet300KDataModule(write_fake_plantnet_v2(tmp_path / "v2"), num_workers=0)
    v1.load_state_dict(v1.state_dict())
    with pytest.raises(ValueError, match="trained on Pl@ntNet-300K v1, but `data_dir` .* holds v2"):
        v2.load_state_dict(v1.state_dict())


def test_plantnet_v1_copies_with_the_older_species_names_file_load(plantnet_dir):
    (plantnet_dir / "plantnet300K_species_id_2_name.json").rename(plantnet_dir / "plantnet300K_species_names.json")
    assert PlantNet300KDataModule(plantnet_dir, num_workers=0).class_names[0] == "Daucus carota L."
