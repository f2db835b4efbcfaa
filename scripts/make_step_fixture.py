"""Writes tests/fixtures/official_step/: a micro DINO (ViT + DINOHead) in the official key layout,
multi-crop inputs, and what the official training code computes from them: the head output, the
DINOLoss with a non-zero center, and the student, teacher and center after full training steps.
For the parity tests in tests/it/step_parity.rs. Run from the repository root:

    scripts/setup-venv && scripts/.venv/bin/python scripts/make_step_fixture.py

The backbone classes are imported from make_attention_fixture.py (a faithful excerpt of
facebookresearch/dino `vision_transformer.py`), resized through its module constants. The rest is
a faithful excerpt of the same repository (Apache-2.0): `DINOHead` (vision_transformer.py),
`MultiCropWrapper`, `clip_gradients`, `cancel_gradients_last_layer`, `get_params_groups`,
`cosine_scheduler` (utils.py), `DINOLoss` and the body of `train_one_epoch` (main_dino.py), with
the distributed calls dropped (one process: all_reduce is the identity, world size 1) and fp16 off.

The reference runs in float64 from the float32 files; the same steps are replayed in float32 as a
conditioning check: a fixture on which float32 itself drifts by more than a few 1e-7 would make
a 1e-5 comparison meaningless, so the script refuses to write one.
"""

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_attention_fixture as vit  # noqa: E402

OUT = Path("tests/fixtures/official_step")
DIM, DEPTH, HEADS, PATCH, GLOBAL, LOCAL = 16, 2, 2, 4, 16, 8
HIDDEN, BOTTLENECK, K = 32, 16, 64
B, N_LOCAL = 2, 2
NITER_PER_EP = 3
# Two consecutive iterations across an epoch boundary: epoch 1 < freeze_last_layer (last layer
# frozen), then epoch 2 (last layer trained); both after the lr warm-up, teacher temperature
# 0.055 then 0.07.
ITERS = (5, 6)
# main_dino.py argument names; the code defaults except where those would hide an effect at
# 1e-5: peak lr 2e-3 and momentum 0.9 make weight decay and the EMA move weights by ≫ 1e-5, and
# the teacher temperature warms up over 3 epochs. clip_grad 3.0 clips some tensors, not all.
ARGS = argparse.Namespace(
    lr=0.256,  # peak = lr · batch / 256 = 2e-3
    batch_size_per_gpu=B,
    min_lr=1e-6,
    epochs=4,
    warmup_epochs=1,
    weight_decay=0.04,
    weight_decay_end=0.4,
    momentum_teacher=0.9,
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=3,
    clip_grad=3.0,
    freeze_last_layer=2,
    out_dim=K,
    local_crops_number=N_LOCAL,
    norm_last_layer=True,
)

# The official head uses the old weight_norm, as dino does.
warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated")

# The backbone of make_attention_fixture.py, resized: its classes read these at construction.
vit.DIM, vit.DEPTH, vit.HEADS, vit.PATCH, vit.IMG = DIM, DEPTH, HEADS, PATCH, GLOBAL


# ---- vision_transformer.py ----------------------------------------------------------------------
class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        x = self.last_layer(x)
        return x


# ---- utils.py -----------------------------------------------------------------------------------
class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        if not isinstance(x, list):
            x = [x]
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in x]),
            return_counts=True,
        )[1], 0)
        # dtype added: the original's float32 `torch.empty(0)` would be promoted anyway.
        start_idx, output = 0, torch.empty(0, dtype=x[0].dtype).to(x[0].device)
        for end_idx in idx_crops:
            _out = self.backbone(torch.cat(x[start_idx: end_idx]))
            if isinstance(_out, tuple):
                _out = _out[0]
            output = torch.cat((output, _out))
            start_idx = end_idx
        return self.head(output)


def clip_gradients(model, clip):
    norms = []
    for name, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


def get_params_groups(model):
    regularized = []
    not_regularized = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # we do not regularize biases nor Norm parameters
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{'params': regularized}, {'params': not_regularized, 'weight_decay': 0.}]


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)

    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))

    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


# ---- main_dino.py -------------------------------------------------------------------------------
class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1,
                 center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        # we apply a warm up for the teacher temperature because
        # a too high temperature makes the training instable at the beginning
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp,
                        teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp
        ))

    def forward(self, student_output, teacher_output, epoch):
        """
        Cross-entropy between softmax outputs of the teacher and student networks.
        """
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)

        # teacher centering and sharpening
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = nn.functional.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)

        total_loss = 0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    # we skip cases where student and teacher operate on the same view
                    continue
                loss = torch.sum(-q * nn.functional.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        """
        Update center used for teacher output.
        """
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        # dist.all_reduce(batch_center): one process
        batch_center = batch_center / (len(teacher_output) * 1)

        # ema update
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def train_one_step(student, teacher, dino_loss, optimizer, images, it, epoch, schedules, args):
    """The body of `train_one_epoch` for one batch (fp16 off, no logging)."""
    lr_schedule, wd_schedule, momentum_schedule = schedules
    # update weight decay and learning rate according to their schedule
    for i, param_group in enumerate(optimizer.param_groups):
        param_group["lr"] = lr_schedule[it]
        if i == 0:  # only the first group is regularized
            param_group["weight_decay"] = wd_schedule[it]

    # teacher and student forward passes + compute dino loss
    teacher_output = teacher(images[:2])  # only the 2 global views pass through the teacher
    student_output = student(images)
    loss = dino_loss(student_output, teacher_output, epoch)
    assert math.isfinite(loss.item())

    # student update
    optimizer.zero_grad()
    loss.backward()
    param_norms = clip_gradients(student, args.clip_grad)
    cancel_gradients_last_layer(epoch, student, args.freeze_last_layer)
    optimizer.step()

    # EMA update for the teacher
    with torch.no_grad():
        m = momentum_schedule[it]  # momentum parameter
        for param_q, param_k in zip(student.parameters(), teacher.parameters()):
            param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
    return loss.item(), student_output.detach(), teacher_output.detach(), param_norms


# ---- fixture ------------------------------------------------------------------------------------
def make_model():
    head = DINOHead(DIM, K, norm_last_layer=ARGS.norm_last_layer, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK)
    return MultiCropWrapper(vit.VisionTransformer(), head)


def clone(model, dtype, trainable):
    """A copy in `dtype` (deepcopy fails on weight_norm modules that ran a forward)."""
    copied = make_model()
    copied.load_state_dict(model.state_dict())
    copied = copied.to(dtype)
    if not trainable:
        for p in copied.parameters():
            p.requires_grad = False
    return copied


def build(generator):
    """Official init, then norms/biases perturbed, q/k and linear weights enlarged and the token
    tables scaled, so that weight decay (∝ |θ|) and a wrong key mapping show at 1e-5."""
    student = make_model()
    vit.perturb(student, generator)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.endswith("weight") and p.dim() == 2 and "last_layer" not in name:
                p.mul_(10)  # std 0.02 → 0.2
        for blk in student.backbone.blocks:
            blk.attn.qkv.weight[: 2 * DIM] *= 2
        student.backbone.cls_token.mul_(25)
        student.backbone.pos_embed.mul_(25)
    teacher = make_model()
    # A teacher some way into training: the student's weights plus noise (weight_g stays 1).
    teacher.load_state_dict(student.state_dict())
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if not name.endswith("weight_g"):
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


def run(student, teacher, center, crops, dtype):
    student = clone(student, dtype, trainable=True)
    teacher = clone(teacher, dtype, trainable=False)
    dino_loss = DINOLoss(
        ARGS.out_dim, ARGS.local_crops_number + 2, ARGS.warmup_teacher_temp, ARGS.teacher_temp,
        ARGS.warmup_teacher_temp_epochs, ARGS.epochs,
    ).to(dtype)
    dino_loss.center = center.to(dtype)
    optimizer = torch.optim.AdamW(get_params_groups(student))
    schedules = (
        cosine_scheduler(ARGS.lr * ARGS.batch_size_per_gpu / 256.0, ARGS.min_lr, ARGS.epochs, NITER_PER_EP,
                         warmup_epochs=ARGS.warmup_epochs),
        cosine_scheduler(ARGS.weight_decay, ARGS.weight_decay_end, ARGS.epochs, NITER_PER_EP),
        cosine_scheduler(ARGS.momentum_teacher, 1, ARGS.epochs, NITER_PER_EP),
    )
    steps = []
    for (globals_, locals_), it in zip(crops, ITERS):
        epoch = it // NITER_PER_EP
        images = list(globals_.to(dtype).chunk(2)) + list(locals_.to(dtype).chunk(N_LOCAL))
        loss, student_out, teacher_out, norms = train_one_step(
            student, teacher, dino_loss, optimizer, images, it, epoch, schedules, ARGS)
        steps.append({
            "it": it,
            "epoch": epoch,
            "loss": loss,
            "schedule": [schedules[0][it], schedules[1][it], schedules[2][it],
                         dino_loss.teacher_temp_schedule[epoch]],
            "student_logits": student_out,
            "teacher_logits": teacher_out,
            "grad_norms": norms,
            "student": {k: v.detach().clone() for k, v in student.state_dict().items()},
            "teacher": {k: v.detach().clone() for k, v in teacher.state_dict().items()},
            "center": dino_loss.center.detach().clone(),
        })
    return steps


def key_bias(name):
    """The key third of a qkv bias. Its gradient is exactly zero (softmax over keys is invariant
    to adding q·b_k to a whole row), so what AdamW's g/(|g| + eps) makes of it is rounding noise:
    float32 moves it by up to ~lr, float64 by ~1e-12. Harmless (the forward does not see it), but
    not comparable at 1e-5; the Rust test bounds these elements instead."""
    if name.endswith("attn.qkv.bias"):
        return slice(DIM, 2 * DIM)
    return None


def max_state_diff(a, b):
    worst = 0.0
    for k in a:
        diff = (a[k].double() - b[k].double()).abs()
        if key_bias(k) is not None:
            diff[key_bias(k)] = 0
        worst = max(worst, diff.max().item())
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    student, teacher = build(generator)
    center = 0.2 * torch.randn(1, K, generator=generator)
    crops = [
        (torch.randn(2 * B, 3, GLOBAL, GLOBAL, generator=generator),
         torch.randn(N_LOCAL * B, 3, LOCAL, LOCAL, generator=generator))
        for _ in ITERS
    ]

    def write(name, array):
        np.save(args.out / name, np.ascontiguousarray(np.asarray(array, dtype=np.float32)))

    def save_state(name, state):
        torch.save({k: v.float().contiguous() for k, v in state.items()}, args.out / name)

    save_state("student.pth", student.state_dict())
    save_state("teacher.pth", teacher.state_dict())
    write("center.npy", center.numpy())
    write("globals.npy", torch.stack([g for g, _ in crops]).numpy())
    write("locals.npy", torch.stack([l for _, l in crops]).numpy())

    # 1. The head alone: the student's initial head on 5 feature vectors.
    head_input = torch.randn(5, DIM, generator=generator)
    with torch.no_grad():
        head_output = clone(student, torch.float64, trainable=False).head(head_input.double())
    write("head_input.npy", head_input.numpy())
    write("head_output.npy", head_output.numpy())

    # 2. The loss alone, on its own logits: 3 images, 2 global + 4 local crops (10 terms),
    #    teacher temperature 0.04 (epoch 0 of a 0.04 → 0.07 warm-up), non-zero center.
    loss_b, loss_crops = 3, 6
    s_logits = torch.empty(loss_crops * loss_b, K).uniform_(-1, 1, generator=generator)
    t_logits = torch.empty(2 * loss_b, K).uniform_(-1, 1, generator=generator)
    loss_center = 0.2 * torch.randn(1, K, generator=generator)
    loss_fn = DINOLoss(K, loss_crops, 0.04, 0.07, 30, 100).double()
    loss_fn.center = loss_center.double()
    loss_value = loss_fn(s_logits.double(), t_logits.double(), epoch=0)
    write("loss_student_logits.npy", s_logits.numpy())
    write("loss_teacher_logits.npy", t_logits.numpy())
    write("loss_center.npy", loss_center.numpy())
    write("loss_value.npy", [loss_value.item()])
    write("loss_center_after.npy", loss_fn.center.numpy())

    # 3. Full training steps, float64 reference and the float32 conditioning check.
    ref = run(student, teacher, center, crops, torch.float64)
    f32 = run(student, teacher, center, crops, torch.float32)
    for r, f in zip(ref, f32):
        drift = max(max_state_diff(r["student"], f["student"]), max_state_diff(r["teacher"], f["teacher"]))
        clipped = sum(n > ARGS.clip_grad for n in r["grad_norms"])
        lr, wd, m, tt = r["schedule"]
        print(f"it {r['it']} epoch {r['epoch']}: loss {r['loss']:.6f}, lr {lr:.4e}, wd {wd:.5f}, "
              f"momentum {m:.5f}, teacher temp {tt:.3f}, {clipped}/{len(r['grad_norms'])} grads "
              f"clipped, float32 drift {drift:.2e}")
        assert drift < 2e-6, "float32 drifts from float64: the fixture is ill-conditioned"
        s0 = student.state_dict()
        for k in s0:
            if key_bias(k) is not None:
                assert (r["student"][k] - s0[k].double())[key_bias(k)].abs().max() < 1e-9
        assert 0 < clipped < len(r["grad_norms"]), "clip_grad should clip some tensors, not all"
        # The frozen step leaves the last layer alone, the next one moves it.
        moved = (r["student"]["head.last_layer.weight_v"] - student.state_dict()["head.last_layer.weight_v"].double()).abs().max()
        assert (moved == 0) == (r["epoch"] < ARGS.freeze_last_layer), moved
    # Effects that must be visible at 1e-5: weight decay of the regularised group and the EMA.
    s0 = student.state_dict()
    lr, wd = ref[0]["schedule"][:2]
    decayed = get_params_groups(student)[0]["params"]
    frozen = {id(student.head.last_layer.weight_v)}  # step 1 is in the frozen epoch
    decay = max(lr * wd * p.abs().max().item() for p in decayed if id(p) not in frozen)
    ema = max((ref[0]["teacher"][k] - teacher.state_dict()[k].double()).abs().max().item() for k in s0)
    print(f"largest weight-decay step {decay:.2e}, largest EMA step {ema:.2e}")
    assert decay > 1e-4 and ema > 1e-4

    for i, r in enumerate(ref, start=1):
        save_state(f"student_step{i}.pth", r["student"])
        save_state(f"teacher_step{i}.pth", r["teacher"])
    write("center_steps.npy", torch.cat([r["center"] for r in ref]).numpy())
    write("loss_steps.npy", [r["loss"] for r in ref])
    write("schedule_steps.npy", [r["schedule"] for r in ref])
    write("student_logits_step1.npy", ref[0]["student_logits"].numpy())
    write("teacher_logits_step1.npy", ref[0]["teacher_logits"].numpy())
    print(f"torch {torch.__version__}: fixture written to {args.out}")


if __name__ == "__main__":
    main()
