"""Benchmark definitions in the OpenOOD v1.5 layout: which imglists are ID and which are OOD.

A benchmark names its ID train/val/test lists (and, where it has one, a calibration list that
training and threshold tuning never read), an OOD validation list for tuning, and its OOD test
sets grouped as near or far. Paths are relative to a data root holding `benchmark_imglist/`,
`images_classic/` and `images_largescale/`.

A benchmark is data: `benchmark_imglist/<name>/benchmark.json` (SPEC_FILE) describes it, and
`get_benchmark(name, root)` reads that file where it exists. `oaml data import` writes one for a
user's folder, `oaml data prepare` for fmnist and fmnist6; the built-in definitions below are
what the OpenOOD downloads (which carry no such file) and older prepared folders are read with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oaml.data.fashion_mnist import CLASS_NAMES as FMNIST_CLASSES
from oaml.registry import Registry

CLASSIC = "images_classic"
LARGESCALE = "images_largescale"
IMGLIST_DIR = "benchmark_imglist"
SPEC_FILE = "benchmark.json"
SPEC_VERSION = 1

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


@dataclass(frozen=True)
class ImageSet:
    """One imglist and the image folder its paths are relative to (both relative to the root)."""

    name: str
    imglist: str
    image_dir: str = CLASSIC
    group: str = "id"  # id | val | near | far | extra

    def imglist_path(self, root: Path) -> Path:
        return Path(root) / self.imglist

    def image_root(self, root: Path) -> Path:
        return Path(root) / self.image_dir

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSet:
        return cls(**{k: str(data[k]) for k in ("name", "imglist", "image_dir", "group")})


@dataclass(frozen=True)
class BenchmarkSpec:
    """An ID dataset with its OOD test sets; carries what a model needs to read its images."""

    name: str
    class_names: tuple[str, ...]
    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    ood_val: ImageSet
    ood: tuple[ImageSet, ...]
    # Whether `oaml data prepare` can build it offline (otherwise the user provides the data).
    preparable: bool = False
    # ID images that training and threshold tuning never see (conformal calibration), if any.
    calibration: ImageSet | None = None
    # Where the data came from (`oaml data import`'s command), for error messages.
    source: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def imglists(self) -> list[ImageSet]:
        """Every imglist this benchmark reads."""
        calibration = [self.calibration] if self.calibration else []
        return [self.train, self.val, self.test, *calibration, self.ood_val, *self.ood]

    def test_sets(self) -> list[ImageSet]:
        """What evaluation reads: the ID test list and the OOD test lists."""
        return [self.test, *self.ood]

    def missing(self, root: Path, sets: list[ImageSet] | None = None) -> list[Path]:
        """Imglist files absent under `root` (of `sets`, default: all of them)."""
        return [
            s.imglist_path(root)
            for s in (sets if sets is not None else self.imglists())
            if not s.imglist_path(root).is_file()
        ]

    def require(self, root: Path, sets: list[ImageSet] | None = None) -> None:
        """Raise FileNotFoundError naming what is missing and how to get it."""
        missing = self.missing(root, sets)
        if missing:
            how = (
                f"run `oaml data prepare --benchmark {self.name} --root {root}`"
                if self.preparable
                else f"re-run `{self.source}`"
                if self.source
                else "download the OpenOOD v1.5 benchmark into it (benchmark_imglist/, "
                "images_classic/, images_largescale/)"
            )
            raise FileNotFoundError(
                f"benchmark {self.name!r} is incomplete under {root}: missing "
                f"{', '.join(str(p) for p in missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}; {how}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec file's content (SPEC_FILE), read back by `from_dict`."""
        data = asdict(self)
        data["version"] = SPEC_VERSION
        for key in ("class_names", "mean", "std"):
            data[key] = list(data[key])
        data["ood"] = [asdict(s) for s in self.ood]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkSpec:
        """A spec from its file's content; KeyError/TypeError/ValueError on a malformed one."""
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"version {data.get('version')!r}, this oaml reads {SPEC_VERSION}")
        sets = {k: ImageSet.from_dict(data[k]) for k in ("train", "val", "test", "ood_val")}
        calibration = data.get("calibration")
        return cls(
            name=str(data["name"]),
            class_names=tuple(str(c) for c in data["class_names"]),
            input_size=int(data["input_size"]),
            channels=int(data["channels"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            ood=tuple(ImageSet.from_dict(s) for s in data["ood"]),
            preparable=bool(data.get("preparable", False)),
            calibration=ImageSet.from_dict(calibration) if calibration else None,
            source=data.get("source"),
            **sets,
        )


def spec_path(root: str | Path, name: str) -> Path:
    """Where benchmark `name`'s spec file lives under the data folder `root`."""
    return Path(root) / IMGLIST_DIR / name / SPEC_FILE


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def _register(spec: BenchmarkSpec) -> BenchmarkSpec:
    BENCHMARKS.register(spec.name)(spec)
    return spec


def _set(folder: str, name: str, file: str, group: str, image_dir: str = CLASSIC) -> ImageSet:
    return ImageSet(name, f"{IMGLIST_DIR}/{folder}/{file}", image_dir, group)


def _cifar(
    name: str, other: str, classes: tuple[str, ...], mean: tuple, std: tuple
) -> BenchmarkSpec:
    """CIFAR-10/100 as OpenOOD v1.5 defines them: near = the other CIFAR and TIN."""
    return BenchmarkSpec(
        name=name,
        class_names=classes,
        input_size=32,
        channels=3,
        mean=mean,
        std=std,
        train=_set(name, f"{name}_train", f"train_{name}.txt", "id"),
        val=_set(name, f"{name}_val", f"val_{name}.txt", "id"),
        test=_set(name, name, f"test_{name}.txt", "id"),
        ood_val=_set(name, "tin_val", "val_tin.txt", "val"),
        ood=(
            _set(name, other, f"test_{other}.txt", "near"),
            _set(name, "tin", "test_tin.txt", "near"),
            *(
                _set(name, far, f"test_{far}.txt", "far")
                for far in ("mnist", "svhn", "texture", "places365")
            ),
        ),
    )


_register(
    _cifar(
        "cifar10", "cifar100", CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    )
)
_register(
    _cifar(
        "cifar100", "cifar10", CIFAR100_CLASSES, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    )
)

_register(
    BenchmarkSpec(
        name="imagenet1k",
        class_names=tuple(f"class_{i:04d}" for i in range(1000)),
        input_size=224,
        channels=3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        train=_set("imagenet", "imagenet_train", "train_imagenet.txt", "id", LARGESCALE),
        val=_set("imagenet", "imagenet_val", "val_imagenet.txt", "id", LARGESCALE),
        test=_set("imagenet", "imagenet", "test_imagenet.txt", "id", LARGESCALE),
        ood_val=_set("imagenet", "openimage_o_val", "val_openimage_o.txt", "val", LARGESCALE),
        ood=(
            _set("imagenet", "ssb_hard", "test_ssb_hard.txt", "near", LARGESCALE),
            _set("imagenet", "ninco", "test_ninco.txt", "near", LARGESCALE),
            _set("imagenet", "inaturalist", "test_inaturalist.txt", "far", LARGESCALE),
            # OpenOOD keeps Textures under images_classic even for ImageNet.
            _set("imagenet", "textures", "test_textures.txt", "far", CLASSIC),
            _set("imagenet", "openimage_o", "test_openimage_o.txt", "far", LARGESCALE),
        ),
    )
)

# The offline benchmarks built by `oaml data prepare` (oaml/data/prepare.py writes these files).
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
FMNIST_FAR = ("textures", "photos", "faces")


def far_sets(folder: str, names: Iterable[str] = FMNIST_FAR) -> tuple[ImageSet, ...]:
    """Far-OOD sets `test_<name>.txt` of an offline benchmark; `oaml data prepare` adds the
    packaged ones (clip art, glyphs) this machine has to the spec file it writes."""
    return tuple(_set(folder, name, f"test_{name}.txt", "far") for name in names)


_register(
    BenchmarkSpec(
        name="fmnist",
        class_names=FMNIST_CLASSES,
        input_size=28,
        channels=1,
        mean=FMNIST_MEAN,
        std=FMNIST_STD,
        train=_set("fmnist", "fmnist_train", "train_fmnist.txt", "id"),
        val=_set("fmnist", "fmnist_val", "val_fmnist.txt", "id"),
        test=_set("fmnist", "fmnist", "test_fmnist.txt", "id"),
        ood_val=_set("fmnist", "ood_val", "val_ood.txt", "val"),
        ood=(_set("fmnist", "digits", "test_digits.txt", "near"), *far_sets("fmnist")),
        preparable=True,
    )
)

_register(
    BenchmarkSpec(
        name="fmnist6",
        class_names=FMNIST_CLASSES[:6],
        input_size=28,
        channels=1,
        mean=FMNIST_MEAN,
        std=FMNIST_STD,
        train=_set("fmnist6", "fmnist6_train", "train_fmnist6.txt", "id"),
        val=_set("fmnist6", "fmnist6_val", "val_fmnist6.txt", "id"),
        test=_set("fmnist6", "fmnist6", "test_fmnist6.txt", "id"),
        ood_val=_set("fmnist6", "ood_val", "val_ood.txt", "val"),
        ood=(
            _set("fmnist6", "fmnist_held_out", "test_fmnist_held_out.txt", "near"),
            _set("fmnist6", "digits", "test_digits.txt", "far"),
            *far_sets("fmnist6"),
        ),
        preparable=True,
    )
)


def get_benchmark(name: str, root: str | Path | None = None) -> BenchmarkSpec:
    """The benchmark named `name`: its spec file under the data folder `root` where there is
    one, else the built-in definition; a KeyError names both places otherwise."""
    path = spec_path(root, name) if root is not None and name else None
    if path is not None and path.is_file():
        try:
            spec = BenchmarkSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"benchmark spec {path} is unreadable ({type(exc).__name__}: {exc}); re-run the "
                "`oaml data import` (or `oaml data prepare`) that wrote it"
            ) from None
        if spec.name != name:
            raise ValueError(f"benchmark spec {path} describes {spec.name!r}, not {name!r}")
        return spec
    if name in BENCHMARKS:
        return BENCHMARKS.get(name)
    where = f"no {path} and " if path is not None else "no --data-root given and "
    raise KeyError(
        f"unknown benchmark {name!r}: {where}it is not built in ({', '.join(BENCHMARKS)}); "
        f"import your images with `oaml data import --from FOLDER --name {name} --root DATA` "
        "and pass --data-root DATA"
    )
