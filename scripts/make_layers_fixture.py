"""Adds per-layer attention, attention rollout, mean attention distance, patch similarity and
token-norm references to
tests/fixtures/official_vit/, for the model `make_attention_fixture.py` wrote. Run from the
repository root (needs numpy and safetensors, no torch):

    python3 -m pip install numpy safetensors && python3 scripts/make_layers_fixture.py

The forward pass is the official `vision_transformer.py` written out in float64 numpy. Before it
writes anything it checks itself against the fixture PyTorch computed (`attention_32x32.npy`,
the last block's CLS attention, and `cls_32x32.npy`): it refuses to write unless both match to
1e-6, so the new references stand on PyTorch's numbers. The 32 x 32 crop needs no position
interpolation.

Rollout follows jacobgil/vit-explain `vit_rollout.py` line for line, including its
normalisation `a / a.sum(dim=-1)`, which broadcasts over the last axis (column j is divided by
row j's sum), and the `flat.topk(..., largest=False)` discard that spares index 0 only.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

FIXTURE = Path("tests/fixtures/official_vit")
HEADS, PATCH = 3, 8


def layer_norm(x, w, b, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def to_input(image):
    a = np.asarray(image, dtype=np.float64) / 255.0
    a = (a - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return a.transpose(2, 0, 1)  # C, H, W


def forward(w, x):
    """Every block's softmax attention [heads, N, N] and the final-norm CLS token."""
    c, h, wd = x.shape
    rows, cols = h // PATCH, wd // PATCH
    patches = x.reshape(c, rows, PATCH, cols, PATCH).transpose(1, 3, 0, 2, 4).reshape(rows * cols, -1)
    proj = w["patch_embed.proj.weight"].reshape(w["patch_embed.proj.weight"].shape[0], -1)
    tokens = patches @ proj.T + w["patch_embed.proj.bias"]
    tokens = np.concatenate([w["cls_token"].reshape(1, -1), tokens]) + w["pos_embed"][0]
    dim = tokens.shape[1]
    attentions = []
    depth = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    for i in range(depth):
        p = lambda name: w[f"blocks.{i}.{name}"].astype(np.float64)
        y = layer_norm(tokens, p("norm1.weight"), p("norm1.bias"))
        qkv = (y @ p("attn.qkv.weight").T + p("attn.qkv.bias")).reshape(-1, 3, HEADS, dim // HEADS)
        q, k, v = (qkv[:, j].transpose(1, 0, 2) for j in range(3))
        attn = softmax(q @ k.transpose(0, 2, 1) * (dim // HEADS) ** -0.5)
        attentions.append(attn)
        out = (attn @ v).transpose(1, 0, 2).reshape(-1, dim)
        tokens = tokens + out @ p("attn.proj.weight").T + p("attn.proj.bias")
        y = layer_norm(tokens, p("norm2.weight"), p("norm2.bias"))
        y = gelu(y @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")) @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
        tokens = tokens + y
    normed = layer_norm(tokens, w["norm.weight"], w["norm.bias"])
    return attentions, normed[0], (rows, cols), normed[1:], tokens[1:]


def rollout(attentions, discard_ratio, head_fusion):
    """jacobgil/vit-explain vit_rollout.py, batch 1, in numpy."""
    result = np.eye(attentions[0].shape[-1])
    for attention in attentions:
        fused = {"mean": attention.mean(0), "max": attention.max(0), "min": attention.min(0)}[head_fusion]
        flat = fused.reshape(-1).copy()
        count = int(flat.size * discard_ratio)
        indices = np.argsort(flat, kind="stable")[:count]
        indices = indices[indices != 0]
        flat[indices] = 0
        fused = flat.reshape(fused.shape)
        a = (fused + np.eye(fused.shape[-1])) / 2
        a = a / a.sum(axis=-1)  # broadcasts over the last axis, as the original
        result = a @ result
    mask = result[0, 1:]
    return mask / mask.max()


def mean_distance(attention, grid, patch):
    """Per head: sum over patch keys of attention (renormalised over the patch keys) times the
    pixel distance between query and key patch centres, averaged over the patch queries."""
    rows, cols = grid
    r, c = np.divmod(np.arange(rows * cols), cols)
    dist = np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :]) * patch
    a = attention[:, 1:, 1:]
    a = a / a.sum(-1, keepdims=True)
    return (a * dist).sum(-1).mean(-1)


def main():
    weights = {k: v.astype(np.float64) for k, v in load_file(FIXTURE / "backbone.safetensors").items()}
    image = Image.open(FIXTURE / "image.png").convert("RGB")
    x = to_input(image)[:, :32, :32]
    attentions, cls, grid, patch_tokens, pre_norm = forward(weights, x)
    last = attentions[-1][:, 0, 1:].reshape(HEADS, *grid)
    torch_last = np.load(FIXTURE / "attention_32x32.npy")
    torch_cls = np.load(FIXTURE / "cls_32x32.npy")
    err = max(np.abs(last - torch_last).max(), np.abs(cls - torch_cls).max())
    if err > 1e-6:
        raise SystemExit(f"numpy forward differs from PyTorch's fixture by {err:.2e}; not writing")
    print(f"numpy forward matches PyTorch's last-block attention and CLS to {err:.1e}")
    cls_rows = np.stack([a[:, 0, 1:].reshape(HEADS, *grid) for a in attentions])
    np.save(FIXTURE / "attention_layers_32x32.npy", cls_rows.astype(np.float32))
    for fusion in ("mean", "max", "min"):
        for discard in (0.0, 0.9):
            mask = rollout(attentions, discard, fusion).reshape(grid)
            np.save(FIXTURE / f"rollout_32x32_{fusion}_d{discard}.npy", mask.astype(np.float32))
    distance = np.stack([mean_distance(a, grid, PATCH) for a in attentions])
    np.save(FIXTURE / "distance_32x32.npy", distance.astype(np.float32))
    # Patch (row 1, col 2) = index 6: cosine similarity of its final-norm token to every patch.
    unit = patch_tokens / np.linalg.norm(patch_tokens, axis=-1, keepdims=True)
    np.save(FIXTURE / "similarity_32x32_p6.npy", (unit @ unit[6]).reshape(grid).astype(np.float32))
    np.save(FIXTURE / "token_norms_32x32.npy", np.linalg.norm(pre_norm, axis=-1).reshape(grid).astype(np.float32))
    print("wrote attention_layers_32x32.npy, rollout_32x32_*.npy, distance_32x32.npy, similarity_32x32_p6.npy, token_norms_32x32.npy")


if __name__ == "__main__":
    main()
