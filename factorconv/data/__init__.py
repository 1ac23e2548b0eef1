"""Data without torchvision: readers (IDX, CIFAR pickles read safely, image folders, a synthetic set,
segmentation pairs), downloads checked against published MD5s, and the in-memory tensor loader with
augmentation and sharding."""

from .base import IGNORE_INDEX, DatasetError, ImageSet, file_md5
from .cifar import SafeUnpickler, read_cifar, safe_unpickle
from .download import download_file
from .folder import read_image_folder
from .idx import read_idx, read_idx_split
from .loader import Augment, TensorLoader
from .segmentation import paste_items, read_segmentation_folder
from .sets import DATASETS, DatasetInfo, default_roots, list_datasets, load_dataset, synthetic

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "Augment",
    "DatasetError",
    "DatasetInfo",
    "ImageSet",
    "SafeUnpickler",
    "TensorLoader",
    "default_roots",
    "download_file",
    "file_md5",
    "list_datasets",
    "load_dataset",
    "paste_items",
    "read_cifar",
    "read_idx",
    "read_idx_split",
    "read_image_folder",
    "read_segmentation_folder",
    "safe_unpickle",
    "synthetic",
]
