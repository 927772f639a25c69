#!/usr/bin/env python3
"""PyTorch's side of sambench's training-method tests (docs/METHODS.md): each loss written as
its reference code writes it, differentiated by autograd in float64, and whole ResNet-8 steps
with a method, in the conventions of ../shared/reference/pytorch-resnet8.

Needs torch (the CPU wheel), numpy and safetensors.

  losses --out FILE          random logits (rows of +-50, a class with p -> 0), labels, weights
                             and soft targets; for every loss its per-sample values and the
                             gradient of the weighted mean with respect to the logits (float64)
  steps --anchors DIR --reference DIR --out FILE
                             on the reference's ResNet-8, initial weights and batch (float32):
                             a Mixup SGD step with a fixed lambda and permutation, and a SAM step
                             (davda54/sam's sequence) with GCE; gradients and the state after each
  coteaching --out FILE      Co-teaching's selection (bhanML/Co-teaching's loss_coteaching and
                             rate_schedule) on two networks' logits for a batch of 128: the kept
                             indices, both losses (with the reference's scaling) and label
                             precisions at forget rates 0.2 and 0.6, and the schedules over 200 epochs
  elr --out FILE             ELR (shengliu66/ELR's elr_loss, float64) over three steps on a table
                             of 20 samples: each step's logits, sample indices, batch loss, its
                             gradient with respect to the logits, and the running targets after it

Each command prints one `RESULT {json}` line last.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

N, C = 12, 10
LAMBDA = 0.3
PERMUTATION = [5, 2, 7, 0, 1, 3, 6, 4]
GCE_Q = 0.7
LR, MOMENTUM, WD, RHO = 0.1, 0.9, 5e-4, 0.05


# ---- the losses, as their reference code writes them (per sample, float64) ----

def ce(z, y, smoothing=0.0):
    return F.cross_entropy(z, y, reduction="none", label_smoothing=smoothing)


def ce_soft(z, t, smoothing=0.0):
    return F.cross_entropy(z, t, reduction="none", label_smoothing=smoothing)


def gce(z, y, q):
    # AlanChou/Truncated-Loss (without truncation): (1 - Yg^q) / q, Yg = softmax gathered at y.
    p = F.softmax(z, dim=1)
    yg = torch.gather(p, 1, y.unsqueeze(1)).squeeze(1)
    return (1 - yg ** q) / q


def sce(z, y, alpha, beta, log_zero):
    # YisenWang/symmetric_cross_entropy_for_noisy_labels: CE, then RCE with the prediction
    # clamped to [1e-7, 1] and the one-hot target to [exp(A), 1] (A = ln 1e-4 in the code).
    ce_ = F.cross_entropy(z, y, reduction="none")
    pred = torch.clamp(F.softmax(z, dim=1), min=1e-7, max=1.0)
    onehot = torch.clamp(F.one_hot(y, C).to(z.dtype), min=math.exp(log_zero), max=1.0)
    rce = -torch.sum(pred * torch.log(onehot), dim=1)
    return alpha * ce_ + beta * rce


def bootstrap_soft(z, y, beta):
    # Reed et al.: the target beta * onehot + (1 - beta) * softmax, the prediction detached.
    p = F.softmax(z, dim=1).detach()
    t = beta * F.one_hot(y, C).to(z.dtype) + (1 - beta) * p
    return -torch.sum(t * F.log_softmax(z, dim=1), dim=1)


def bootstrap_hard(z, y, beta):
    top = torch.argmax(z, dim=1).detach()
    t = beta * F.one_hot(y, C).to(z.dtype) + (1 - beta) * F.one_hot(top, C).to(z.dtype)
    return -torch.sum(t * F.log_softmax(z, dim=1), dim=1)


def losses(args):
    g = torch.Generator().manual_seed(7)
    z = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    z[0] = torch.linspace(-50, 50, C, dtype=torch.float64)       # +-50
    z[1] = -z[0]
    z[2, 4] = -60.0                                               # one class with p -> 0
    y = torch.randint(0, C, (N,), generator=g)
    y[1] = 9                                                      # the label where p ~ e^-100
    y[2] = 4                                                      # the label where p -> 0
    w = torch.rand(N, generator=g, dtype=torch.float64)
    w[3] = 0.0
    soft = torch.softmax(torch.randn(N, C, generator=g, dtype=torch.float64) * 2, dim=1)
    cases = {
        "ce": lambda z: ce(z, y),
        "ce_smooth": lambda z: ce(z, y, 0.1),
        "ce_soft": lambda z: ce_soft(z, soft),
        "ce_soft_smooth": lambda z: ce_soft(z, soft, 0.1),
        "gce": lambda z: gce(z, y, GCE_Q),
        "sce": lambda z: sce(z, y, 0.1, 1.0, math.log(1e-4)),
        "sce_paper": lambda z: sce(z, y, 0.1, 1.0, -4.0),
        "bootstrap_soft": lambda z: bootstrap_soft(z, y, 0.95),
        "bootstrap_hard": lambda z: bootstrap_hard(z, y, 0.8),
    }
    out = {"logits": z, "labels": y, "weights": w, "soft": soft}
    for name, f in cases.items():
        for weighted in (False, True):
            zz = z.clone().requires_grad_(True)
            per = f(zz)
            total = (per * w).sum() / w.sum() if weighted else per.mean()
            total.backward()
            key = name + ("_weighted" if weighted else "")
            out[key + ".losses"] = per.detach()
            out[key + ".grad"] = zz.grad.detach()
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print("RESULT " + json.dumps({"cases": list(cases)}))


# ---- whole steps on the reference ResNet-8 ----

def set_bn_momentum(model, mom):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = mom


def state(model, prefix):
    return {prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def grads(model, prefix):
    return {prefix + n: p.grad.detach().clone() for n, p in model.named_parameters()}


def steps(args):
    sys.path.insert(0, args.anchors)
    from torch_bench import build_model
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    init = load_file(os.path.join(args.reference, "init.safetensors"))
    batch = load_file(os.path.join(args.reference, "batch.safetensors"))
    x, y = batch["input"], batch["labels"]

    def fresh():
        m = build_model("resnet8")
        m.load_state_dict(init, strict=True)
        m.train()
        set_bn_momentum(m, 0.1)
        return m

    out = {}
    # Mixup (facebookresearch/mixup-cifar10): lam * x + (1 - lam) * x[index], then
    # lam * CE(pred, y_a) + (1 - lam) * CE(pred, y_b); one SGD step.
    model = fresh()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    index = torch.tensor(PERMUTATION)
    mixed = LAMBDA * x + (1 - LAMBDA) * x[index, :]
    logits = model(mixed)
    loss = LAMBDA * F.cross_entropy(logits, y) + (1 - LAMBDA) * F.cross_entropy(logits, y[index])
    loss.backward()
    out["mixup.loss"] = loss.detach().reshape(1)
    out.update(grads(model, "mixup.grad."))
    opt.step()
    out.update(state(model, "mixup.state."))

    # SAM with GCE: davda54/sam's order (BN statistics from the first pass only).
    model = fresh()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    loss = gce(model(x), y, GCE_Q).mean()
    loss.backward()
    out["gce_sam.loss"] = loss.detach().reshape(1)
    out.update(grads(model, "gce_sam.grad."))
    named = list(model.named_parameters())
    with torch.no_grad():
        norm = torch.norm(torch.stack([p.grad.norm(p=2) for _, p in named]), p=2)
        old = {n: p.detach().clone() for n, p in named}
        for _, p in named:
            p.add_(p.grad * (RHO / (norm + 1e-12)))
    set_bn_momentum(model, 0.0)
    model.zero_grad(set_to_none=True)
    loss2 = gce(model(x), y, GCE_Q).mean()
    loss2.backward()
    out["gce_sam.loss_perturbed"] = loss2.detach().reshape(1)
    out.update(grads(model, "gce_sam.grad_perturbed."))
    with torch.no_grad():
        for n, p in named:
            p.copy_(old[n])
    set_bn_momentum(model, 0.1)
    opt.step()
    out.update(state(model, "gce_sam.state."))
    save_file(out, args.out)
    print("RESULT " + json.dumps({"lambda": LAMBDA, "permutation": PERMUTATION, "q": GCE_Q}))


# ---- ELR over three steps (shengliu66/ELR, ELR/model/loss.py, in float64) ----

ELR_SAMPLES, ELR_BATCH, ELR_BETA, ELR_LAMBDA = 20, 8, 0.7, 3.0
ELR_INDICES = [[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11], [19, 0, 2, 4, 6, 8, 10, 12]]


class ELRReference:
    """As the reference code writes it: the target updated with the detached, clamped and
    renormalised prediction, then CE (mean) + lambda * mean(log(1 - <target, clamped p>))."""

    def __init__(self, num_examp, num_classes, beta, lam):
        self.target = torch.zeros(num_examp, num_classes, dtype=torch.float64)
        self.beta, self.lam = beta, lam

    def forward(self, index, output, label):
        y_pred = F.softmax(output, dim=1)
        y_pred = torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)
        y_pred_ = y_pred.data.detach()
        self.target[index] = self.beta * self.target[index] + (1 - self.beta) * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))
        ce_loss = F.cross_entropy(output, label)
        elr_reg = ((1 - (self.target[index] * y_pred).sum(dim=1)).log()).mean()
        return ce_loss + self.lam * elr_reg


def elr(args):
    g = torch.Generator().manual_seed(11)
    labels = torch.randint(0, C, (ELR_SAMPLES,), generator=g)
    ref = ELRReference(ELR_SAMPLES, C, ELR_BETA, ELR_LAMBDA)
    out = {"labels": labels}
    for step, idx in enumerate(ELR_INDICES):
        z = torch.randn(ELR_BATCH, C, generator=g, dtype=torch.float64) * 3
        if step == 1:
            z[0] = torch.linspace(-50, 50, C, dtype=torch.float64)   # classes clamped at both ends
        index = torch.tensor(idx)
        zz = z.clone().requires_grad_(True)
        loss = ref.forward(index, zz, labels[index])
        loss.backward()
        out[f"step{step}.logits"] = z
        out[f"step{step}.indices"] = index
        out[f"step{step}.loss"] = loss.detach().reshape(1)
        out[f"step{step}.grad"] = zz.grad.detach()
        out[f"step{step}.targets"] = ref.target.clone()
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print("RESULT " + json.dumps({"samples": ELR_SAMPLES, "batch": ELR_BATCH, "beta": ELR_BETA, "lambda": ELR_LAMBDA}))


# ---- Co-teaching's selection (bhanML/Co-teaching, loss.py and main.py) ----

def loss_coteaching(y_1, y_2, t, forget_rate, ind, noise_or_not):
    # As the reference writes it (reduce=False is reduction="none" today).
    loss_1 = F.cross_entropy(y_1, t, reduction="none")
    ind_1_sorted = torch.argsort(loss_1.data, stable=True)
    loss_1_sorted = loss_1[ind_1_sorted]
    loss_2 = F.cross_entropy(y_2, t, reduction="none")
    ind_2_sorted = torch.argsort(loss_2.data, stable=True)
    remember_rate = 1 - forget_rate
    num_remember = int(remember_rate * len(loss_1_sorted))
    pure_ratio_1 = float(noise_or_not[ind[ind_1_sorted[:num_remember]]].sum()) / float(num_remember)
    pure_ratio_2 = float(noise_or_not[ind[ind_2_sorted[:num_remember]]].sum()) / float(num_remember)
    ind_1_update = ind_1_sorted[:num_remember]
    ind_2_update = ind_2_sorted[:num_remember]
    loss_1_update = F.cross_entropy(y_1[ind_2_update], t[ind_2_update])
    loss_2_update = F.cross_entropy(y_2[ind_1_update], t[ind_1_update])
    return (torch.sum(loss_1_update) / num_remember, torch.sum(loss_2_update) / num_remember,
            pure_ratio_1, pure_ratio_2, ind_1_update, ind_2_update, num_remember)


def rate_schedule(forget_rate, n_epoch, num_gradual, exponent):
    import numpy as np
    r = np.ones(n_epoch) * forget_rate
    r[:num_gradual] = np.linspace(0, forget_rate ** exponent, num_gradual)
    return torch.tensor(r, dtype=torch.float64)


def coteaching(args):
    g = torch.Generator().manual_seed(13)
    n = 128
    y1 = torch.randn(n, C, generator=g, dtype=torch.float32) * 2
    y2 = torch.randn(n, C, generator=g, dtype=torch.float32) * 2
    t = torch.randint(0, C, (n,), generator=g)
    clean = (torch.rand(n, generator=g) < 0.5).to(torch.int64)   # noise_or_not: 1 where the label is clean
    ind = torch.arange(n)
    out = {"logits1": y1, "logits2": y2, "labels": t, "clean": clean}
    for rate in (0.2, 0.6):
        l1, l2, p1, p2, i1, i2, k = loss_coteaching(y1, y2, t, rate, ind, clean)
        key = f"rate{int(rate * 10)}"
        out[key + ".kept1"] = i1.sort().values
        out[key + ".kept2"] = i2.sort().values
        out[key + ".loss1"] = l1.detach().to(torch.float64).reshape(1)
        out[key + ".loss2"] = l2.detach().to(torch.float64).reshape(1)
        out[key + ".precision"] = torch.tensor([p1, p2], dtype=torch.float64)
        out[key + ".num_remember"] = torch.tensor([k])
    out["schedule.0.6.10.1"] = rate_schedule(0.6, 200, 10, 1)
    out["schedule.0.45.15.0.5"] = rate_schedule(0.45, 200, 15, 0.5)
    save_file({k: v.contiguous() for k, v in out.items()}, args.out)
    print("RESULT " + json.dumps({"batch": n}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("losses")
    a.add_argument("--out", required=True)
    b = sub.add_parser("steps")
    b.add_argument("--anchors", required=True)
    b.add_argument("--reference", required=True)
    b.add_argument("--out", required=True)
    e = sub.add_parser("elr")
    e.add_argument("--out", required=True)
    ct = sub.add_parser("coteaching")
    ct.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_default_dtype(torch.float32)
    {"losses": losses, "steps": steps, "elr": elr, "coteaching": coteaching}[args.command](args)


if __name__ == "__main__":
    main()
