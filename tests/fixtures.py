"""Tiny copies of the real data sets in their on-disk formats, written by the tests."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

PLANTNET_SPECIES = ("1355868", "1355920", "1356022")  # class index order below: 2, 0, 1


def write_fake_cifar100(root: Path, train_per_class: int = 4, test_per_class: int = 1, seed: int = 0) -> Path:
    """A `cifar-100-python` folder with the official pickle structure and random 32x32 images.

    Fine classes map to superclasses by a random permutation (not c // 5), as in the real files.
    Returns the fine -> coarse mapping's folder.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    coarse_of = rng.permutation(np.repeat(np.arange(20), 5))
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), per_class)
        rng.shuffle(fine)
        content = {
            "filenames": [f"image_{i}.png" for i in range(len(fine))],
            "batch_label": f"{name} batch",
            "fine_labels": fine.tolist(),
            "coarse_labels": coarse_of[fine].tolist(),
            "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle)
    return folder


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_image_folder(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """root/{split}/{class}/{i}.jpg with counts[split][class] images each."""
    seed = 0
    for split, per_class in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, count in per_class.items():
            for index in range(count):
                seed += 1
                write_image(root / split / name / f"{name}_{index}.jpg", seed)
    return root


def write_fake_plantnet(root: Path) -> Path:
    """The official Pl@ntNet-300K layout: images/{split}/{species_id}/{image_id}.jpg and the three JSON files."""
    counts = {"train": (6, 3, 1), "val": (2, 1, 1), "test": (2, 1, 1)}
    metadata, seed = {}, 100
    for split, per_species in counts.items():
        for species, count in zip(PLANTNET_SPECIES, per_species):
            for index in range(count):
                seed += 1
                image_id = f"{species[-3:]}{split}{index:02d}aa"
                write_image(root / "images" / split / species / f"{image_id}.jpg", seed)
                metadata[image_id] = {"species_id": species, "split": split, "organ": "leaf", "obs_id": str(seed)}
    (root / "class_idx_to_species_id.json").write_text(
        json.dumps({"0": PLANTNET_SPECIES[2], "1": PLANTNET_SPECIES[0], "2": PLANTNET_SPECIES[1]})
    )
    names = {
        PLANTNET_SPECIES[0]: "Lactuca virosa L.",
        PLANTNET_SPECIES[1]: "Cirsium arvense (L.) Scop.",
        PLANTNET_SPECIES[2]: "Daucus carota L.",
    }
    (root / "plantnet300K_species_id_2_name.json").write_text(json.dumps(names))
    (root / "plantnet300K_metadata.json").write_text(json.dumps(metadata))
    return root


V2_SPECIES = (
    ("Daucus carota L.", "Daucus carota"),
    ("Lactuca virosa L.", "Lactuca virosa"),
    ("Cirsium arvense (L.) Scop.", "Cirsium arvense"),
)


def write_fake_plantnet_v2(root: Path, images_folder: bool = True) -> Path:
    """Pl@ntNet-300K v2: [images/]{split}/0000../{PN_hash}.jpg, plantnet300K_metadata.csv and species_metadata.csv."""
    counts = {"train": (1, 6, 3), "val": (1, 2, 1), "test": (1, 2, 1)}
    images = root / "images" if images_folder else root
    rows, seed = [], 300
    for split, per_species in counts.items():
        for species_id, count in enumerate(per_species):
            for index in range(count):
                seed += 1
                image_hash = f"{seed:04x}{split}{index:02d}"
                write_image(images / split / f"{species_id:04d}" / f"{image_hash}.jpg", seed)
                rows.append([species_id, f"obs{seed}", "leaf", "someone", "cc-by-sa", split, image_hash])
    columns = ["species_id", "PN_observation_id", "organ", "author", "license", "split", "PN_hash"]
    with open(root / "plantnet300K_metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([columns, *rows])
    species_columns = [
        "species_id",
        "full_species",
        "species",
        "genus",
        "family",
        "epithet",
        "author",
        "unmatched_terms",
        "iucn_status",
    ]
    with open(root / "species_metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(species_columns)
        for species_id, (full, name) in enumerate(V2_SPECIES):
            genus, epithet = name.split()
            writer.writerow([species_id, full, name, genus, "Asteraceae", epithet, full[len(name) + 1 :], "", "LC"])
    return root


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write a uint8 array in the idx format of (Fashion-)MNIST: magic 0x0000 08 <ndim>, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        path.write_bytes(content)
    return path


def write_fake_fashion_mnist(
    folder: Path, train_per_class: int = 60, test_per_class: int = 5, compress: bool = True, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four Fashion-MNIST idx files with random 28x28 images, class-sorted labels shuffled; returns the arrays."""
    generator = np.random.default_rng(seed)
    arrays = {}
    for split, per_class, prefix in (("train", train_per_class, "train"), ("test", test_per_class, "t10k")):
        labels = generator.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images = generator.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[split] = (images, labels)
    return arrays
