"""A GPT-2-sized language model and a few short token sequences for the matrix-free benchmark (issue 25).

usage: gpt2.py OUTDIR [--sequences N] [--steps T] [--layers L] [--width D] [--heads H] [--vocab V]
                      [--context C] [--seed S]

Writes OUTDIR/gpt2.pt (torch.jit.script, eval mode), OUTDIR/gpt2_data.pt (torch.save((tokens,
targets)): int64 [N, T] each, the targets the tokens shifted by one) and prints the parameter count.

The defaults are GPT-2 small (Radford et al. 2019): 12 pre-norm blocks of width 768 with 12 heads,
a 4x MLP with tanh-GELU, learned positions for a 1,024-token context, a final LayerNorm and a head
tied to the 50,257-token embedding: 124,439,808 parameters. Attention is causal
F.scaled_dot_product_attention. No weights can be downloaded here: the model keeps GPT-2's
initialization (normal, std 0.02; residual projections scaled by 1/sqrt(2 L)), and the tokens are
seeded random ids. The logits come out [N, vocab, T] for dhess's --loss cross_entropy.
"""
import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        n, steps, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q = q.view(n, steps, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(n, steps, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(n, steps, self.heads, d // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(n, steps, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab: int, context: int, layers: int, d: int, heads: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, tokens):
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.lnf(x)).transpose(1, 2)


def add_size_arguments(ap):
    """The model's sizes (GPT-2 small by default): what the peers' script must be given to rebuild it."""
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--context", type=int, default=1024)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--steps", type=int, default=32)
    add_size_arguments(ap)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = Gpt(a.vocab, a.context, a.layers, a.width, a.heads).eval()
    stream = torch.randint(0, a.vocab, (a.sequences, a.steps + 1))
    os.makedirs(a.out, exist_ok=True)
    torch.jit.script(model).save(os.path.join(a.out, "gpt2.pt"))
    torch.save((stream[:, :-1].clone(), stream[:, 1:].clone()), os.path.join(a.out, "gpt2_data.pt"))
    print(sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
