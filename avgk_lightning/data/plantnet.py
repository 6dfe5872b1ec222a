"""Pl@ntNet-300K from a local copy of either published version: v1 (1,081 species, JSON metadata) or v2 (1,000, CSV).

The two versions (``docs/data.md`` cites their pages) differ in layout and metadata:

* **v1** (Zenodo 4726653 / 5645731, ``plantnet_300K.zip``): ``images/{train,val,test}/<species_id>/<image_id>.jpg``
  with species ids such as ``1355868``; ``plantnet300K_metadata.json`` (image id -> species_id, split, ...),
  ``plantnet300K_species_id_2_name.json`` (species id -> name; ``plantnet300K_species_names.json`` in some
  copies) and ``class_idx_to_species_id.json`` (class index -> species id).
* **v2** (Zenodo 10419064, ``images.zip``): ``{train,val,test}/0000..0999/<PN_hash>.jpg``, the folders under
  ``data_dir`` or ``data_dir/images``; ``plantnet300K_metadata.csv`` (one row per image: species_id 0-999,
  split, PN_hash, organ, author, license, PN_observation_id) and ``species_metadata.csv`` (species_id,
  full_species, species, genus, family, ...). Class index = species id = folder number.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from avgk_lightning.checks import check_choice
from avgk_lightning.data.folder import SPLITS, ImageFolderDataModule
from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = ["VERSIONS", "PlantNet300KDataModule", "PlantNetLayout", "detect_layout"]

VERSIONS = ("v1", "v2")
CLASS_INDEX_FILE = "class_idx_to_species_id.json"
SPECIES_NAMES_FILES = ("plantnet300K_species_id_2_name.json", "plantnet300K_species_names.json")
METADATA_FILE = "plantnet300K_metadata.json"
V2_METADATA_FILE = "plantnet300K_metadata.csv"
V2_SPECIES_FILE = "species_metadata.csv"
_V1_FILES = f"images/{{train,val,test}}/, {METADATA_FILE}, {SPECIES_NAMES_FILES[0]} and {CLASS_INDEX_FILE}"
_V2_FILES = f"{{train,val,test}}/0000..0999/ (or under images/), {V2_METADATA_FILE} and {V2_SPECIES_FILE}"


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingFileError(
            f"Pl@ntNet-300K metadata file not found: {path}. `data_dir` must hold the files of the official "
            f"archive: for v1 {_V1_FILES}; for v2 {_V2_FILES}."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"Pl@ntNet-300K metadata file {path} is not valid JSON: {error}") from error


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingFileError(f"Pl@ntNet-300K v2 metadata file not found: {path}. `data_dir` must hold {_V2_FILES}.")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(
                f"Pl@ntNet-300K v2 metadata file {path} has no column {', '.join(missing)} (its header: "
                f"{', '.join(reader.fieldnames or []) or 'none'}): is it the file of the official archive?"
            )
        return list(reader)


def _v2_folder(species_id: str, path: Path) -> str:
    try:
        return f"{int(species_id):04d}"
    except ValueError as error:
        raise InvalidInputError(f"{path}: species_id {species_id!r} is not a number 0-999") from error


@dataclass(frozen=True)
class PlantNetLayout:
    """Where a copy of Pl@ntNet-300K keeps its images and what its metadata say.

    Attributes:
        version: ``"v1"`` or ``"v2"``.
        images: the folder that holds ``train/``, ``val/`` and ``test/``.
        species_folders: the class folder of each class index.
        class_names: the species name of each class index.
        class_file: the metadata file that orders the classes.
        metadata: the per-image metadata file.
        read_images: reads `metadata` into {image id (file stem): (class folder, split)}.
    """

    version: str
    images: Path
    species_folders: list[str]
    class_names: list[str]
    class_file: Path
    metadata: Path
    read_images: Callable[[], dict[str, tuple[str, str]]]


def _v1_layout(root: Path) -> PlantNetLayout:
    index_to_species = _load_json(root / CLASS_INDEX_FILE)
    names_file = next((root / name for name in SPECIES_NAMES_FILES if (root / name).is_file()), None)
    species_names: dict[str, str] = _load_json(names_file or root / SPECIES_NAMES_FILES[0])
    metadata = root / METADATA_FILE
    if not metadata.is_file():
        _load_json(metadata)
    try:
        order = sorted(index_to_species, key=int)
    except ValueError as error:
        raise InvalidInputError(f"{root / CLASS_INDEX_FILE}: keys must be class indices 0..L-1 ({error})") from error
    if [int(index) for index in order] != list(range(len(order))):
        raise InvalidInputError(f"{root / CLASS_INDEX_FILE}: class indices must be 0..{len(order) - 1} without gaps")
    species_ids = [str(index_to_species[index]) for index in order]
    unnamed = [species for species in species_ids if species not in species_names]
    if unnamed:
        raise InvalidInputError(
            f"{names_file} has no name for species {', '.join(unnamed[:5])}{' ...' if len(unnamed) > 5 else ''} "
            f"of {root / CLASS_INDEX_FILE}: the metadata files disagree"
        )

    def read_images() -> dict[str, tuple[str, str]]:
        entries = _load_json(metadata)
        return {image: (str(entry.get("species_id")), str(entry.get("split"))) for image, entry in entries.items()}

    names = [species_names[species] for species in species_ids]
    return PlantNetLayout("v1", root / "images", species_ids, names, root / CLASS_INDEX_FILE, metadata, read_images)


def _v2_layout(root: Path) -> PlantNetLayout:
    images = next((folder for folder in (root, root / "images") if (folder / "train").is_dir()), root)
    species_file = root / V2_SPECIES_FILE
    rows = _read_csv(species_file, ("species_id", "full_species"))
    by_folder = {_v2_folder(row["species_id"], species_file): row for row in rows}
    if len(by_folder) != len(rows):
        raise InvalidInputError(f"{species_file}: a species_id appears twice")
    folders = sorted(by_folder)
    if folders != [f"{index:04d}" for index in range(len(folders))]:
        raise InvalidInputError(f"{species_file}: species ids must be 0..{len(folders) - 1} without gaps")
    names = [by_folder[folder]["full_species"] or by_folder[folder].get("species", "") for folder in folders]
    metadata = root / V2_METADATA_FILE

    def read_images() -> dict[str, tuple[str, str]]:
        rows = _read_csv(metadata, ("species_id", "split", "PN_hash"))
        return {row["PN_hash"]: (_v2_folder(row["species_id"], metadata), row["split"]) for row in rows}

    return PlantNetLayout("v2", images, folders, names, species_file, metadata, read_images)


def detect_layout(data_dir: str | os.PathLike, version: str = "auto") -> PlantNetLayout:
    """The layout of the Pl@ntNet-300K copy in `data_dir`: `version` ``"v1"``, ``"v2"``, or ``"auto"`` (detected).

    v1 is recognised by ``plantnet300K_metadata.json``, v2 by ``plantnet300K_metadata.csv``; a folder with
    neither is an error that says what each version holds.
    """
    check_choice("version", version, ("auto", *VERSIONS))
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"Data directory not found: {root} (argument `data_dir`). Pass the folder of the extracted "
            "Pl@ntNet-300K archive (it holds the images and the metadata files)."
        )
    if version == "auto":
        if (root / METADATA_FILE).is_file():
            version = "v1"
        elif (root / V2_METADATA_FILE).is_file():
            version = "v2"
        else:
            raise InvalidInputError(
                f"{root} (argument `data_dir`) is neither Pl@ntNet-300K layout: v1 holds {_V1_FILES}; v2 holds "
                f"{_V2_FILES}. Pass the folder of the extracted archive (where these metadata files are)."
            )
    return _v1_layout(root) if version == "v1" else _v2_layout(root)


class PlantNet300KDataModule(ImageFolderDataModule):
    """Pl@ntNet-300K (long-tailed: 80% of the species hold 11% of the images) from ``data_dir``, v1 or v2.

    ``data_dir`` is the folder of either published archive, extracted (:func:`detect_layout` tells them
    apart; ``version`` forces one): v1, 1,081 species, class i the species ``class_idx_to_species_id.json``
    maps i to (the order the published pretrained weights use); v2, 1,000 species, class i the folder
    ``i`` (``0000``-``0999``). ``class_names`` gives the species names of the version's metadata
    (v2: ``full_species``, the name with its author) and ``class_counts`` the training images per class.
    At set-up every image is checked against the metadata (known image, same species, same split); a
    disagreement is an error naming the files. The version used is :attr:`version`, printed at set-up
    and saved in checkpoints (``state_dict``); resuming on the other version is refused.

    The reference transforms are the defaults (train Resize 256 + RandomCrop 224, evaluation Resize 256
    + CenterCrop 224, ImageNet normalisation), with JPEGs decoded at a reduced scale and uint8 crops
    normalised on the device (``decode``, ``uint8_batches``); ``transforms_from_model`` takes a timm
    model's own.

    Args:
        data_dir: the folder of the extracted archive.
        version: ``"auto"`` (default), ``"v1"`` or ``"v2"``.
        **kwargs: see :class:`~avgk_lightning.data.ImageFolderDataModule`.
    """

    def __init__(self, data_dir: str | os.PathLike, version: str = "auto", **kwargs: Any) -> None:
        self.layout = detect_layout(data_dir, version)
        self.root = Path(data_dir).expanduser()
        self._images: dict[str, tuple[str, str]] | None = None
        missing = [split for split in SPLITS if not (self.layout.images / split).is_dir()]
        if missing:
            raise MissingFileError(
                f"Split folder not found: {self.layout.images / missing[0]}. A Pl@ntNet-300K {self.version} copy "
                f"holds {_V1_FILES if self.version == 'v1' else _V2_FILES}."
            )
        super().__init__(self.layout.images, **kwargs)

    @property
    def version(self) -> str:
        """The Pl@ntNet-300K version of ``data_dir``: ``"v1"`` or ``"v2"``."""
        return self.layout.version

    def _class_folders(self) -> list[str]:
        expected = self.layout.species_folders
        folders = {entry.name for entry in os.scandir(self.data_dir / "train") if entry.is_dir()}
        unknown = sorted(folders - set(expected))
        if unknown:
            raise InvalidInputError(
                f"Class folder {self.data_dir / 'train' / unknown[0]} is not a species of {self.layout.class_file} "
                f"({len(unknown)} such folders): the folders and the metadata disagree"
            )
        missing = [species for species in expected if species not in folders]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} species of {self.layout.class_file} have no folder in "
                f"{self.data_dir / 'train'} (e.g. {missing[0]}): the folders and the metadata disagree"
            )
        return list(expected)

    @property
    def class_names(self) -> list[str]:
        return list(self.layout.class_names)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        rank_zero_info(f"Pl@ntNet-300K {self.version}: {self.num_classes} species, from {self.root}")

    def _list_split(self, split: str) -> tuple[list[Path], list[int]]:
        paths, labels = super()._list_split(split)
        if self._images is None:
            self._images = self.layout.read_images()
        name = self.layout.metadata.name
        problems = []
        for path in paths:
            entry = self._images.get(path.stem)
            if entry is None:
                problems.append(f"{path}: not in {name}")
            elif entry != (path.parent.name, split):
                problems.append(f"{path}: {name} says species {entry[0]}, split {entry[1]}")
        if problems:
            raise InvalidInputError(
                f"{len(problems)} images of {self.data_dir / split} disagree with {self.layout.metadata}: "
                + "; ".join(problems[:3])
                + (" ..." if len(problems) > 3 else "")
            )
        return paths, labels

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "plantnet_version": self.version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("plantnet_version")
        if saved is not None and saved != self.version:
            raise InvalidInputError(
                f"The checkpoint was trained on Pl@ntNet-300K {saved}, but `data_dir` {self.root} holds {self.version}"
                f": pass the {saved} copy, or train again on {self.version} (their species differ)."
            )
        super().load_state_dict({key: value for key, value in state_dict.items() if key != "plantnet_version"})
