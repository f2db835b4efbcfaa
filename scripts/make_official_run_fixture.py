"""Writes tests/fixtures/official_run/: the output folder of a tiny run of the official DINO
training code, as `main_dino.py --output_dir` leaves it, and what the official code computes on a
fixed probe batch from each of its checkpoints. For `dinoscope watch` (issue 16). Run from the
repository root:

    scripts/setup-venv && scripts/.venv/bin/python scripts/make_official_run_fixture.py

The model, head, loss, schedules and training step are those of make_step_fixture.py (faithful
excerpts of facebookresearch/dino, Apache-2.0: a micro ViT 16 wide, 2 blocks, 2 heads, patch 4,
16-px global and 8-px local crops, K = 64). The loop around them is `main_dino.py`'s
`train_dino` for one process: 3 epochs of 2 iterations (8 images, batch 4), `log.txt` with one
JSON line per epoch ({train_loss, train_lr, train_wd, epoch}, the epoch averages of the metric
logger), `checkpoint.pth` rewritten every epoch and `checkpoint{epoch:04}.pth` every
`saveckp_freq` = 2 epochs (so 0000 and 0002), each with `student` (DDP `module.` keys),
`teacher`, `optimizer`, `epoch` (the next one to run), `args` (an argparse Namespace with
main_dino.py's options) and `dino_loss` (`center`).

The crops are fixed tensors rather than DataAugmentationDINO's random ones: the folder format,
not the augmentation, is under test. The probe: 3 images' 2 global and 2 local crops
(probe_globals.npy [6, 3, 16, 16], probe_locals.npy [6, 3, 8, 8], crop-major), and per
checkpoint in float64 with both networks in eval mode (no drop path): the DINO loss with the
checkpoint's center at the teacher temperature of the last epoch it trained, h(Pt), KL = loss -
h(Pt) and h(mean Pt) of the batch-averaged teacher distribution (probe_reference.json).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_step_fixture as step  # noqa: E402

OUT = Path("tests/fixtures/official_run")
N_IMAGES, BATCH, EPOCHS, SAVECKP_FREQ, PROBE_IMAGES = 8, 4, 3, 2, 3


def main_dino_args():
    """main_dino.py's argparse options for this run (names and defaults of the official code)."""
    return argparse.Namespace(
        arch="vit_small", patch_size=step.PATCH, out_dim=step.K, norm_last_layer=True,
        momentum_teacher=0.9, use_bn_in_head=False, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=2, use_fp16=False, weight_decay=0.04, weight_decay_end=0.4,
        clip_grad=3.0, batch_size_per_gpu=BATCH, epochs=EPOCHS, freeze_last_layer=1, lr=0.256,
        warmup_epochs=1, min_lr=1e-6, optimizer="adamw", drop_path_rate=0.1,
        global_crops_scale=(0.4, 1.0), local_crops_number=step.N_LOCAL,
        local_crops_scale=(0.05, 0.4), data_path="/path/to/imagenet/train/",
        output_dir=".", saveckp_freq=SAVECKP_FREQ, seed=0, num_workers=10,
        dist_url="env://", local_rank=0, rank=0, world_size=1, gpu=0,
    )


def crops_for(generator, n):
    """2 global + N_LOCAL local crops of n images, as the loader's list of crop tensors."""
    globals_ = [torch.randn(n, 3, step.GLOBAL, step.GLOBAL, generator=generator) for _ in range(2)]
    locals_ = [torch.randn(n, 3, step.LOCAL, step.LOCAL, generator=generator) for _ in range(step.N_LOCAL)]
    return globals_ + locals_


def entropy(p):
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def probe(checkpoint, probe_crops, args):
    """The decomposition the trainer reports, on the probe batch, from one checkpoint."""
    student, teacher = step.make_model().double(), step.make_model().double()
    student.load_state_dict({k.removeprefix("module."): v for k, v in checkpoint["student"].items()})
    teacher.load_state_dict(checkpoint["teacher"])
    student.eval()
    teacher.eval()
    crops = [c.double() for c in probe_crops]
    epoch = checkpoint["epoch"] - 1
    loss_fn = step.DINOLoss(args.out_dim, 2 + args.local_crops_number, args.warmup_teacher_temp,
                            args.teacher_temp, args.warmup_teacher_temp_epochs, args.epochs).double()
    loss_fn.center = checkpoint["dino_loss"]["center"].double().clone()
    temp = float(loss_fn.teacher_temp_schedule[epoch])
    with torch.no_grad():
        teacher_out = teacher(crops[:2])
        student_out = student(crops)
        q = torch.softmax((teacher_out - loss_fn.center) / temp, dim=-1)
        loss = loss_fn(student_out, teacher_out, epoch).item()
    h = entropy(q).mean().item()
    return {
        "epoch": epoch,
        "teacher_temp": temp,
        "loss": loss,
        "teacher_entropy": h,
        "kl": loss - h,
        "batch_mean_entropy": entropy(q.mean(0)).item(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    args = main_dino_args()
    student, _ = step.build(generator)
    # main_dino.py: the teacher starts as an exact copy of the student and is never trained.
    teacher = step.clone(student, torch.float32, trainable=False)
    niter = N_IMAGES // BATCH
    lr_schedule = step.cosine_scheduler(args.lr * BATCH / 256.0, args.min_lr, EPOCHS, niter, warmup_epochs=args.warmup_epochs)
    wd_schedule = step.cosine_scheduler(args.weight_decay, args.weight_decay_end, EPOCHS, niter)
    momentum_schedule = step.cosine_scheduler(args.momentum_teacher, 1, EPOCHS, niter)
    dino_loss = step.DINOLoss(args.out_dim, 2 + args.local_crops_number, args.warmup_teacher_temp,
                              args.teacher_temp, args.warmup_teacher_temp_epochs, EPOCHS)
    optimizer = torch.optim.AdamW(step.get_params_groups(student))
    (out / "log.txt").unlink(missing_ok=True)
    for epoch in range(EPOCHS):
        sums = {"loss": 0.0, "lr": 0.0, "wd": 0.0}
        for i in range(niter):
            it = niter * epoch + i
            images = crops_for(generator, BATCH)
            loss, *_ = step.train_one_step(student, teacher, dino_loss, optimizer, images, it, epoch,
                                           (lr_schedule, wd_schedule, momentum_schedule), args)
            sums["loss"] += loss
            sums["lr"] += optimizer.param_groups[0]["lr"]
            sums["wd"] += optimizer.param_groups[0]["weight_decay"]
        save_dict = {
            "student": {f"module.{k}": v for k, v in student.state_dict().items()},
            "teacher": teacher.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "args": args,
            "dino_loss": dino_loss.state_dict(),
        }
        torch.save(save_dict, out / "checkpoint.pth")
        if args.saveckp_freq and epoch % args.saveckp_freq == 0:
            torch.save(save_dict, out / f"checkpoint{epoch:04}.pth")
        log_stats = {**{f"train_{k}": v / niter for k, v in sums.items()}, "epoch": epoch}
        with (out / "log.txt").open("a") as f:
            f.write(json.dumps(log_stats) + "\n")
        print(json.dumps(log_stats))

    probe_crops = crops_for(torch.Generator().manual_seed(3), PROBE_IMAGES)
    np.save(out / "probe_globals.npy", torch.cat(probe_crops[:2]).numpy().astype(np.float32))
    np.save(out / "probe_locals.npy", torch.cat(probe_crops[2:]).numpy().astype(np.float32))
    reference = {}
    for name in sorted(p.name for p in out.glob("checkpoint*.pth")):
        checkpoint = torch.load(out / name, weights_only=False)
        reference[name] = probe(checkpoint, probe_crops, args)
        print(name, reference[name])
    (out / "probe_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"torch {torch.__version__}: fixture written to {out}")


if __name__ == "__main__":
    main()
