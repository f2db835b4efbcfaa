"""Writes tests/fixtures/official_vit/: a small ViT in the official DINO key layout and the
attention, CLS feature and position table PyTorch computes for it, for the parity tests in
tests/it/attention.rs. Run from the repository root:

    scripts/setup-venv && scripts/.venv/bin/python scripts/make_attention_fixture.py

The model code is a faithful excerpt of facebookresearch/dino `vision_transformer.py`
(Apache-2.0): same module names, qkv layout, LayerNorm eps 1e-6, exact GELU and
`interpolate_pos_encoding` with the +0.1 scale factors.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

OUT = Path("tests/fixtures/official_vit")
DIM, DEPTH, HEADS, PATCH, IMG = 48, 2, 3, 8, 32
K, HIDDEN, BOTTLENECK = 64, 32, 16


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x), attn


class Block(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed(PATCH, DIM)
        num_patches = (IMG // PATCH) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, DIM))
        self.blocks = nn.ModuleList([Block(DIM, HEADS) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # Verbatim semantics of the official code: note `B, nc, w, h = x.shape`, so "w" is the
    # height and its scale factor applies to the grid's rows.
    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos_embed = self.pos_embed[:, 0]
        patch_pos_embed = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size
        h0 = h // self.patch_embed.patch_size
        w0, h0 = w0 + 0.1, h0 + 0.1
        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
            mode="bicubic",
        )
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def prepare_tokens(self, x):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        cls_tokens = self.cls_token.expand(B, -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        return x + self.interpolate_pos_encoding(x, w, h)

    def forward(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]

    def get_last_selfattention(self, x):
        x = self.prepare_tokens(x)
        for i, blk in enumerate(self.blocks):
            if i < len(self.blocks) - 1:
                x = blk(x)
            else:
                return blk(x, return_attention=True)


class DINOHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
            nn.Linear(HIDDEN, BOTTLENECK),
        )
        self.last_layer = nn.utils.weight_norm(nn.Linear(BOTTLENECK, K, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class Wrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head


def perturb(model, generator):
    """Non-trivial norms and biases, so a wrong key mapping cannot go unnoticed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=generator))


def make_image():
    """56 × 40 RGB: smooth gradients and a bright disk, deterministic."""
    h, w = 40, 56
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 40 + 150 * x / (w - 1)
    g = 60 + 120 * y / (h - 1)
    b = 90 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0)
    disk = ((x - 34) ** 2 + (y - 17) ** 2) < 9.5 ** 2
    r[disk], g[disk], b[disk] = 245, 230, 60
    rgb = np.stack([r, g, b], axis=-1).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def to_input(image):
    """ToTensor + ImageNet normalisation + top-left crop to patch multiples (a no-op here)."""
    a = np.asarray(image, dtype=np.float64) / 255.0
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    a = (a - mean) / std
    t = torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)
    h, w = t.shape[2] - t.shape[2] % PATCH, t.shape[3] - t.shape[3] % PATCH
    return t[:, :, :h, :w]


def official_mask(attn, threshold):
    """visualize_attention.py: sort ascending, normalise, cumsum, keep > 1 - threshold."""
    val, idx = torch.sort(attn)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attn.shape[0]):
        th_attn[head] = th_attn[head][idx2[head]]
    return th_attn


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    backbone = VisionTransformer()
    perturb(backbone, generator)
    # The official init leaves attention almost uniform (logits ~1e-3), too flat for a 1e-5
    # check to see the position interpolation: sharpen q, k and the position table.
    with torch.no_grad():
        for blk in backbone.blocks:
            blk.attn.qkv.weight[: 2 * DIM] *= 8
        backbone.pos_embed *= 10
    backbone.eval()
    torch.save(backbone.state_dict(), args.out / "backbone.pth")
    # The same tensors as safetensors (timm's DINO exports use this key layout).
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, args.out / "backbone.safetensors")

    # A full training checkpoint as main_dino.py writes it.
    teacher = Wrapper(backbone, DINOHead())
    student = Wrapper(VisionTransformer(), DINOHead())
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in student.backbone.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    loss = student.head(student.backbone(torch.randn(2, 3, IMG, IMG))).sum()
    loss.backward()
    optimizer.step()
    checkpoint = {
        "student": {f"module.{k}": v for k, v in student.state_dict().items()},
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_tiny_fixture", patch_size=PATCH, out_dim=K),
        "dino_loss": {"center": torch.randn(1, K, generator=generator)},
    }
    torch.save(checkpoint, args.out / "checkpoint.pth")

    image = make_image()
    image.save(args.out / "image.png")
    reference = VisionTransformer()
    reference.load_state_dict(backbone.state_dict())
    reference = reference.double().eval()

    def write(name, array, dtype=np.float32):
        np.save(args.out / name, np.ascontiguousarray(array).astype(dtype))

    with torch.no_grad():
        x = to_input(image)
        rows, cols = x.shape[2] // PATCH, x.shape[3] // PATCH
        attn = reference.get_last_selfattention(x)
        cls_row = attn[0, :, 0, 1:]
        # Sanity: recompute the CLS row by hand from the last block.
        tokens = reference.prepare_tokens(x)
        for blk in reference.blocks[:-1]:
            tokens = blk(tokens)
        last = reference.blocks[-1]
        qkv = last.attn.qkv(last.norm1(tokens)).reshape(1, -1, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        manual = ((qkv[0][:, :, :1] @ qkv[1].transpose(-2, -1)) * last.attn.scale).softmax(-1)[0, :, 0, 1:]
        assert torch.allclose(manual, cls_row, atol=1e-12)
        write("attention_56x40.npy", cls_row.reshape(HEADS, rows, cols).numpy())
        write("cls_56x40.npy", reference(x)[0].numpy())
        write("masks_56x40_t0.6.npy", official_mask(cls_row.clone(), 0.6).reshape(HEADS, rows, cols).numpy(), np.uint8)
        write("pos_embed_5x7.npy", reference.interpolate_pos_encoding(tokens, x.shape[2], x.shape[3])[0].numpy())

        square = x[:, :, :IMG, :IMG]
        attn = reference.get_last_selfattention(square)[0, :, 0, 1:]
        write("attention_32x32.npy", attn.reshape(HEADS, IMG // PATCH, IMG // PATCH).numpy())
        write("cls_32x32.npy", reference(square)[0].numpy())
    print(f"torch {torch.__version__}: fixture written to {args.out}")


if __name__ == "__main__":
    main()
