"""Image sources for feature extraction: folders, CSV files, WebDatasets, built-in shapes.

Every source resolves to an :class:`ImageSource`: per split (``train``/``val``/``test``) a
deterministically ordered list of :class:`ImageRecord` s, plus one class list shared by
all splits. Images are decoded later, lazily, by :func:`load_image` (map-style sources) or
:func:`iter_wds_images` (WebDatasets, which are streamed rather than indexed).

The embedded default dataset, ``shapes`` (drawn by :mod:`loffdata.extract.shapes`), needs
no files and no network: image ``i`` of a split is ``shapes://<seed>/<split>/<i>``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from PIL import Image

from loffdata.errors import LoffError
from loffdata.extract.shapes import SHAPES_CLASSES, render_shape

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "SHAPES_CLASSES",
    "ImageRecord",
    "ImageSource",
    "BadImageError",
    "make_key",
    "folder_source",
    "csv_source",
    "wds_source",
    "shapes_source",
    "open_source",
    "load_image",
    "decode_image",
    "render_shape",
    "iter_wds_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
_WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class BadImageError(LoffError, ValueError):
    """An image could not be read or decoded.

    Attributes:
        path: where the image came from (path, URL or ``url#key``).
    """

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot read image {path!r}: {reason}")

    def __reduce__(self):
        return (BadImageError, (self.path, self.reason))


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    Attributes:
        key: sample key in the shards (unique within the split).
        label: integer label, or ``None`` when unlabelled.
        path: local path, fsspec URL, ``shapes://<split>/<i>`` or ``<tar url>#<key>``.
    """

    key: str
    label: int | None
    path: str


@dataclass
class ImageSource:
    """Resolved input: records per split and the shared class list.

    Attributes:
        splits: split name -> records in extraction order.
        classes: class names indexed by label, shared by all splits (``None`` if unknown).
        kind: ``"folder"``, ``"csv"``, ``"wds"`` or ``"shapes"``.
        info: a JSON-able description, stored as the manifest's ``source``.
        wds_urls: split -> shard URLs, for WebDataset sources (streamed, not indexed).
        storage_options: fsspec options for reading image files.
    """

    splits: dict[str, list[ImageRecord]]
    classes: list[str] | None
    kind: str
    info: dict[str, Any] = field(default_factory=dict)
    wds_urls: dict[str, list[str]] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)


def make_key(index: int, path: str) -> str:
    """A valid, unique sample key: the index plus a sanitized file stem."""
    stem = os.path.splitext(path.rstrip("/").rsplit("/", 1)[-1])[0]
    stem = _UNSAFE_KEY_CHARS.sub("_", stem).strip("_")[:60]
    return f"{index:08d}_{stem}" if stem else f"{index:08d}"


def _records(items: list[tuple[str, int | None]]) -> list[ImageRecord]:
    return [ImageRecord(make_key(i, p), label, p) for i, (p, label) in enumerate(items)]


# --- image folders ----------------------------------------------------------------------


def folder_source(root: str, **storage_options: Any) -> ImageSource:
    """An image folder: ``root/<class>/*.jpg`` or ``root/<split>/<class>/*.jpg``.

    Split sub-folders (``train``, ``val``, ``test``) are used when present; otherwise the
    whole folder is the ``train`` split. Classes are the sorted union of class folder names.
    """
    fs, base = fsspec.core.url_to_fs(str(root), **storage_options)
    base = base.rstrip("/")
    if not fs.isdir(base):
        raise LoffError(f"image folder {root!r} does not exist or is not a directory")
    split_dirs = {s: f"{base}/{s}" for s in SPLITS if fs.isdir(f"{base}/{s}")}
    split_dirs = split_dirs or {"train": base}
    listed = {s: _list_class_images(fs, d) for s, d in split_dirs.items()}
    classes = sorted({c for per_class in listed.values() for c in per_class})
    if not classes:
        raise LoffError(f"image folder {root!r} has no class sub-folders with images")
    index = {c: i for i, c in enumerate(classes)}
    protocol = _protocol_prefix(fs, str(root))
    splits = {
        s: _records([(protocol + p, index[c]) for c in sorted(per_class) for p in per_class[c]])
        for s, per_class in listed.items()
        if per_class  # an empty split folder is no split
    }
    return ImageSource(
        splits,
        classes,
        "folder",
        {"kind": "folder", "root": str(root)},
        storage_options=storage_options,
    )


def _list_class_images(fs: Any, folder: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in sorted(fs.ls(folder, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or not fs.isdir(entry):
            continue
        files = [f for f in sorted(fs.find(entry)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if files:
            out[name] = files
    return out


def _protocol_prefix(fs: Any, url: str) -> str:
    return "" if "://" not in url else url.split("://", 1)[0] + "://"


# --- CSV --------------------------------------------------------------------------------


def csv_source(path: str, **storage_options: Any) -> ImageSource:
    """A CSV file with a header naming ``path``, ``label`` and optionally ``split`` columns.

    Relative image paths are resolved against the CSV's folder. Labels that are all
    integers are used as they are (no class names); otherwise the sorted distinct label
    strings become the classes. Without a ``split`` column everything is ``train``.
    """
    with fsspec.open(str(path), "r", newline="", **storage_options) as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise LoffError(
            f"CSV {path!r} needs a header with 'path' and 'label' columns (and optionally 'split')"
        )
    labels, classes = _csv_labels([r["label"] for r in rows], path)
    folder = str(path).rsplit("/", 1)[0] if "/" in str(path) else "."
    items: dict[str, list[tuple[str, int | None]]] = {}
    for line, (row, label) in enumerate(zip(rows, labels), start=2):
        split = (row.get("split") or "train").strip()
        if split not in SPLITS:
            raise LoffError(f"CSV {path!r} line {line}: split {split!r} is not one of {SPLITS}")
        items.setdefault(split, []).append((_resolve(folder, row["path"].strip()), label))
    splits = {s: _records(v) for s, v in items.items()}
    return ImageSource(
        splits, classes, "csv", {"kind": "csv", "csv": str(path)}, storage_options=storage_options
    )


def _csv_labels(raw: list[str], path: str) -> tuple[list[int | None], list[str] | None]:
    values = [r.strip() if r is not None else "" for r in raw]
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return [int(v) for v in values], None
    if any(v == "" for v in values):
        raise LoffError(f"CSV {path!r} has rows with an empty label")
    classes = sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return [index[v] for v in values], classes


def _resolve(folder: str, p: str) -> str:
    if "://" in p or os.path.isabs(p):
        return p
    return f"{folder}/{p}"


# --- WebDataset -------------------------------------------------------------------------


def wds_source(urls: str | list[str] | Mapping[str, Any]) -> ImageSource:
    """A WebDataset of images (``jpg``/``png``/``webp`` members plus an optional ``cls``).

    Args:
        urls: shard URL(s) or brace pattern for one ``train`` split, or a mapping from
            split name to URL(s). Local paths and URLs; ``pipe:`` URLs are refused.

    The shards are read once here to list keys and labels; extraction streams them again.
    """
    per_split = dict(urls) if isinstance(urls, Mapping) else {"train": urls}
    wds_urls = {s: _expand_urls(u) for s, u in per_split.items()}
    splits = {s: _list_wds(u) for s, u in wds_urls.items()}
    info = {"kind": "wds", "urls": {s: list(u) for s, u in wds_urls.items()}}
    return ImageSource(splits, None, "wds", info, wds_urls=wds_urls)


def _expand_urls(urls: str | list[str]) -> list[str]:
    import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    out = [u for item in items for u in braceexpand.braceexpand(str(item))]
    for u in out:
        if u.startswith("pipe:"):
            raise LoffError(f"pipe: URLs are not supported (got {u!r}); use a path or URL")
    if not out:
        raise LoffError("no WebDataset shard URLs given")
    return out


def _wds_samples(urls: list[str]) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    ds = wds.WebDataset(
        urls, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None
    )
    yield from ds


def _list_wds(urls: list[str]) -> list[ImageRecord]:
    records = []
    for i, sample in enumerate(_wds_samples(urls)):
        path = f"{sample.get('__url__', '')}#{sample['__key__']}"
        records.append(ImageRecord(make_key(i, sample["__key__"]), _wds_label(sample, path), path))
    return records


def _wds_label(sample: Mapping[str, Any], path: str) -> int | None:
    raw = sample.get("cls")
    if raw is None:
        return None
    try:
        return int(bytes(raw).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise LoffError(
            f"WebDataset sample {path!r}: 'cls' {bytes(raw)[:20]!r} is not an integer"
        ) from None


def iter_wds_images(urls: list[str]) -> Iterator[tuple[int, str, bytes | None]]:
    """Streams ``(index, path, image bytes or None)`` of a WebDataset, in order."""
    for i, sample in enumerate(_wds_samples(urls)):
        data = next((sample[k] for k in _WDS_IMAGE_KEYS if k in sample), None)
        yield i, f"{sample.get('__url__', '')}#{sample['__key__']}", data


# --- the embedded default: shapes -------------------------------------------------------


def shapes_source(
    *, train: int = 1000, val: int = 200, test: int = 0, seed: int = 0
) -> ImageSource:
    """The embedded default dataset: 10 classes of procedurally drawn shapes and textures.

    Labels cycle through the classes (``label = i % 10``); pixels come from
    :func:`render_shape` on demand. Images are 64 to 256 px square.
    """
    counts = {"train": train, "val": val, "test": test}
    splits = {
        s: [
            ImageRecord(f"{i:08d}", i % len(SHAPES_CLASSES), f"shapes://{seed}/{s}/{i}")
            for i in range(n)
        ]
        for s, n in counts.items()
        if n > 0
    }
    info = {"kind": "shapes", "seed": seed, **{s: n for s, n in counts.items() if n > 0}}
    return ImageSource(splits, list(SHAPES_CLASSES), "shapes", info)


# --- opening and decoding ----------------------------------------------------------------


def decode_image(data: bytes, path: str) -> Image.Image:
    """Decodes image bytes fully to RGB; raises :class:`BadImageError` naming ``path``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Exception as err:  # PIL raises many unrelated types for corrupt data
        raise BadImageError(path, _reason(err)) from None


def _reason(err: BaseException) -> str:
    """A skip reason as text: PIL's messages name an in-memory buffer, not the file."""
    if type(err).__name__ == "UnidentifiedImageError":
        return "not an image PIL can read (unknown or corrupt format)"
    text = _BUFFER_REPR.sub("the image data", str(err))
    return f"{type(err).__name__}: {text}"


def load_image(path: str, **storage_options: Any) -> Image.Image:
    """Loads one image as RGB: a file, an fsspec URL or a ``shapes://`` reference."""
    if path.startswith("shapes://"):
        return _load_shape(path)
    try:
        with fsspec.open(path, "rb", **storage_options) as f:
            data = f.read()
    except Exception as err:  # missing file, permission, network
        raise BadImageError(path, _reason(err)) from None
    return decode_image(data, path)


def _load_shape(path: str) -> Image.Image:
    try:
        seed, split, index = path[len("shapes://") :].split("/")
        i = int(index)
        return render_shape(i % len(SHAPES_CLASSES), seed=int(seed), split=split, index=i)
    except ValueError:
        raise BadImageError(
            path, "malformed shapes:// reference (want shapes://<seed>/<split>/<i>)"
        ) from None


def open_source(
    input: Any = None,
    *,
    kind: str = "auto",
    shapes_counts: Mapping[str, int] | None = None,
    seed: int = 0,
    storage_options: Mapping[str, Any] | None = None,
) -> ImageSource:
    """Resolves an input to an :class:`ImageSource`.

    Args:
        input: folder, CSV file, WebDataset URL(s) / brace pattern / ``{split: urls}``,
            or ``None`` for the embedded ``shapes`` dataset.
        kind: ``"auto"`` (by the input's form), ``"folder"``, ``"csv"``, ``"wds"``, ``"shapes"``.
        shapes_counts: images per split for ``shapes``; splits not named get none
            (default: 1000 train + 200 val).
        seed: seed of the ``shapes`` dataset.
        storage_options: fsspec options for folders and CSV files.
    """
    kind = _guess_kind(input) if kind == "auto" else kind
    opts = dict(storage_options or {})
    if kind == "shapes":
        counts = {"train": 0, "val": 0, "test": 0, **shapes_counts} if shapes_counts else {}
        return shapes_source(seed=seed, **counts)
    if kind == "folder":
        return folder_source(str(input), **opts)
    if kind == "csv":
        return csv_source(str(input), **opts)
    if kind == "wds":
        return wds_source(input)
    raise LoffError(f"unknown input kind {kind!r}; use folder, csv, wds or shapes")


def _guess_kind(input: Any) -> str:
    if input is None or input == "shapes":
        return "shapes"
    if isinstance(input, (list, tuple, Mapping)):
        return "wds"
    text = str(input)
    if text.lower().endswith(".csv"):
        return "csv"
    if text.endswith(".tar") or "{" in text or text.startswith("pipe:"):
        return "wds"
    return "folder"
