"""Pl@ntNet-300K from a local copy in its official layout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from avgk_lightning.data.folder import ImageFolderDataModule
from avgk_lightning.errors import InvalidInputError, MissingFileError

__all__ = ["PlantNet300KDataModule"]

CLASS_INDEX_FILE = "class_idx_to_species_id.json"
SPECIES_NAMES_FILE = "plantnet300K_species_id_2_name.json"
METADATA_FILE = "plantnet300K_metadata.json"


def _load_json(path: Path, argument: str) -> Any:
    if not path.is_file():
        raise MissingFileError(
            f"Pl@ntNet-300K metadata file not found: {path}. `{argument}` must hold the files of the official "
            f"archive: {CLASS_INDEX_FILE}, {SPECIES_NAMES_FILE}, {METADATA_FILE} and images/."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"Pl@ntNet-300K metadata file {path} is not valid JSON: {error}") from error


class PlantNet300KDataModule(ImageFolderDataModule):
    """Pl@ntNet-300K (1,081 species, long-tailed) from ``data_dir`` in the official layout.

    ``data_dir`` holds ``images/{train,val,test}/<species_id>/<image_id>.jpg`` and the metadata files
    ``plantnet300K_metadata.json`` (per image: its species and split), ``plantnet300K_species_id_2_name.json``
    and ``class_idx_to_species_id.json``. Class index i is the species that ``class_idx_to_species_id.json``
    maps i to (the order the published pretrained weights use), ``class_names`` gives the species names
    and ``class_counts`` the training images per class (80% of the species hold 11% of the images).
    At set-up every image is checked against the metadata (known image, same species, same split);
    a disagreement is an error naming the files.

    The reference transforms are the defaults (train Resize 256 + RandomCrop 224, evaluation Resize 256
    + CenterCrop 224, ImageNet normalisation), with JPEGs decoded at a reduced scale and uint8 crops
    normalised on the device (``decode``, ``uint8_batches``); ``transforms_from_model`` takes a timm
    model's own.

    Args:
        data_dir: the folder of the extracted archive.
        **kwargs: see :class:`~avgk_lightning.data.ImageFolderDataModule`.
    """

    def __init__(self, data_dir: str | os.PathLike, **kwargs: Any) -> None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise MissingFileError(
                f"Data directory not found: {root} (argument `data_dir`). Pass the folder of the extracted "
                "Pl@ntNet-300K archive (it holds images/ and the metadata files)."
            )
        index_to_species = _load_json(root / CLASS_INDEX_FILE, "data_dir")
        self.species_names: dict[str, str] = _load_json(root / SPECIES_NAMES_FILE, "data_dir")
        self.metadata_path = root / METADATA_FILE
        if not self.metadata_path.is_file():
            _load_json(self.metadata_path, "data_dir")
        try:
            order = sorted(index_to_species, key=int)
        except ValueError as error:
            raise InvalidInputError(
                f"{root / CLASS_INDEX_FILE}: keys must be class indices 0..L-1 ({error})"
            ) from error
        if [int(index) for index in order] != list(range(len(order))):
            raise InvalidInputError(
                f"{root / CLASS_INDEX_FILE}: class indices must be 0..{len(order) - 1} without gaps"
            )
        self.species_ids = [str(index_to_species[index]) for index in order]
        unnamed = [species for species in self.species_ids if species not in self.species_names]
        if unnamed:
            raise InvalidInputError(
                f"{root / SPECIES_NAMES_FILE} has no name for species {', '.join(unnamed[:5])}"
                f"{' ...' if len(unnamed) > 5 else ''} of {root / CLASS_INDEX_FILE}: the metadata files disagree"
            )
        self.root = root
        self._metadata: dict[str, Any] | None = None
        super().__init__(root / "images", **kwargs)

    def _class_folders(self) -> list[str]:
        folders = {entry.name for entry in os.scandir(self.data_dir / "train") if entry.is_dir()}
        unknown = sorted(folders - set(self.species_ids))
        if unknown:
            raise InvalidInputError(
                f"Class folder {self.data_dir / 'train' / unknown[0]} is not a species of "
                f"{self.root / CLASS_INDEX_FILE} ({len(unknown)} such folders): the folders and the metadata disagree"
            )
        missing = [species for species in self.species_ids if species not in folders]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} species of {self.root / CLASS_INDEX_FILE} have no folder in "
                f"{self.data_dir / 'train'} (e.g. {missing[0]}): the folders and the metadata disagree"
            )
        return list(self.species_ids)

    @property
    def class_names(self) -> list[str]:
        return [self.species_names[species] for species in self.species_ids]

    def _list_split(self, split: str) -> tuple[list[Path], list[int]]:
        paths, labels = super()._list_split(split)
        if self._metadata is None:
            self._metadata = _load_json(self.metadata_path, "data_dir")
        problems = []
        for path in paths:
            entry = self._metadata.get(path.stem)
            if entry is None:
                problems.append(f"{path}: not in {METADATA_FILE}")
            elif str(entry.get("species_id")) != path.parent.name or entry.get("split") != split:
                problems.append(
                    f"{path}: {METADATA_FILE} says species {entry.get('species_id')}, split {entry.get('split')}"
                )
        if problems:
            raise InvalidInputError(
                f"{len(problems)} images of {self.data_dir / split} disagree with {self.metadata_path}: "
                + "; ".join(problems[:3])
                + (" ..." if len(problems) > 3 else "")
            )
        return paths, labels
