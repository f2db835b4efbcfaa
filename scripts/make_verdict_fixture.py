"""Writes tests/fixtures/official_verdict/: official-format run folders whose teachers are
known, to check the verdict of `dinoscope watch` on crafted truth (issue 28). Run from the
repository root:

    scripts/setup-venv && scripts/.venv/bin/python scripts/make_verdict_fixture.py

The model, head and loss are those of make_step_fixture.py (faithful excerpts of
facebookresearch/dino, Apache-2.0: a micro ViT 16 wide, 2 blocks, 2 heads, patch 4, 16-px global
and 8-px local crops, head hidden 32, bottleneck 16, K = 64); the checkpoints are saved as
main_dino.py saves them (`student` with DDP `module.` keys, `teacher`, `optimizer`, `epoch`,
`args`, `dino_loss`). Two folders:

- collapse_run/: checkpoint0000.pth, whose teacher is exactly uniform (every row of the
  weight-normed last layer the same direction, so every logit is equal for every image) beside a
  student that differs; checkpoint0001.pth, whose teacher sends every image to one prototype (the
  bottleneck made constant, the last layer's row 7 along it); log.txt with both epochs. The
  audit's case: averaged over checkpoints both read "healthy".
- sharp_run/: checkpoint0000.pth of a random teacher with a teacher temperature of 0.001 in its
  args and the center its EMA would reach on the probe (the mean teacher output): every image's
  target is one-hot, but different images get different prototypes (sharp but diverse: not a
  collapse).

Each folder has the probe (16 images: probe_globals.npy [32, 3, 16, 16], probe_locals.npy
[32, 3, 8, 8], crop-major) and reference.json: per checkpoint, in float64 with both networks in
eval mode, the DINO loss with the checkpoint's center, h(Pt), KL, h(mean Pt) and I = h(mean Pt) -
h(Pt). The script checks that each teacher is what its name says before writing.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_official_run_fixture as run_fixture  # noqa: E402
import make_step_fixture as step  # noqa: E402

OUT = Path("tests/fixtures/official_verdict")
PROBE_IMAGES = 16
ONE_PROTOTYPE = 7


def args_with(teacher_temp):
    """main_dino.py's Namespace for these runs: 100 epochs, a constant teacher temperature."""
    args = run_fixture.main_dino_args()
    args.teacher_temp = teacher_temp
    args.warmup_teacher_temp = teacher_temp
    args.warmup_teacher_temp_epochs = 0
    args.momentum_teacher = 0.996
    args.epochs = 100
    return args


def uniform_teacher(teacher):
    """Every last-layer row along one direction: all K logits equal for every image."""
    with torch.no_grad():
        v = teacher.head.last_layer.weight_v
        v.copy_(v[:1].expand_as(v).clone())


def one_prototype_teacher(teacher, generator):
    """A constant bottleneck (last MLP layer: zero weights, a large bias) and last-layer row
    ONE_PROTOTYPE along it: that prototype wins for every image."""
    with torch.no_grad():
        last_linear = teacher.head.mlp[-1]
        bias = torch.randn(last_linear.bias.shape, generator=generator)
        last_linear.weight.zero_()
        last_linear.bias.copy_(bias)
        teacher.head.last_layer.weight_v[ONE_PROTOTYPE].copy_(bias)


def save(out, name, student, teacher, args, epoch, center=None):
    optimizer = torch.optim.AdamW(step.get_params_groups(student))
    dino_loss = step.DINOLoss(args.out_dim, 2 + args.local_crops_number, args.warmup_teacher_temp,
                              args.teacher_temp, args.warmup_teacher_temp_epochs, args.epochs)
    if center is not None:
        dino_loss.center.copy_(center)
    torch.save({
        "student": {f"module.{k}": v for k, v in student.state_dict().items()},
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch + 1,
        "args": args,
        "dino_loss": dino_loss.state_dict(),
    }, out / name)


def probe(out, name, probe_crops, args):
    checkpoint = torch.load(out / name, weights_only=False)
    result = run_fixture.probe(checkpoint, probe_crops, args)
    result["teacher_mi"] = result["batch_mean_entropy"] - result["teacher_entropy"]
    return result


def write_folder(out, checkpoints, args, probe_crops):
    """checkpoints: [(name, student, teacher, epoch, center or None)]; returns the reference
    per file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.txt").unlink(missing_ok=True)
    reference = {}
    for name, student, teacher, epoch, center in checkpoints:
        save(out, name, student, teacher, args, epoch, center)
        with (out / "log.txt").open("a") as f:
            f.write(json.dumps({"train_loss": 5.0, "train_lr": 1e-4, "train_wd": 0.04, "epoch": epoch}) + "\n")
        reference[name] = probe(out, name, probe_crops, args)
        print(out.name, name, reference[name])
    np.save(out / "probe_globals.npy", torch.cat(probe_crops[:2]).numpy().astype(np.float32))
    np.save(out / "probe_locals.npy", torch.cat(probe_crops[2:]).numpy().astype(np.float32))
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return reference


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(28)
    probe_crops = run_fixture.crops_for(torch.Generator().manual_seed(29), PROBE_IMAGES)
    ln_k, ln_b = math.log(step.K), math.log(PROBE_IMAGES)

    # An exactly uniform teacher, then one that sends every image to one prototype; the
    # students are trained-looking random networks that differ from both.
    args = args_with(0.04)
    student0, teacher0 = step.build(generator)
    uniform_teacher(teacher0)
    student1, teacher1 = step.build(generator)
    one_prototype_teacher(teacher1, generator)
    ref = write_folder(out / "collapse_run", [
        ("checkpoint0000.pth", student0, teacher0, 0, None),
        ("checkpoint0001.pth", student1, teacher1, 1, None),
    ], args, probe_crops)
    uniform, single = ref["checkpoint0000.pth"], ref["checkpoint0001.pth"]
    assert abs(uniform["teacher_entropy"] - ln_k) < 1e-9 and abs(uniform["teacher_mi"]) < 1e-9, uniform
    assert uniform["kl"] > 0.1, uniform
    assert single["teacher_entropy"] < 0.05 * ln_k and single["batch_mean_entropy"] < 0.05 * ln_k, single
    assert single["kl"] > 1.0, single

    # Sharp but diverse: a random teacher at a teacher temperature of 0.001, with the center its
    # EMA converges to on these images (the mean teacher output), so no prototype is favoured.
    args = args_with(0.001)
    student, teacher = step.build(generator)
    teacher.eval()
    with torch.no_grad():
        center = teacher(probe_crops[:2]).mean(0, keepdim=True)
    ref = write_folder(out / "sharp_run", [("checkpoint0000.pth", student, teacher, 0, center)], args, probe_crops)
    sharp = ref["checkpoint0000.pth"]
    assert sharp["teacher_entropy"] < 0.05 * ln_k, sharp
    assert sharp["teacher_mi"] > 0.5 * min(ln_k, ln_b), sharp
    print(f"torch {torch.__version__}: fixtures written to {out}")


if __name__ == "__main__":
    main()
