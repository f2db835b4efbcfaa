"""Issue 30's bad-input campaign: the features added since the first reliability suite
(`watch`, `ablate`, the attention layers, `plot --soak`, the app's flags checked before its
window) fed inputs a user or a cluster run really produces, crafted from the official code's
formats (main_dino.py's checkpoint zip and pickled args, log.txt, the probe .npy). Standard
library and numpy only; needs a release build.

    python3 scripts/campaign-30.py [BINARY]     # prints one line per case and the counts

Each case says what a good answer is: an error (status 2, the message naming the input) or
success. It is counted good when it is that; bad on a panic (status 101 or "panicked"), on
status 0 where an error was due, or on a row of NaN; weak otherwise (another status, or a
message that does not name the input).
"""

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/release/dinoscope"
RUN = ROOT / "tests/fixtures/official_run"
BAD = ROOT / "tests/fixtures/official_run_bad"
VIT = ROOT / "tests/fixtures/official_vit"
SETTINGS = ["--heads", "2", "--global-crop", "16", "--local-crop", "8", "--local-crops", "2"]


def official_run(root, checkpoint=RUN / "checkpoint0000.pth", name="checkpoint0000.pth"):
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        shutil.copy(checkpoint, run / name)
    for f in ["log.txt", "probe_globals.npy", "probe_locals.npy"]:
        shutil.copy(RUN / f, run / f)
    return run


def rewrite_pickle(src, dst, change):
    """The checkpoint zip with its data.pkl bytes changed (the tensors as they are)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith("data.pkl"):
                data = change(data)
            out.writestr(info, data)


def set_arg_float(key, value):
    def change(data):
        tag = b"X" + struct.pack("<I", len(key)) + key.encode()
        at = data.index(tag) + len(tag)
        at += {ord("q"): 2, ord("r"): 5}.get(data[at], 0)
        if data[at] == ord("G"):
            return data[:at + 1] + struct.pack(">d", value) + data[at + 9:]
        if data[at] == ord("K"):  # BININT1: one byte; a float needs 8 more
            return data[:at] + b"G" + struct.pack(">d", value) + data[at + 2:]
        raise ValueError(f"{key}: opcode {data[at]}")
    return change


def set_arg_int(key, value):
    def change(data):
        tag = b"X" + struct.pack("<I", len(key)) + key.encode()
        at = data.index(tag) + len(tag)
        at += {ord("q"): 2, ord("r"): 5}.get(data[at], 0)
        width = {ord("K"): 2, ord("M"): 3, ord("J"): 5, ord("G"): 9}[data[at]]
        return data[:at] + b"J" + struct.pack("<i", value) + data[at + width:]
    return change


def npy(path, shape, value=0.1, dtype="<f4"):
    np.save(path, np.full(shape, value, dtype=dtype))


def watch(run, *extra, settings=SETTINGS, probe=True):
    args = ["watch", str(run), "--once", *settings]
    if probe:
        args += ["--probe", str(run)]
    return args + list(extra)


CASES = []


def case(name, expect, named=()):
    def register(setup):
        CASES.append((name, expect, named, setup))
        return setup
    return register


# --- watch: flags ----------------------------------------------------------------------
for flag, value, ok in [
    ("--teacher-temp", "0", False), ("--teacher-temp", "-1", False), ("--teacher-temp", "1.5", False),
    ("--teacher-temp", "NaN", False), ("--teacher-temp", "inf", False), ("--teacher-temp", "1e-5", False),
    ("--teacher-temp", "0.04", True), ("--momentum-teacher", "-0.1", False),
    ("--momentum-teacher", "1.1", False), ("--momentum-teacher", "NaN", False),
    ("--momentum-teacher", "0", True), ("--warmup-teacher-temp", "0", False),
    ("--warmup-teacher-temp", "2", False), ("--warmup-teacher-temp-epochs", "200000", False),
    ("--warmup-teacher-temp-epochs", "0", True), ("--local-crops", "17", False),
    ("--local-crops", "5000", False), ("--local-crops", "0", True), ("--global-crop", "0", False),
    ("--global-crop", "4", False), ("--global-crop", "18", False), ("--global-crop", "2000", False),
    ("--global-crop", "32", True), ("--local-crop", "0", False), ("--local-crop", "2", False),
    ("--local-crop", "6", False), ("--local-crop", "32", False), ("--heads", "0", False),
    ("--heads", "3", False), ("--heads", "200", False), ("--poll-secs", "0", False),
    ("--poll-secs", "-1", False), ("--poll-secs", "1e300", False), ("--poll-secs", "NaN", False),
    ("--poll-secs", "0.05", False), ("--poll-secs", "2", True),
]:
    def setup(root, flag=flag, value=value):
        run = official_run(root)
        settings = [a for i, a in enumerate(SETTINGS)
                    if flag not in (SETTINGS[i], SETTINGS[i - 1] if i else None)]
        return watch(run, f"{flag}={value}", settings=settings)
    named = () if ok else (flag,)
    case(f"watch {flag} {value}", "ok" if ok else "error", named)(setup)


@case("watch --knn-train alone", "error", ("--knn-val",))
def _(root):
    return watch(official_run(root), "--knn-train", str(root))


@case("watch --knn-train missing folder", "error", ("missing",))
def _(root):
    return watch(official_run(root), "--knn-train", str(root / "missing"), "--knn-val", str(root))


@case("watch --image missing", "error", ("nope.png",))
def _(root):
    return watch(official_run(root), "--image", str(root / "nope.png"))


@case("watch --image text", "error", ("text.png",))
def _(root):
    (root / "text.png").write_text("not an image")
    return watch(official_run(root), "--image", str(root / "text.png"))


@case("watch --out inside the run", "error", ("inside the watched folder",))
def _(root):
    run = official_run(root)
    return watch(run, "--out", str(run / "x"))


@case("watch --out the run itself", "error", ("inside the watched folder",))
def _(root):
    run = official_run(root)
    return watch(run, "--out", str(run))


@case("watch --out a training run", "error", ("training run",))
def _(root):
    (root / "t/checkpoint-00000002").mkdir(parents=True)
    return watch(official_run(root), "--out", str(root / "t"))


@case("watch --out a file", "error", ("out",))
def _(root):
    (root / "afile").write_text("x")
    return watch(official_run(root), "--out", str(root / "afile"))


@case("watch a missing folder", "error", ("missing",))
def _(root):
    return ["watch", str(root / "missing"), "--once"]


@case("watch a file", "error", ("log.txt",))
def _(root):
    return ["watch", str(official_run(root) / "log.txt"), "--once"]


@case("watch an empty folder", "error", ("not a run folder",))
def _(root):
    (root / "e").mkdir()
    return ["watch", str(root / "e"), "--once"]


@case("watch a dinoscope run", "error", ("dinoscope run folder",))
def _(root):
    (root / "d").mkdir()
    (root / "d/metrics.csv").write_text("step,epoch\n")
    (root / "d/config.toml").write_text("seed = 0\n")
    return ["watch", str(root / "d"), "--once"]


# --- watch: DIR.watch.toml --------------------------------------------------------------
for text, ok, named in [
    ("teacher_tmp = 0.07\n", False, "teacher_tmp"), ("teacher_temp = \n", False, "watch.toml"),
    ("teacher_temp = 0\n", False, "teacher_temp = 0"), ("momentum_teacher = 2\n", False, "momentum_teacher = 2"),
    ("local_crops = 99\n", False, "local_crops = 99"), ("global_crop_px = 0\n", False, "global_crop_px = 0"),
    ("heads = 0\n", False, "heads"), ("teacher_temp = \"hot\"\n", False, "watch.toml"),
    ("teacher_temp = 0.07\n", True, ""),
]:
    def setup(root, text=text):
        run = official_run(root)
        (root / "run.watch.toml").write_text(text)
        # Flags win over the file: only what the file does not set.
        return watch(run, settings=[] if "heads" in text else ["--heads", "2"])
    case(f"watch.toml {text.strip()}", "ok" if ok else "error", (named,) if named else ())(setup)


# --- watch: the pickled args -------------------------------------------------------------
for key, kind, value, named in [
    ("teacher_temp", "float", float("nan"), "teacher_temp"),
    ("teacher_temp", "float", 0.0, "teacher_temp"),
    ("momentum_teacher", "float", 1.5, "momentum_teacher"),
    ("warmup_teacher_temp", "float", float("inf"), "warmup_teacher_temp"),
    ("local_crops_number", "int", -1, "local_crops_number"),
    ("local_crops_number", "int", 5000, "local_crops_number"),
    ("warmup_teacher_temp_epochs", "float", 2.5, "warmup_teacher_temp_epochs"),
    ("warmup_teacher_temp_epochs", "int", -3, "warmup_teacher_temp_epochs"),
]:
    def setup(root, key=key, kind=kind, value=value):
        rewrite_pickle(RUN / "checkpoint0000.pth", root / "c.pth",
                       (set_arg_float if kind == "float" else set_arg_int)(key, value))
        run = official_run(root, root / "c.pth")
        return watch(run, settings=["--heads", "2", "--global-crop", "16", "--local-crop", "8"])
    case(f"args {key} = {value}", "error", (named, "args"))(setup)


# --- watch: checkpoints -----------------------------------------------------------------
def cut(fraction):
    def setup(root):
        run = official_run(root)
        path = run / "checkpoint0000.pth"
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return watch(run)
    return setup


for fraction in [0.0, 0.1, 0.5, 0.99]:
    case(f"checkpoint cut at {fraction:.0%}", "error", ("checkpoint0000.pth",))(cut(fraction))


@case("checkpoint of random bytes", "error", ("checkpoint0000.pth",))
def _(root):
    run = official_run(root)
    (run / "checkpoint0000.pth").write_bytes(os.urandom(5000))
    return watch(run)


@case("legacy (non-zip) pickle checkpoint", "error", ("checkpoint0000.pth",))
def _(root):
    run = official_run(root)
    (run / "checkpoint0000.pth").write_bytes(b"\x80\x02}q\x00." + b"\x00" * 100)
    return watch(run)


@case("zip without data.pkl", "error", ("checkpoint0000.pth",))
def _(root):
    run = official_run(root)
    with zipfile.ZipFile(run / "checkpoint0000.pth", "w") as z:
        z.writestr("archive/version", "3\n")
    return watch(run)


@case("symlink loop beside a good checkpoint", "ok", ())
def _(root):
    run = official_run(root)
    os.symlink("checkpoint0001.pth", run / "checkpoint0001.pth")
    return watch(run)


@case("dangling symlink beside a good checkpoint", "ok", ())
def _(root):
    run = official_run(root)
    os.symlink(root / "gone.pth", run / "checkpoint0001.pth")
    return watch(run)


@case("a folder named checkpoint0001.pth", "ok", ())
def _(root):
    run = official_run(root)
    (run / "checkpoint0001.pth").mkdir()
    return watch(run)


for name, named in [("checkpoint_f16.pth", None), ("checkpoint_nan_teacher.pth", "teacher.backbone.pos_embed"),
                    ("checkpoint_nan_center.pth", "dino_loss.center")]:
    def setup(root, name=name):
        return watch(official_run(root, BAD / name))
    case(f"official {name}", "ok" if named is None else "error", (named,) if named else ())(setup)


@case("a released backbone as checkpoint.pth", "error", ("checkpoint.pth",))
def _(root):
    return watch(official_run(root, VIT / "backbone.pth", "checkpoint.pth"))


# --- watch: the probe .npy ---------------------------------------------------------------
for shape, value, dtype, named in [
    ((6, 1, 16, 16), 0.1, "<f4", "1 channels"), ((6, 4, 16, 16), 0.1, "<f4", "4 channels"),
    ((6, 3, 16), 0.1, "<f4", "[N, 3, H, W]"), ((1, 6, 3, 16, 16), 0.1, "<f4", "[N, 3, H, W]"),
    ((5, 3, 16, 16), 0.1, "<f4", "5 global crops"), ((0, 3, 16, 16), 0.1, "<f4", "0 global crops"),
    ((6, 3, 16, 16), np.nan, "<f4", "not finite"), ((6, 3, 16, 16), np.inf, "<f4", "not finite"),
    ((6, 3, 16, 16), 1, "<i4", "probe_globals.npy"), ((6, 3, 2, 2), 0.1, "<f4", "patch size"),
    ((6, 3, 18, 18), 0.1, "<f4", "patch size"),
]:
    def setup(root, shape=shape, value=value, dtype=dtype):
        run = official_run(root)
        npy(run / "probe_globals.npy", shape, value, dtype)
        if shape[-1] in (2, 18):
            (run / "probe_locals.npy").unlink()
        return watch(run)
    case(f"probe_globals {shape} {value} {dtype}", "error", (named,))(setup)


@case("probe_globals float64 (converted)", "ok", ())
def _(root):
    run = official_run(root)
    g = np.load(RUN / "probe_globals.npy").astype("<f8")
    np.save(run / "probe_globals.npy", g)
    return watch(run)


for shape, named in [((5, 3, 8, 8), "5 local crops"), ((6, 1, 8, 8), "1 channels")]:
    def setup(root, shape=shape):
        run = official_run(root)
        npy(run / "probe_locals.npy", shape)
        return watch(run)
    case(f"probe_locals {shape}", "error", (named,))(setup)


@case("probe .npy header larger than its data", "error", ("probe_globals.npy",))
def _(root):
    run = official_run(root)
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 3, 16, 16), }"
    header += b" " * (118 - len(header)) + b"\n"
    (run / "probe_globals.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    return watch(run)


@case("--probe a flat folder", "ok", ())
def _(root):
    run = official_run(root)
    (root / "flat").mkdir()
    shutil.copy(VIT / "image.png", root / "flat/a.png")
    return watch(run, probe=False) + ["--probe", str(root / "flat")]


@case("--probe an empty folder", "error", ("--probe",))
def _(root):
    (root / "empty").mkdir()
    return watch(official_run(root), probe=False) + ["--probe", str(root / "empty")]


@case("--probe a missing folder", "error", ("--probe",))
def _(root):
    return watch(official_run(root), probe=False) + ["--probe", str(root / "missing")]


# --- watch: log.txt ----------------------------------------------------------------------
for name, content, expect in [
    ("non-UTF-8 byte", (RUN / "log.txt").read_bytes().replace(b"train_lr", b"train\xfflr", 1), "ok"),
    ("empty", b"", "ok"), ("binary garbage", os.urandom(300), "ok"),
    ("torn last line", (RUN / "log.txt").read_bytes()[:-20], "ok"),
    ("NaN values", b'{"train_loss": NaN, "train_lr": 0.1, "train_wd": 0.04, "epoch": 0}\n', "ok"),
    ("negative epoch", b'{"train_loss": 1.0, "epoch": -1}\n', "ok"),
    ("a 2 MB line", b'{"train_loss": 1.0, "x": "' + b"a" * 2_000_000 + b'", "epoch": 0}\n', "ok"),
]:
    def setup(root, content=content):
        run = official_run(root)
        (run / "log.txt").write_bytes(content)
        return watch(run)
    case(f"log.txt {name}", expect, ())(setup)


# --- ablate -------------------------------------------------------------------------------
MICRO = ["--set", "model.embed_dim=16", "--set", "model.depth=1", "--set", "model.num_heads=2",
         "--set", "dino.out_dim=32", "--set", "dino.hidden_dim=32", "--set", "dino.bottleneck_dim=16",
         "--set", "optim.batch_size_per_gpu=8", "--set", "data.num_images=64",
         "--set", "data.knn_every_epochs=0"]


def ablate(root, *extra):
    return ["ablate", "--device", "cpu", "--steps", "1", "--out", str(root / "study"), *MICRO, *extra]


for extra, named in [
    (["--only-given", "--variant", "study.md:dino.centering=false"], "study.md"),
    (["--only-given", "--variant", "a b:dino.centering=false"], "a b"),
    (["--only-given", "--variant", "a:dino.centering=false", "--variant", "a:dino.sharpening=false"], "twice"),
    (["--only-given", "--variant", "a:dino.nope=1"], "dino.nope"),
    (["--only-given", "--variant", "a:dino.teacher_temp=5"], "dino.teacher_temp"),
    (["--only-given", "--variant", "a:dino.teacher_temp"], "dino.teacher_temp"),
    (["--only-given"], "--variant"), (["--steps", "0"], "--steps"),
    (["--study", "nope"], "nope"),
    (["--only-given", "--variant", "big:dino.out_dim=262144,optim.batch_size_per_gpu=4096,data.num_images=4096"], "not enough memory"),
]:
    def setup(root, extra=extra):
        args = ablate(root, *extra)
        if "--steps" in extra:
            args.remove("--steps")
            args.remove("1")
        return args
    case(f"ablate {' '.join(extra)[:60]}", "error", (named,))(setup)


@case("ablate a bad study file", "error", ("bad.toml",))
def _(root):
    (root / "bad.toml").write_text("[[variant]\nname = 1\n")
    return ["ablate", "--study", str(root / "bad.toml"), "--out", str(root / "s")]


@case("ablate into an earlier study", "error", ("--force",))
def _(root):
    (root / "study/full").mkdir(parents=True)
    (root / "study/study.csv").write_text("variant\n")
    return ablate(root)


@case("ablate into /sys/fs", "error", ("cannot create",))
def _(root):
    return ["ablate", "--device", "cpu", "--steps", "1", "--only-given", "--variant", "a:dino.centering=false",
            "--out", "/sys/fs", *MICRO]


# --- attention layers ---------------------------------------------------------------------
def attention(*extra):
    return ["attention", "--heads", "3", "--weights", str(VIT / "backbone.pth"), "--image", str(VIT / "image.png"),
            "--size", "56x40", *extra]


for extra, named in [
    (["--layer", "99"], "--layer"), (["--layer", "-1"], "--layer"), (["--layer", "abc"], "--layer"),
    (["--rollout", "--discard", "1.5"], "--discard 1.5"), (["--rollout", "--discard", "-0.1"], "--discard"),
    (["--rollout", "--discard", "1"], "--discard 1"),
    (["--similarity", "x"], "--similarity"), (["--similarity", "1,2,3"], "--similarity"),
    (["--similarity", "9999,9999"], "--similarity"), (["--all-checkpoints"], "checkpoint"),
    (["--all-checkpoints", "--rollout"], "--rollout"), (["--threshold", "NaN"], "--threshold"),
]:
    def setup(root, extra=extra):
        return attention(*extra) + ["--out", str(root / "a")]
    case(f"attention {' '.join(extra)}", "error", (named,))(setup)


# --- plot --soak ---------------------------------------------------------------------------
for name, text, out, expect, named in [
    ("into .svg", "elapsed_secs,rss_mib\n0,1\n", "x.svg", "error", "PNG"),
    ("missing file", None, "x.png", "error", "soak"),
    ("empty file", "", "x.png", "error", "soak"),
    ("header only", "elapsed_secs,rss_mib\n", "x.png", "error", "soak"),
    ("garbage", "\x00\x01binary", "x.png", "error", "soak"),
    ("non-numeric cells", "elapsed_secs,rss_mib\nabc,def\n", "x.png", "error", "soak"),
]:
    def setup(root, text=text, out=out):
        if text is not None:
            (root / "soak.csv").write_text(text)
        return ["plot", "--soak", str(root / "soak.csv"), "--out", str(root / out)]
    case(f"plot --soak {name}", expect, (named,))(setup)


# --- the app's flags checked before its window ------------------------------------------------
for extra, named in [(["--study", "nope"], "nope"), (["--preset", "nope"], "nope"),
                     (["--toggle-at", "x:centering=off"], "--toggle-at")]:
    def setup(root, extra=extra):
        return extra
    case(f"app {' '.join(extra)}", "error", (named,))(setup)


def main():
    counts = {"good": 0, "weak": 0, "bad": 0}
    env = dict(os.environ)
    for key in ["DISPLAY", "WAYLAND_DISPLAY"]:
        env.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, expect, named, setup) in enumerate(CASES):
            root = Path(tmp) / f"c{i}"
            root.mkdir()
            args = setup(root)
            try:
                done = subprocess.run([str(BIN), *args], cwd=root, capture_output=True, timeout=300, env=env)
                code, stderr = done.returncode, done.stderr.decode(errors="replace")
            except subprocess.TimeoutExpired:
                code, stderr = None, "timed out"
            nan_rows = any("nan" in p.read_text().lower() for p in root.rglob("metrics.csv"))
            if code == 101 or "panicked" in stderr or nan_rows or code is None:
                verdict = "bad"
            elif expect == "ok":
                verdict = "good" if code == 0 else "weak"
            elif code == 0:
                verdict = "bad"
            else:
                verdict = "good" if code == 2 and all(n in stderr for n in named) else "weak"
            counts[verdict] += 1
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            print(f"{verdict:4} {code!s:>4} {name}: {last[:150]}")
    total = sum(counts.values())
    print(f"\n{total} cases: {counts['good']} good, {counts['weak']} weak, {counts['bad']} bad")


if __name__ == "__main__":
    main()
