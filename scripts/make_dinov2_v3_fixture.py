"""Writes tests/fixtures/dinov2_v3/: tiny DINOv2 (plain and with 4 registers) and DINOv3 (4
storage tokens, RoPE) backbones built with the OFFICIAL model classes, their state dicts in the
hub's key layout, and the attention PyTorch computes for them, for the parity tests in
tests/it/dinov2_v3.rs. Run from the repository root with the two repositories checked out:

    python -m venv /tmp/venv && /tmp/venv/bin/pip install torch numpy pillow
    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2
    git clone https://github.com/facebookresearch/dinov3 /tmp/dinov3
    /tmp/venv/bin/python scripts/make_dinov2_v3_fixture.py --dinov2 /tmp/dinov2 --dinov3 /tmp/dinov3

Nothing of the model is re-written here: `DinoVisionTransformer` of each repository is built with
the hub's arguments for ViT-S (`_make_dinov2_model`, `dinov3_vits16`) at a reduced width and
depth, so the fixtures stay small. Every tensor is then randomised (LayerScale, biases including
DINOv3's masked k bias, norms, CLS/register/storage tokens, the position table) and q, k
sharpened, and the first block's input scaled to a variance near 1e-5 (so the LayerNorm ε
shows), so that a wrong key, order, ε or interpolation moves the maps by more than 1e-5.
References are computed in float64 (DINOv3's RoPE too) and stored as float32.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OUT = Path("tests/fixtures/dinov2_v3")
DIM, DEPTH, HEADS = 32, 2, 2
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# (width, height) crops of image.png: square at the native grid, square and non-square
# interpolated (shrinking and enlarging).
SIZES = {
    "v2": [(70, 70), (42, 42), (98, 56), (112, 84)],
    "v2reg": [(70, 70), (42, 42), (98, 56), (112, 84)],
    "v3": [(80, 80), (48, 48), (112, 64), (96, 112)],
    "v2g": [(70, 70), (42, 42), (98, 56), (112, 84)],
    "v3plus": [(80, 80), (48, 48), (112, 64), (96, 112)],
}


def make_image():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:112, 0:112] / 112.0
    img = np.stack(
        [
            0.5 + 0.4 * np.sin(6 * x + 2 * y),
            0.5 + 0.4 * np.cos(5 * y - 3 * x * y),
            ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).astype(float),
        ],
        axis=-1,
    )
    img += 0.05 * rng.standard_normal(img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))


def input_of(image, size):
    """dinoscope's preprocessing in float32 (no resampling: a top-left crop of exact size)."""
    w, h = size
    pixels = np.asarray(image.crop((0, 0, w, h)), dtype=np.float32)
    chw = ((pixels / np.float32(255.0) - MEAN) / STD).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))[None].double()


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    randn = lambda t, s: torch.randn(t.shape, generator=g, dtype=t.dtype) * s
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ls1.gamma") or name.endswith("ls2.gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + randn(p, 0.2))
            elif name.endswith("bias"):
                p.copy_(randn(p, 0.1))
            elif name in ("cls_token", "register_tokens", "storage_tokens", "mask_token"):
                p.copy_(randn(p, 1.0))
            elif name == "pos_embed":
                p.copy_(randn(p, 0.5))
            elif name.endswith("attn.qkv.weight"):
                p[: 2 * DIM] *= 8.0
            elif ".mlp.w" in name and name.endswith("weight"):
                # SwiGLU's product of two projections is small at the default init: larger,
                # so that its gate and value halves (w1 / w2) are told apart by the maps.
                p.mul_(6.0)
        # The first block's input small (variance near 1e-5): its LayerNorm then depends on ε,
        # so DINOv3's 1e-5 and DINOv2's 1e-6 are told apart.
        for name, p in model.named_parameters():
            if name.startswith("patch_embed.") or name in ("cls_token", "register_tokens", "storage_tokens", "pos_embed"):
                p.mul_(3e-3)
        for name, b in model.named_buffers():
            if name.endswith("bias_mask"):
                assert torch.equal(b[DIM : 2 * DIM], torch.zeros(DIM)), "official mask: k third 0"


def dinov2_model(registers, block_chunks=0, ffn_layer="mlp"):
    from dinov2.models.vision_transformer import DinoVisionTransformer

    # _make_dinov2_model's arguments (dinov2/hub/backbones.py): init_values 1.0, mlp, no
    # chunks; the register models: 4 registers, antialias, offset 0; ViT-g: "swiglufused".
    return DinoVisionTransformer(
        img_size=70,
        patch_size=14,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=4,
        init_values=1.0,
        ffn_layer=ffn_layer,
        block_chunks=block_chunks,
        num_register_tokens=registers,
        interpolate_antialias=registers > 0,
        interpolate_offset=0.0 if registers > 0 else 0.1,
    )


def dinov3_model(ffn_layer="mlp", ffn_ratio=4):
    from dinov3.models.vision_transformer import DinoVisionTransformer

    # dinov3_vits16's arguments (dinov3/hub/backbones.py) at a reduced width and depth;
    # dinov3_vits16plus's: ffn_layer "swiglu", ffn_ratio 6.
    model = DinoVisionTransformer(
        img_size=224,
        patch_size=16,
        pos_embed_rope_base=100,
        pos_embed_rope_normalize_coords="separate",
        pos_embed_rope_rescale_coords=2,
        pos_embed_rope_dtype="fp32",
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        ffn_ratio=ffn_ratio,
        qkv_bias=True,
        drop_path_rate=0.0,
        layerscale_init=1.0e-05,
        norm_layer="layernormbf16",
        ffn_layer=ffn_layer,
        ffn_bias=True,
        proj_bias=True,
        n_storage_tokens=4,
        mask_k_bias=True,
    )
    model.init_weights()
    return model


def capture_attention(model):
    """Every block's softmax attention, re-derived from the q, k that the official attention
    module computes (its own `qkv`, and for DINOv3 its own `apply_rope`): DINOv2's module is
    hooked, DINOv3's `compute_attention` wrapped; both then run unchanged."""
    found = []

    def probabilities(attn, qkv, rope):
        B, N, C3 = qkv.shape
        qkv = qkv.reshape(B, N, 3, attn.num_heads, C3 // 3 // attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        if rope is not None:
            q, k = attn.apply_rope(q, k, rope)
        found.append(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[0])

    undo = []
    for block in model.blocks:
        attn = block.attn
        if hasattr(attn, "compute_attention"):
            original = attn.compute_attention

            def wrapped(qkv, attn_bias=None, rope=None, attn=attn, original=original):
                probabilities(attn, qkv, rope)
                return original(qkv=qkv, attn_bias=attn_bias, rope=rope)

            attn.compute_attention = wrapped
            undo.append(lambda attn=attn: delattr(attn, "compute_attention"))
        else:
            handle = attn.register_forward_hook(
                lambda m, args, _out: probabilities(m, m.qkv(args[0]), None)
            )
            undo.append(handle.remove)
    return found, undo


def write(name, array):
    np.save(OUT / name, np.ascontiguousarray(array, dtype=np.float32))


def references(kind, model, image):
    model = model.double().eval()
    if kind.startswith("v3"):
        model.rope_embed.dtype = torch.float64
    prefix = {"v2": 1, "v2reg": 5, "v3": 5, "v2g": 1, "v3plus": 5}[kind]
    for size in SIZES[kind]:
        found, undo = capture_attention(model)
        x = input_of(image, size)
        with torch.no_grad():
            out = model.forward_features(x)
        for u in undo:
            u()
        assert len(found) == DEPTH
        w, h = size
        last = found[-1]
        write(f"{kind}_cls_{w}x{h}.npy", last[:, 0, :].numpy())
        if size == SIZES[kind][2]:
            # Every block, and the tokens, for the other views (the non-square input).
            write(f"{kind}_blocks_{w}x{h}.npy", torch.stack(found).numpy())
            write(f"{kind}_prenorm_{w}x{h}.npy", out["x_prenorm"][0].numpy())
            tokens = torch.cat(
                [out["x_norm_clstoken"][:, None], out.get("x_norm_regtokens", out.get("x_storage_tokens")), out["x_norm_patchtokens"]],
                dim=1,
            )[0]
            write(f"{kind}_tokens_{w}x{h}.npy", tokens.numpy())
        assert last.shape[-1] == prefix + (w // model.patch_size) * (h // model.patch_size)
        print(kind, size, "CLS->patches max", float(last[:, 0, prefix:].max()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dinov2", required=True, help="a checkout of facebookresearch/dinov2")
    parser.add_argument("--dinov3", required=True, help="a checkout of facebookresearch/dinov3")
    args = parser.parse_args()
    sys.path[:0] = [args.dinov2, args.dinov3]
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    image = make_image()
    image.save(OUT / "image.png")

    models = {
        "v2": dinov2_model(0),
        "v2reg": dinov2_model(4),
        "v3": dinov3_model(),
    }
    for seed, (kind, model) in enumerate(models.items()):
        randomise(model, seed + 1)
        state = {k: v.clone().float() for k, v in model.state_dict().items()}
        torch.save(state, OUT / f"{kind}.pth")
        references(kind, model, image)

    # A DINOv2 training checkpoint's teacher (`eval/training_<it>/teacher_checkpoint.pth`): the
    # backbone under `backbone.` with chunked blocks (FSDP, `blocks.<chunk>.<i>.`) and a head.
    chunked = dinov2_model(4, block_chunks=2)
    chunk_size = DEPTH // 2

    def chunk_key(key):
        parts = key.split(".")
        if parts[0] != "blocks":
            return key
        i = int(parts[1])
        return ".".join(["blocks", str(i // chunk_size), str(i)] + parts[2:])

    chunked.load_state_dict({chunk_key(k): v for k, v in models["v2reg"].float().state_dict().items()})
    teacher = {f"backbone.{k}": v for k, v in chunked.state_dict().items()}
    assert any(k.startswith("backbone.blocks.1.1.") for k in teacher), list(teacher)[:10]
    teacher["dino_head.mlp.0.weight"] = torch.randn(8, DIM)
    torch.save({"teacher": teacher}, OUT / "v2reg_teacher_checkpoint.pth")

    # The SwiGLU feed-forwards, seeded apart so the files above do not change: DINOv2 ViT-g's
    # `SwiGLUFFNFused` (packed `w12`; hidden (int(128 * 2/3) + 7) // 8 * 8 = 88) and DINOv3
    # ViT-S+'s `SwiGLUFFN` (`w1`, `w2`; hidden 6 * 32 * 2/3 = 128, aligned to 8).
    torch.manual_seed(1)
    swiglu = {
        "v2g": dinov2_model(0, ffn_layer="swiglufused"),
        "v3plus": dinov3_model(ffn_layer="swiglu", ffn_ratio=6),
    }
    assert swiglu["v2g"].blocks[0].mlp.w12.weight.shape == (2 * 88, DIM)
    assert swiglu["v3plus"].blocks[0].mlp.w1.weight.shape == (128, DIM)
    for seed, (kind, model) in enumerate(swiglu.items()):
        randomise(model, seed + 10)
        state = {k: v.clone().float() for k, v in model.state_dict().items()}
        torch.save(state, OUT / f"{kind}.pth")
        references(kind, model, image)
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
