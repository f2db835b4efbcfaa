"""Writes tests/fixtures/official_vit/backbone_f16.pth: backbone.pth as `.half()` would save
it (every FloatStorage a HalfStorage, each value rounded to float16), for the half-precision
loading test in tests/it/bad_input.rs. Python standard library only, no torch:

    python3 scripts/make_half_fixture.py

A torch zip checkpoint is `<name>/data.pkl` (the pickled state dict, whose storages are
persistent ids naming a storage class and a file `<name>/data/<key>`) plus one raw
little-endian file per storage. Converting means renaming the storage class in the pickle
(protocol 2 GLOBAL opcodes are newline-terminated text, so the length change is harmless) and
re-encoding each data file; element counts, shapes and strides stay the same.
"""

import struct
import zipfile
from pathlib import Path

SOURCE = Path("tests/fixtures/official_vit/backbone.pth")
TARGET = Path("tests/fixtures/official_vit/backbone_f16.pth")


def main():
    with zipfile.ZipFile(SOURCE) as src, zipfile.ZipFile(TARGET, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                old, new = b"ctorch\nFloatStorage\n", b"ctorch\nHalfStorage\n"
                assert old in data, "backbone.pth has no FloatStorage"
                data = data.replace(old, new)
            elif "/data/" in info.filename:
                count = len(data) // 4
                values = struct.unpack(f"<{count}f", data)
                data = struct.pack(f"<{count}e", *values)
            dst.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
