"""Writing one split of a dataset in three forms at once: image folder, CSV, tar shards.

Output is byte-for-byte deterministic: tar members carry fixed metadata (mtime 0,
uid/gid 0, mode 644, USTAR format), JSON is written with sorted keys, and rows and
shards follow the order samples are added in.

Layout of a split folder:
    <class folder>/<id>.jpg     image folder (class folders listed in classes.txt)
    classes.txt                 "folder<TAB>readable name" per class, in label order
    captions.csv                filepath,caption,label (filepath relative to the CSV)
    shards/00000.tar ...        webdataset shards: <id>.jpg, <id>.txt, <id>.json, <id>.cls
    shards/sizes.json           {shard file name: sample count}
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from typing import Any

from PIL import Image

CSV_NAME = "captions.csv"
SHARD_FOLDER = "shards"


def encode_image(image: Image.Image, image_format: str) -> bytes:
    """JPEG (quality 90) or PNG bytes of `image`."""
    buffer = io.BytesIO()
    if image_format == "jpg":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _add_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(payload))


class SplitWriter:
    """Accumulates one split's samples into folder, CSV and shards (see module docstring)."""

    def __init__(self, root: str, classes: list[tuple[str, str]], samples_per_shard: int, image_format: str) -> None:
        self.root = root
        self.classes = classes
        self.samples_per_shard = samples_per_shard
        self.image_format = image_format
        os.makedirs(os.path.join(root, SHARD_FOLDER))
        for folder, _ in classes:
            os.makedirs(os.path.join(root, folder))
        with open(os.path.join(root, "classes.txt"), "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(f"{folder}\t{readable}\n" for folder, readable in classes)
        self._csv_file = open(os.path.join(root, CSV_NAME), "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file, lineterminator="\n")
        self._csv.writerow(["filepath", "caption", "label"])
        self._shard: tarfile.TarFile | None = None
        self._shard_name = ""
        self.shard_sizes: dict[str, int] = {}
        self.count = 0

    def _current_shard(self) -> tarfile.TarFile:
        if self._shard is None or self.count % self.samples_per_shard == 0:
            if self._shard is not None:
                self._shard.close()
            self._shard_name = f"{len(self.shard_sizes):05d}.tar"
            path = os.path.join(self.root, SHARD_FOLDER, self._shard_name)
            self._shard = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
            self.shard_sizes[self._shard_name] = 0
        return self._shard

    def add(self, label: int, image: bytes, caption: str, captions: dict[str, str]) -> None:
        """Write sample number `self.count` of class `label` in all three forms."""
        key = f"{self.count:06d}"
        folder = self.classes[label][0]
        relative = f"{folder}/{key}.{self.image_format}"
        with open(os.path.join(self.root, relative), "wb") as handle:
            handle.write(image)
        self._csv.writerow([relative, caption, label])
        shard = self._current_shard()
        _add_member(shard, f"{key}.{self.image_format}", image)
        _add_member(shard, f"{key}.txt", caption.encode("utf-8"))
        _add_member(shard, f"{key}.json", json.dumps(captions, sort_keys=True).encode("utf-8"))
        _add_member(shard, f"{key}.cls", str(label).encode("ascii"))
        self.shard_sizes[self._shard_name] += 1
        self.count += 1

    def close(self) -> dict[str, Any]:
        """Finish the files; returns this split's manifest entry (paths relative to `root`)."""
        if self._shard is not None:
            self._shard.close()
        self._csv_file.close()
        with open(os.path.join(self.root, SHARD_FOLDER, "sizes.json"), "w", encoding="utf-8") as handle:
            json.dump(self.shard_sizes, handle, indent=1, sort_keys=True)
        last = len(self.shard_sizes) - 1
        return {
            "count": self.count,
            "folder": ".",
            "csv": CSV_NAME,
            "classes": "classes.txt",
            "shards": f"{SHARD_FOLDER}/{{00000..{last:05d}}}.tar" if last > 0 else f"{SHARD_FOLDER}/00000.tar",
            "shard_sizes": dict(self.shard_sizes),
        }
