"""ImageNet-layout image folders, read with Pillow (no torchvision): ``ROOT/SPLIT/CLASS/IMAGE``.

The layout most tools unpack ILSVRC-2012 into::

    ROOT/train/n01440764/n01440764_10026.JPEG   (1000 class folders, ~1.28 M images)
    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG   (the same 1000 folders, 50 000 images)

The classes are the sub-folders of ``train`` in sorted order; ``val`` must hold the same ones.
Training images get the usual random-resized crop (8–100 % of the area, aspect 3/4–4/3) and a
horizontal flip; evaluation images are scaled so the shorter side is ``resize`` and centre-cropped
to ``image_size``. The random choices for image ``i`` in epoch ``e`` come from a generator seeded
by ``(seed, e, i)``, so every run of an experiment sees the same crops whatever the number of
processes or loader workers.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qatcore.checks import int_at_least

EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def class_folders(split_dir: Path) -> list[str]:
    """The class sub-folders of ``split_dir``, sorted; FileNotFoundError/ValueError when there are none."""
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"no folder {str(split_dir)!r}: expected ROOT/train/CLASS/IMAGE and ROOT/val/CLASS/IMAGE"
        )
    classes = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    if not classes:
        raise ValueError(f"{str(split_dir)!r} has no class sub-folders")
    return classes


class ImageFolder(torch.utils.data.Dataset):
    """``(image, label)`` pairs of one split: a normalised float32 tensor ``3 × image_size²`` and
    the class index.

    ``train`` (default: ``split == "train"``) picks the random crop and flip; ``classes`` (default:
    the ``train`` split's folders) fixes the label of each folder name.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        train: bool | None = None,
        image_size: int = 224,
        resize: int | None = None,
        seed: int = 0,
        classes: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data_dir {str(self.root)!r} is not a folder")
        self.split = split
        self.train = split == "train" if train is None else train
        self.image_size = int_at_least("image_size", image_size, 8)
        self.resize = (
            round(image_size * 8 / 7)
            if resize is None
            else int_at_least("resize", resize, image_size)
        )
        self.seed = int_at_least("seed", seed, 0)
        self.epoch = 0
        self.classes = class_folders(self.root / "train") if classes is None else list(classes)
        found = class_folders(self.root / split)
        if found != self.classes:
            extra, missing = (
                sorted(set(found) - set(self.classes)),
                sorted(set(self.classes) - set(found)),
            )
            raise ValueError(
                f"{split} classes differ from train's: extra {extra[:5]}, missing {missing[:5]}"
            )
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / split / name).iterdir())
            if path.suffix.lower() in EXTENSIONS
        ]
        if not self.samples:
            raise ValueError(
                f"{str(self.root / split)!r} holds no images ({', '.join(EXTENSIONS)})"
            )
        empty = sorted(set(self.classes) - {self.classes[label] for _, label in self.samples})
        if empty:
            raise ValueError(
                f"{len(empty)} class folder(s) of {str(self.root / split)!r} hold no images "
                f"({', '.join(EXTENSIONS)}): {empty[:5]}; remove them or add their images"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the crops of ``epoch`` (call before each epoch's loader is iterated)."""
        self.epoch = int_at_least("epoch", epoch, 0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, Image.DecompressionBombError) as error:  # not an image, truncated, huge
            raise ValueError(f"{str(path)!r} is not an image Pillow can read: {error}") from None
        if self.train:
            rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            image = image.resize(
                (self.image_size,) * 2,
                Image.Resampling.BILINEAR,
                box=random_resized_box(image.size, rng),
            )
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            image = image.resize(
                (self.image_size,) * 2,
                Image.Resampling.BILINEAR,
                box=centre_box(image.size, self.resize, self.image_size),
            )
        return to_tensor(image), label


def random_resized_box(size: tuple[int, int], rng: random.Random) -> tuple[int, int, int, int]:
    """A box of random area (``SCALE``) and aspect ratio (``RATIO``) inside an image of ``size``;
    after ten misses, the largest centred box of an allowed ratio."""
    width, height = size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    ratio = min(max(width / height, RATIO[0]), RATIO[1])
    w, h = (
        (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    )
    w, h = min(w, width), min(h, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(size: tuple[int, int], resize: int, crop: int) -> tuple[float, float, float, float]:
    """The box that scaling the shorter side to ``resize`` and cutting the centre ``crop²`` keeps."""
    width, height = size
    side = crop * min(width, height) / resize
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a ``3 × H × W`` float32 tensor, normalised by ImageNet's ``MEAN`` and ``STD``."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    return (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def write_synthetic_folder(
    root: str | os.PathLike,
    classes: int = 3,
    train_per_class: int = 8,
    val_per_class: int = 2,
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
) -> Path:
    """Write a tiny ImageNet-layout folder of JPEG noise images, one mean colour per class: for
    trying a config (and the tests) before the real data are at hand."""
    int_at_least("classes", classes, 2)
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (
        ("train", int_at_least("train_per_class", train_per_class, 1)),
        ("val", int_at_least("val_per_class", val_per_class, 1)),
    ):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.uniform(40, 215, size=3)
            for i in range(count):
                pixels = np.clip(
                    colour + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255
                ).astype(np.uint8)
                image = Image.fromarray(pixels)
                if i == 0:  # ImageNet has some greyscale JPEGs too
                    image = image.convert("L")
                image.save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return root
