"""Writes tests/fixtures/official_run_bad/: checkpoints of the official run fixture
(tests/fixtures/official_run, make_official_run_fixture.py) changed the ways a real run's files
go wrong, for `dinoscope watch`'s bad-input tests (issue 30). Needs only the standard library and
numpy (no torch): the zip is rewritten entry by entry and the pickle is read with stub classes.

    python3 scripts/make_bad_official_run_fixture.py

- checkpoint_f16.pth: every float storage as float16 (`torch.HalfStorage`), as a run saved after
  `model.half()` or an fp16 export; `attention` converts such weights to f32.
- checkpoint_nan_teacher.pth: the teacher's `pos_embed` all NaN (a diverged run's last save).
- checkpoint_nan_center.pth: `dino_loss.center` with one NaN.
- checkpoint_nan_args.pth: the pickled `args.teacher_temp` NaN (the weights as they are).
"""

import argparse
import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

SOURCE = Path("tests/fixtures/official_run/checkpoint0000.pth")
OUT = Path("tests/fixtures/official_run_bad")


class Tensor:
    """What `torch._utils._rebuild_tensor_v2` would build: where its values are."""

    def __init__(self, storage, offset, size, *rest):
        self.storage, self.offset, self.size = storage, offset, size


class Stub:
    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class Reader(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return Tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        if module == "torch" and name.endswith("Storage"):
            return name
        return Stub

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        return pid[2]


def entries(path):
    with zipfile.ZipFile(path) as z:
        return [(info, z.read(info)) for info in z.infolist()]


def write(path, items):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for info, data in items:
            z.writestr(info, data)


def storages_of(items):
    """The pickle's tensors by name (`teacher.backbone.pos_embed`, `dino_loss.center`)."""
    pkl = next(data for info, data in items if info.filename.endswith("data.pkl"))
    root = Reader(io.BytesIO(pkl)).load()
    found = {}
    for section in ("student", "teacher", "dino_loss"):
        for key, value in root[section].items():
            if isinstance(value, Tensor):
                found[f"{section}.{key}"] = value
    return found


def with_storage(items, key, change):
    out = []
    for info, data in items:
        if info.filename.endswith(f"/data/{key}"):
            values = np.frombuffer(data, dtype="<f4").copy()
            change(values)
            data = values.astype("<f4").tobytes()
        out.append((info, data))
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    items = entries(SOURCE)
    tensors = storages_of(items)

    half = []
    for info, data in items:
        name = info.filename
        if name.endswith("data.pkl"):
            assert data.count(b"ctorch\nFloatStorage\n") == 1, "one memoised storage class"
            data = data.replace(b"ctorch\nFloatStorage\n", b"ctorch\nHalfStorage\n")
        elif "/data/" in name:
            data = np.frombuffer(data, dtype="<f4").astype("<f2").tobytes()
        half.append((info, data))
    write(OUT / "checkpoint_f16.pth", half)

    pos = tensors["teacher.backbone.pos_embed"]
    write(OUT / "checkpoint_nan_teacher.pth",
          with_storage(items, pos.storage, lambda v: v.__setitem__(slice(None), np.nan)))
    center = tensors["dino_loss.center"]
    write(OUT / "checkpoint_nan_center.pth",
          with_storage(items, center.storage, lambda v: v.__setitem__(center.offset + 3, np.nan)))

    nan_args = []
    for info, data in items:
        if info.filename.endswith("data.pkl"):
            key = b"X\x0c\x00\x00\x00teacher_temp"
            at = data.index(key) + len(key)
            # A memo put (q + 1 byte or r + 4 bytes), then BINFLOAT (G + 8 bytes, big-endian).
            at += {ord("q"): 2, ord("r"): 5}.get(data[at], 0)
            assert data[at] == ord("G"), data[at - 8:at + 9]
            data = data[:at + 1] + struct.pack(">d", float("nan")) + data[at + 9:]
        nan_args.append((info, data))
    write(OUT / "checkpoint_nan_args.pth", nan_args)


if __name__ == "__main__":
    main()
