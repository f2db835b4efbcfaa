"""Writes tests/fixtures/pca/: synthetic patch features of three images with a known
foreground/background structure, and the two PCA pictures of analysis/pca.rs computed here with
NumPy alone (no scikit-learn), for tests/it/pca.rs. Run from the repository root:

    python scripts/make_pca_fixture.py        (numpy only)

The features: every patch of an image is a background vector plus noise, except an object in
the interior, whose upper half is "part A" and lower half "part B" (two directions, each with
an image-specific offset, on a direction both share), so that the first principal component separates object from
background and the second PCA, fitted on the object's patches of all three images, separates
the parts with the same colour in every image.

The recipe (DINOv2, dinov2 #45; the paper's Fig. 1 and 9 captions):
  1. PCA of all patches of all images; each component signed so that its largest coordinate is
     positive (scikit-learn's svd_flip on the components).
  2. The first component's scores are negated when the border patches' scores sum above 0 (so
     that the background, at the border, scores below 0), and the patches scoring above 0 are
     the foreground.
  3. A 3-component PCA of the foreground patches of all images, each score min-max scaled to
     0..255 over all of them (rounded); the background is black.
The plain picture is step 1 on one image's patches with 3 components, min-max scaled.
"""

from pathlib import Path

import numpy as np

OUT = Path("tests/fixtures/pca")
DIM = 16
GRIDS = [(6, 8), (5, 5), (7, 6)]  # (rows, cols)


def features_of(rng, rows, cols, offset):
    background = np.zeros(DIM)
    background[0] = 1.0
    # The object: one strong direction shared by both parts (what the first component finds),
    # the parts apart along two weaker ones (what the second PCA finds).
    part_a = np.zeros(DIM)
    part_a[[3, 1]] = 3.0, 1.0
    part_b = np.zeros(DIM)
    part_b[[3, 2]] = 3.0, 1.0
    out = np.empty((rows, cols, DIM))
    top, bottom = 1, rows - 1
    for r in range(rows):
        for c in range(cols):
            inside = top <= r < bottom and 1 <= c < cols - 1
            if not inside:
                base = background
            elif r < (top + bottom) / 2:
                base = part_a + offset
            else:
                base = part_b + offset
            out[r, c] = base + 0.15 * rng.standard_normal(DIM)
    return out.astype(np.float32)


def fit(rows, k):
    x = rows.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1][:k]
    components = vectors[:, order].T
    for v in components:
        if v[np.argmax(np.abs(v))] < 0:
            v *= -1
    return mean, components


def scaled(scores):
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, np.round(255 * (scores - lo) / span), 0).astype(np.float32)


def border_mask(rows, cols):
    r, c = np.mgrid[0:rows, 0:cols]
    return ((r == 0) | (c == 0) | (r == rows - 1) | (c == cols - 1)).ravel()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (rows, cols) in enumerate(GRIDS):
        offset = 0.1 * rng.standard_normal(DIM)
        images.append(features_of(rng, rows, cols, offset))

    for i, f in enumerate(images):
        rows, cols, _ = f.shape
        flat = f.reshape(-1, DIM)
        mean, comps = fit(flat, 3)
        plain = scaled((flat - mean) @ comps.T)
        np.save(OUT / f"features_{i}.npy", f)
        np.save(OUT / f"plain_{i}.npy", plain.reshape(rows, cols, 3))

    flat = np.concatenate([f.reshape(-1, DIM) for f in images])
    mean, comps = fit(flat, 1)
    first = (flat - mean) @ comps[0]
    border = np.concatenate([border_mask(*g) for g in GRIDS])
    if first[border].sum() > 0:
        first = -first
    fg = first > 0
    mean2, comps2 = fit(flat[fg], 3)
    colours = np.zeros((len(flat), 3), dtype=np.float32)
    colours[fg] = scaled((flat[fg] - mean2) @ comps2.T)
    start = 0
    for i, (rows, cols) in enumerate(GRIDS):
        n = rows * cols
        np.save(OUT / f"foreground_{i}.npy", colours[start : start + n].reshape(rows, cols, 3))
        print(i, "foreground patches", int(fg[start : start + n].sum()), "of", n)
        start += n


if __name__ == "__main__":
    main()
