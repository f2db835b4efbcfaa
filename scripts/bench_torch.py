"""The PyTorch side of `scripts/bench-compare`: the same work as `dinoscope bench`, with the
official DINO model code (the ViT of make_attention_fixture.py, the DINOHead, DINOLoss and the
train_one_epoch step of main_dino.py). A benchmark aid, not a runtime dependency.

    python scripts/bench_torch.py --workload train-tiny --threads 2 --steps 20 --warmup 3

Prints one line: RESULT workload=... median_ms=... mean_ms=... images_per_sec=... threads=...
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_attention_fixture as vit_code  # noqa: E402  (the official ViT, verbatim semantics)


def drop_path(x, drop_prob, training):
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
    random_tensor.floor_()
    return x.div(keep_prob) * random_tensor


class Block(vit_code.Block):
    """The official block with stochastic depth (the fixture's copy has none)."""

    def __init__(self, dim, num_heads, drop_path_prob):
        super().__init__(dim, num_heads)
        self.drop_path_prob = drop_path_prob

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + drop_path(y, self.drop_path_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_prob, self.training)


def make_vit(dim, depth, heads, patch, img, drop_path_rate):
    vit_code.DIM, vit_code.DEPTH, vit_code.HEADS = dim, depth, heads
    vit_code.PATCH, vit_code.IMG = patch, img
    model = vit_code.VisionTransformer()
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    model.blocks = nn.ModuleList([Block(dim, heads, r) for r in rates])
    model.apply(model._init_weights)
    return model


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False  # norm_last_layer=True

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        if not isinstance(x, list):
            x = [x]
        idx_crops = torch.cumsum(
            torch.unique_consecutive(torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)[1], 0
        )
        start_idx, output = 0, torch.empty(0).to(x[0].device)
        for end_idx in idx_crops:
            _out = self.backbone(torch.cat(x[start_idx:end_idx]))
            output = torch.cat((output, _out))
            start_idx = end_idx
        return self.head(output)


class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, teacher_temp, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum, self.ncrops = center_momentum, ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output, teacher_output):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        teacher_out = F.softmax((teacher_output - self.center) / self.teacher_temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def get_params_groups(model):
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def clip_gradients(model, clip):
    for p in model.parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)


# The two training workloads, as configs/tiny.toml and configs/vit-s16-paper.toml.
WORKLOADS = {
    "train-tiny": dict(dim=96, depth=4, heads=3, patch=4, img=32, drop_path=0.1, out_dim=1024,
                       hidden=512, bottleneck=256, batch=32, global_px=32, local_px=16, locals=6,
                       lr=0.002, momentum=0.99, teacher_temp=0.02),
    "train-vits16": dict(dim=384, depth=12, heads=6, patch=16, img=224, drop_path=0.1, out_dim=65536,
                         hidden=2048, bottleneck=256, batch=8, global_px=224, local_px=96, locals=8,
                         lr=0.0005, momentum=0.996, teacher_temp=0.04),
}


# Per timed train step: teacher forward, student forward, loss, backward, optimizer, EMA (secs).
PHASES = []
PHASE_NAMES = ["teacher_forward", "student_forward", "loss", "backward", "optimizer", "ema"]


def bench_train(name, args):
    c = dict(WORKLOADS[name])
    if args.batch:
        c["batch"] = args.batch
    def build(drop_path_rate):
        return MultiCropWrapper(
            make_vit(c["dim"], c["depth"], c["heads"], c["patch"], c["img"], drop_path_rate),
            DINOHead(c["dim"], c["out_dim"], c["hidden"], c["bottleneck"]),
        )

    device = torch.device(args.device)
    student = build(c["drop_path"]).to(device)
    # As main_dino.py: a separately built teacher (no drop path) loaded with the student's
    # weights (deepcopy does not work with weight_norm).
    teacher = build(0.0).to(device)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student.train()
    teacher.train()
    loss_fn = DINOLoss(c["out_dim"], c["locals"] + 2, c["teacher_temp"]).to(device)
    peak_lr = c["lr"] * c["batch"] / 256
    optimizer = torch.optim.AdamW(get_params_groups(student), lr=peak_lr, weight_decay=0.04)
    b = c["batch"]
    images = [torch.randn(b, 3, c["global_px"], c["global_px"], device=device) for _ in range(2)]
    images += [torch.randn(b, 3, c["local_px"], c["local_px"], device=device) for _ in range(c["locals"])]
    # On CUDA a lap must wait for the queued kernels, or it measures only the launches.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def now():
        sync()
        return time.perf_counter()
    student_params = list(student.parameters())
    teacher_params = list(teacher.parameters())

    def step():
        laps = [now()]
        teacher_output = teacher(images[:2])
        laps.append(now())
        student_output = student(images)
        laps.append(now())
        loss = loss_fn(student_output, teacher_output)
        value = loss.item()
        laps.append(now())
        optimizer.zero_grad()
        loss.backward()
        laps.append(now())
        clip_gradients(student, 3.0)
        optimizer.step()
        laps.append(now())
        with torch.no_grad():
            m = c["momentum"]
            for param_q, param_k in zip(student_params, teacher_params):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        laps.append(now())
        PHASES.append([b - a for a, b in zip(laps, laps[1:])])
        return value

    return time_steps(step, args), b


def bench_attention(args):
    w, h = (int(v) for v in args.size.lower().split("x"))
    model = make_vit(384, 12, 6, 16, 224, 0.0).eval()
    x = torch.randn(1, 3, h, w)
    x = x[:, :, : h - h % 16, : w - w % 16]

    def step():
        with torch.no_grad():
            attentions = model.get_last_selfattention(x)
            nh = attentions.shape[1]
            attentions = attentions[0, :, 0, 1:].reshape(nh, -1)
            val, idx = torch.sort(attentions)
            val /= torch.sum(val, dim=1, keepdim=True)
            cumval = torch.cumsum(val, dim=1)
            th_attn = cumval > (1 - 0.6)
            idx2 = torch.argsort(idx)
            for head in range(nh):
                th_attn[head] = th_attn[head][idx2[head]]
        return th_attn

    return time_steps(step, args), 1


def bench_attention_layers(args, patch=16, img=224, dim=384, depth=12, heads=6):
    """Every block's attention in one pass, as get_intermediate_layers walks the blocks: the
    CLS rows of all of them and the 0.6-mass masks per head (what `attention --layer all`
    writes). patch 14 / img 518: DINOv2's ViT-S/14 (`attention-layers-vits14`; the official
    DINO block without LayerScale, whose one multiply per token is < 0.1 % of the work)."""
    w, h = (int(v) for v in args.size.lower().split("x"))
    model = make_vit(dim, depth, heads, patch, img, 0.0).eval()
    x = torch.randn(1, 3, h, w)
    x = x[:, :, : h - h % patch, : w - w % patch]

    def step():
        with torch.no_grad():
            tokens = model.prepare_tokens(x)
            masks = []
            for blk in model.blocks:
                y, attn = blk.attn(blk.norm1(tokens))
                tokens = tokens + y
                tokens = tokens + blk.mlp(blk.norm2(tokens))
                cls = attn[0, :, 0, 1:]
                val, idx = torch.sort(cls)
                val /= torch.sum(val, dim=1, keepdim=True)
                keep = torch.cumsum(val, dim=1) > (1 - 0.6)
                masks.append(torch.gather(keep, 1, torch.argsort(idx)))
        return masks

    return time_steps(step, args), 1


# The products of `dinoscope bench --workload matmul` (src/cli/bench_matmul.rs), same order.
MATMUL_SHAPES = [
    ("tiny qkv (globals)", 64 * 65, 96, 288),
    ("tiny fc1 (globals)", 64 * 65, 96, 384),
    ("tiny fc2 (globals)", 64 * 65, 384, 96),
    ("tiny qkv (locals)", 192 * 17, 96, 288),
    ("vits qkv (globals)", 16 * 197, 384, 1152),
    ("vits proj (globals)", 16 * 197, 384, 384),
    ("vits fc1 (globals)", 16 * 197, 384, 1536),
    ("vits fc2 (globals)", 16 * 197, 1536, 384),
    ("vits fc1 (locals)", 64 * 37, 384, 1536),
    ("vits head 2048", 80, 2048, 2048),
    ("vits head last (K 65536)", 80, 256, 65536),
]


def bench_matmul(args):
    """Per shape: F.linear alone (no grad) and forward + backward, medians, as GFLOP/s."""
    for name, rows, d_in, d_out in MATMUL_SHAPES:
        layer = torch.nn.Linear(d_in, d_out)
        x = torch.rand(rows, d_in)
        forward, both = [], []
        for i in range(args.warmup + args.steps):
            started = time.perf_counter()
            with torch.no_grad():
                layer(x)
            forward_s = time.perf_counter() - started
            xg = x.clone().requires_grad_(True)
            layer.zero_grad(set_to_none=True)
            started = time.perf_counter()
            layer(xg).sum().backward()
            both_s = time.perf_counter() - started
            if i >= args.warmup:
                forward.append(forward_s)
                both.append(both_s)
        flop = 2.0 * rows * d_in * d_out
        f, b = statistics.median(forward), statistics.median(both)
        print(
            f'RESULT matmul name="{name}" rows={rows} d_in={d_in} d_out={d_out} '
            f"forward_ms={f * 1e3:.3f} forward_gflops={flop / f / 1e9:.1f} "
            f"train_ms={b * 1e3:.3f} train_gflops={3 * flop / b / 1e9:.1f}"
        )


def time_steps(step, args):
    for _ in range(args.warmup):
        step()
    times = []
    PHASES.clear()
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["train-tiny", "train-vits16", "attention-vits16", "attention-layers-vits16", "attention-layers-vits14", "attention-layers-vitl14", "matmul"], required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--size", default="721x480", help="attention image WxH")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train workloads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.workload == "matmul":
        bench_matmul(args)
        return
    if args.workload == "attention-vits16":
        times, images = bench_attention(args)
    elif args.workload == "attention-layers-vits16":
        times, images = bench_attention_layers(args)
    elif args.workload == "attention-layers-vits14":
        times, images = bench_attention_layers(args, patch=14, img=518)
    elif args.workload == "attention-layers-vitl14":
        times, images = bench_attention_layers(args, patch=14, img=518, dim=1024, depth=24, heads=16)
    else:
        times, images = bench_train(args.workload, args)
    median = statistics.median(times) * 1e3
    mean = statistics.fmean(times) * 1e3
    print(
        f"RESULT workload={args.workload} median_ms={median:.1f} mean_ms={mean:.1f} "
        f"images_per_sec={images * 1e3 / median:.2f} threads={args.threads} torch={torch.__version__}"
    )
    if PHASES:
        medians = [statistics.median(column) * 1e3 for column in zip(*PHASES)]
        print("PHASES " + " ".join(f"{n}={v:.1f}" for n, v in zip(PHASE_NAMES, medians)))


if __name__ == "__main__":
    main()
