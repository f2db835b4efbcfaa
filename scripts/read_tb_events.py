#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own loader (EventAccumulator,
which checks every record's CRC) and prints what it found as JSON: scalars by tag, text
events by tag, images by tag (size and PNG signature check). Used by tests/it/tensorboard.rs.

Usage: read_tb_events.py RUN_DIR/tb
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(path):
    acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "text": {}, "images": {}}
    for tag in tags["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags["tensors"]:
        texts = []
        for e in acc.Tensors(tag):
            texts.append([e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")])
        out["text"][tag] = texts
    for tag in tags["images"]:
        out["images"][tag] = [
            [e.step, e.width, e.height, e.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"]
            for e in acc.Images(tag)
        ]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
