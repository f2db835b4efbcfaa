"""Writes tests/fixtures/dinov2_recipe/: what the official DINOv2 code computes for its two
anti-collapse tools, for tests/it/recipe_parity.rs. Run from the repository root:

    scripts/setup-venv && scripts/.venv/bin/python scripts/make_recipe_fixture.py

The two functions below are faithful excerpts of facebookresearch/dinov2 (Apache-2.0):
`DINOLoss.sinkhorn_knopp_teacher` (dinov2/loss/dino_clstoken_loss.py) and `KoLeoLoss`
(dinov2/loss/koleo_loss.py), with the distributed calls dropped (one process: all_reduce is the
identity, world size 1) and autocast dropped (it only disables itself on the CPU).

Sinkhorn-Knopp: teacher logits [2B, K] as the teacher head gives them (cosines in [-1, 1] with a
normalised last layer), both global crops stacked as in `ssl_meta_arch.py`; float32 as the
official code (`teacher_output.float()`).

KoLeo: student backbone CLS rows [B, D] of one global crop, float32. The loss and its gradient
by PyTorch's autograd. Case `koleo_dup` repeats a row, the duplicate that makes KoLeo large
(dinov2 #143): its distance is eps·sqrt(D) from `PairwiseDistance(eps=1e-8)`, so the loss stays
finite but each duplicate row adds about -log(1e-8·(1+sqrt(D)))/B.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = Path("tests/fixtures/dinov2_recipe")


# --- excerpt: dinov2/loss/dino_clstoken_loss.py, DINOLoss.sinkhorn_knopp_teacher -------------
@torch.no_grad()
def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3):
    teacher_output = teacher_output.float()
    world_size = 1
    Q = torch.exp(teacher_output / teacher_temp).t()  # Q is K-by-B
    B = Q.shape[1] * world_size  # number of samples to assign
    K = Q.shape[0]  # how many prototypes

    # make the matrix sums to 1
    sum_Q = torch.sum(Q)
    Q /= sum_Q

    for it in range(n_iterations):
        # normalize each row: total weight per prototype must be 1/K
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows
        Q /= K

        # normalize each column: total weight per sample must be 1/B
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B

    Q *= B  # the columns must sum to 1 so that Q is an assignment
    return Q.t()


# --- excerpt: dinov2/loss/koleo_loss.py -----------------------------------------------------
class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko entropic loss regularizer from Sablayrolles et al. - 2018"""

    def __init__(self):
        super().__init__()
        self.pdist = nn.PairwiseDistance(2, eps=1e-8)

    def pairwise_NNs_inner(self, x):
        dots = torch.mm(x, x.t())
        n = x.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)  # Trick to fill diagonal with -1
        _, I = torch.max(dots, dim=1)  # noqa: E741
        return I

    def forward(self, student_output, eps=1e-8):
        student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
        I = self.pairwise_NNs_inner(student_output)  # noqa: E741
        distances = self.pdist(student_output, student_output[I])  # BxD, BxD -> B
        loss = -torch.log(distances + eps).mean()
        return loss


# ---------------------------------------------------------------------------------------------


def save(name, array):
    np.save(OUT / f"{name}.npy", np.ascontiguousarray(array, dtype=np.float32))


def sinkhorn_case(name, generator, rows, k, temp, iterations, spread):
    # Cosine-like logits; `spread` < 1 with a shared bias imitates a teacher drifting to one
    # prototype (the case Sinkhorn-Knopp exists for).
    logits = (torch.rand(rows, k, generator=generator) * 2 - 1) * spread
    logits[:, 0] += 1.0 - spread
    logits = logits.clamp(-1, 1)
    probs = sinkhorn_knopp_teacher(logits.clone(), temp, iterations)
    save(f"{name}_logits", logits.numpy())
    save(f"{name}_probs", probs.numpy())
    save(f"{name}_params", np.array([temp, iterations], dtype=np.float32))
    print(f"{name}: rows {rows}, K {k}, temp {temp}, {iterations} iterations, "
          f"row sums {probs.sum(1).min():.6f}..{probs.sum(1).max():.6f}")


def koleo_case(name, generator, rows, dim, duplicate):
    x = torch.randn(rows, dim, generator=generator) * 3.0
    if duplicate:
        x[rows - 1] = x[1] * 2.0  # the same direction: zero distance after normalisation
    x.requires_grad_(True)
    loss = KoLeoLoss()(x)
    loss.backward()
    save(f"{name}_input", x.detach().numpy())
    save(f"{name}_loss", np.array([loss.item()]))
    save(f"{name}_grad", x.grad.numpy())
    print(f"{name}: rows {rows}, dim {dim}, loss {loss.item():.6f}, "
          f"|grad| max {x.grad.abs().max().item():.3e}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(20231)
    sinkhorn_case("sinkhorn_a", generator, rows=12, k=40, temp=0.04, iterations=3, spread=1.0)
    sinkhorn_case("sinkhorn_b", generator, rows=16, k=64, temp=0.02, iterations=5, spread=0.3)
    koleo_case("koleo", generator, rows=10, dim=24, duplicate=False)
    koleo_case("koleo_dup", generator, rows=8, dim=16, duplicate=True)
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
