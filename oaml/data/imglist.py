"""OpenOOD imglist files and the dataset that reads them.

Each line is `<relative path> <label>`; the path may contain spaces, so the line is split on its
last space (OpenOOD splits on the first, which breaks such paths). Blank lines and lines starting
with `#` are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from oaml.imaging import convert_mode


class ImglistError(ValueError):
    """A malformed imglist or a missing image; the message names the file and line."""


@dataclass(frozen=True)
class ImglistEntry:
    path: str
    label: int


def parse_imglist(imglist: str | Path) -> list[ImglistEntry]:
    """Parse an imglist file into entries, with errors that name the file and line."""
    imglist = Path(imglist)
    if not imglist.is_file():
        raise ImglistError(f"imglist {imglist} does not exist")
    entries = []
    for number, raw in enumerate(imglist.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, label = line.rpartition(" ")
        if not sep or not path.strip():
            raise ImglistError(f"{imglist}:{number}: expected '<path> <label>', got {raw!r}")
        try:
            value = int(label)
        except ValueError:
            raise ImglistError(
                f"{imglist}:{number}: label {label!r} is not an integer (line {raw!r})"
            ) from None
        entries.append(ImglistEntry(path.strip(), value))
    return entries


def hash_file_stats(digest: Any, image_root: Path, entries: list[ImglistEntry]) -> None:
    """Feed `digest` (a hashlib object) each listed file's path, size and modification time:
    rsync's quick check, the key of what was derived from or checked on these files."""
    for entry in entries:
        stat = (image_root / entry.path).stat()
        digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())


def format_imglist(entries: list[ImglistEntry]) -> str:
    """The text of an imglist for `entries` (written atomically by the caller)."""
    return "".join(f"{e.path} {e.label}\n" for e in entries)


def load_image(path: Path, mode: str) -> Image.Image:
    """Open an image and convert it to `mode` ('L' or 'RGB'), with a clear error if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return convert_mode(img, mode)
    except FileNotFoundError:
        raise ImglistError(f"image {path} does not exist") from None
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ImglistError(f"image {path} cannot be read: {exc}") from None


class ImglistDataset:
    """A map-style dataset over an imglist: returns `(transform(image), label)`."""

    def __init__(
        self,
        imglist: str | Path,
        image_root: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        mode: str = "L",
        entries: list[ImglistEntry] | None = None,
        check_files: bool = True,
    ) -> None:
        self.imglist = Path(imglist)
        self.image_root = Path(image_root)
        self.entries = entries if entries is not None else parse_imglist(self.imglist)
        self.transform = transform
        self.mode = mode
        if check_files:
            self._check_files()

    def _check_files(self) -> None:
        missing = [e.path for e in self.entries if not (self.image_root / e.path).is_file()]
        if missing:
            shown = ", ".join(repr(p) for p in missing[:3])
            raise ImglistError(
                f"{len(missing)} of {len(self.entries)} images listed in {self.imglist} are "
                f"missing under {self.image_root} (e.g. {shown}); check --data-root or "
                "re-run `oaml data prepare`"
            )

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        entry = self.entries[index]
        image = load_image(self.image_root / entry.path, self.mode)
        return (self.transform(image) if self.transform else image), entry.label
