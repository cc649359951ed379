"""Writing one split of a dataset in three forms at once: image folder, CSV, tar shards.

Output is byte-for-byte deterministic: tar members carry fixed metadata (mtime 0,
uid/gid 0, mode 644, USTAR format), JSON is written with sorted keys, and rows and
shards follow the order samples are added in. Every file is written through
`dalip.atomic`: a shard or the CSV appears only once complete (images without an fsync
each: a crash means writing the dataset again).

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

from dalip.atomic import AtomicFile, naming_failures, write_bytes, write_json

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

    def __init__(
        self, root: str, classes: list[tuple[str, str]], samples_per_shard: int, image_format: str
    ) -> None:
        self.root = root
        self.classes = classes
        self.samples_per_shard = samples_per_shard
        self.image_format = image_format
        os.makedirs(os.path.join(root, SHARD_FOLDER), exist_ok=True)  # a --force rerun may find them
        for folder, _ in classes:
            os.makedirs(os.path.join(root, folder), exist_ok=True)
        with AtomicFile(os.path.join(root, "classes.txt"), "w", newline="\n") as listing:
            listing.handle.writelines(f"{folder}\t{readable}\n" for folder, readable in classes)
        self._csv_file = AtomicFile(os.path.join(root, CSV_NAME), "w", newline="")
        self._csv = csv.writer(self._csv_file.handle, lineterminator="\n")
        self._csv.writerow(["filepath", "caption", "label"])
        self._shard: tarfile.TarFile | None = None
        self._shard_file: AtomicFile | None = None
        self._shard_name = ""
        self.shard_sizes: dict[str, int] = {}
        self.count = 0

    def _current_shard(self) -> tarfile.TarFile:
        if self._shard is None or self.count % self.samples_per_shard == 0:
            self._finish_shard()
            self._shard_name = f"{len(self.shard_sizes):05d}.tar"
            self._shard_file = AtomicFile(os.path.join(self.root, SHARD_FOLDER, self._shard_name), "wb")
            self._shard = tarfile.open(  # noqa: SIM115 (open across samples; _finish_shard closes it)
                fileobj=self._shard_file.handle, mode="w", format=tarfile.USTAR_FORMAT
            )
            self.shard_sizes[self._shard_name] = 0
        return self._shard

    def _finish_shard(self) -> None:
        if self._shard is not None and self._shard_file is not None:
            self._shard.close()  # the end-of-archive blocks; the file itself is ours to publish
            self._shard_file.commit()
            self._shard, self._shard_file = None, None

    @staticmethod
    def planned(
        classes: list[tuple[str, str]], labels: list[int], samples_per_shard: int, image_format: str
    ) -> list[str]:
        """Every file (relative to the split folder) that writing samples of `labels`, in
        this order, makes: announced in the output manifest before the first is written."""
        shards = -(-len(labels) // samples_per_shard)
        images = [f"{classes[label][0]}/{count:06d}.{image_format}" for count, label in enumerate(labels)]
        tars = [f"{SHARD_FOLDER}/{index:05d}.tar" for index in range(shards)]
        return ["classes.txt", CSV_NAME, f"{SHARD_FOLDER}/sizes.json", *tars, *images]

    def add(self, label: int, image: bytes, caption: str, captions: dict[str, str]) -> None:
        """Write sample number `self.count` of class `label` in all three forms."""
        key = f"{self.count:06d}"
        folder = self.classes[label][0]
        relative = f"{folder}/{key}.{self.image_format}"
        write_bytes(os.path.join(self.root, relative), image, durable=False)
        with naming_failures(os.path.join(self.root, CSV_NAME)):
            self._csv.writerow([relative, caption, label])
        shard = self._current_shard()
        with naming_failures(os.path.join(self.root, SHARD_FOLDER, self._shard_name)):
            _add_member(shard, f"{key}.{self.image_format}", image)
            _add_member(shard, f"{key}.txt", caption.encode("utf-8"))
            _add_member(shard, f"{key}.json", json.dumps(captions, sort_keys=True).encode("utf-8"))
            _add_member(shard, f"{key}.cls", str(label).encode("ascii"))
        self.shard_sizes[self._shard_name] += 1
        self.count += 1

    def abort(self) -> None:
        """Remove the files still being written (the CSV, the open shard): a failed run
        leaves no temporary file."""
        self._csv_file.discard()
        if self._shard_file is not None:
            self._shard_file.discard()

    def close(self) -> dict[str, Any]:
        """Finish the files; returns this split's manifest entry (paths relative to `root`)."""
        self._finish_shard()
        self._csv_file.commit()
        write_json(
            os.path.join(self.root, SHARD_FOLDER, "sizes.json"),
            dict(sorted(self.shard_sizes.items())),
            indent=1,
        )
        last = len(self.shard_sizes) - 1
        return {
            "count": self.count,
            "folder": ".",
            "csv": CSV_NAME,
            "classes": "classes.txt",
            "shards": f"{SHARD_FOLDER}/{{00000..{last:05d}}}.tar"
            if last > 0
            else f"{SHARD_FOLDER}/00000.tar",
            "shard_sizes": dict(self.shard_sizes),
        }
