#!/usr/bin/env python3
"""Writes the model zoo (issues 12 and 22): real architectures exported by the torch of the
project's environment (2.x), their data, and independent oracles.

For every model: NAME.pt (TorchScript; torch.jit.trace where the case says traced) and
NAME_data.pt (torch.save). For every case with an exact answer: NAME_H.npy, the Hessian of
the *eager* Python model in float64, differentiated twice with torch.autograd.grad row by row
(g = grad(loss, params, create_graph=True), row i = grad(g[i], params)), and NAME_eig.npy,
numpy.linalg.eigvalsh of (H + H^T)/2. zoo.json says, per case, which files and dhess flags to
use, n, and what dhess must do: match the oracle, or refuse with an exit code and a message.

The loss is the one dhess computes: the mean-reduction torch loss on model(*inputs), or with
--loss none the scalar forward(inputs, targets) returns. Parameters are Python's
named_parameters() (a tied tensor once, under its first name), filtered by --params' regex.
No stateless.functional_call: in torch 1.13 it does not swap an RNN's flat weights. Attention:
F.scaled_dot_product_attention picks fused kernels without a second derivative, so the oracle
differentiates its math backend (matmuls and a softmax); the GPT-style model's oracle does not
call it at all but writes the attention out by hand.
Nothing here uses dhess.

Usage: .venv/bin/python make_zoo.py OUTDIR
"""
import copy
import json
import os
import re
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
# Scripting a TransformerEncoderLayer warns about a constant it does not set; torch 2.11+ says
# TorchScript is deprecated at every script, trace, save and load: harmless here.
warnings.filterwarnings("ignore", message="'batch_first' was found in ScriptModule constants")
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
LOSSES = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "nll": F.nll_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}
REFUSED_COUPLED = {"kind": "refused", "exit": 64, "stderr": "coupled"}
cases = {}


def seed(k):
    torch.manual_seed(k)
    np.random.seed(k)


def selected(model, regex=None):
    """(names, tensors) of model.named_parameters() (ties once, first name) matching regex."""
    named = [(n, p) for n, p in model.named_parameters() if regex is None or re.search(regex, n)]
    return [n for n, _ in named], [p for _, p in named]


def loss_of(model, loss, inputs, targets):
    if loss == "none":
        return model(*inputs) if targets is None else model(*inputs, targets)
    return LOSSES[loss](model(*inputs), targets)


def rowwise_hessian(value, params):
    """H of the scalar `value` w.r.t. `params`, one backward pass per row; zeros where unused."""
    def flat(grads):
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    g = flat(torch.autograd.grad(value, params, create_graph=True, allow_unused=True))
    H = torch.zeros(g.numel(), g.numel(), dtype=torch.float64)
    for i in range(g.numel()):
        if g[i].requires_grad:
            H[i] = flat(torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)).detach()
    return H.numpy()


def oracle(model, loss, inputs, targets, regex=None, train=False):
    """H of the mean loss on the whole data set, on a float64 copy of the eager model, over every
    selected parameter: a frozen one (requires_grad=False) too, as dhess's layout says.

    The copy keeps the exported model's values (a float32 model is converted, as dhess does),
    and its train-mode forward (BatchNorm updating its running statistics) leaves the
    exported model alone."""
    m = copy.deepcopy(model).double().train(train)
    for module in m.modules():  # the GPT-style model's attention, written out by hand
        if isinstance(module, CausalSelfAttention):
            module.__class__ = HandWrittenCausalSelfAttention
    inputs = [t.double() if t.is_floating_point() else t for t in inputs]
    if targets is not None and targets.is_floating_point():
        targets = targets.double()
    names, params = selected(m, regex)
    for p in params:
        p.requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        return rowwise_hessian(loss_of(m, loss, inputs, targets), params), names


def check_export(path, model, inputs, train):
    """The saved TorchScript computes what the eager model computes, with the same parameters."""
    loaded = torch.jit.load(path)
    eager = copy.deepcopy(model).double().train(train)
    loaded = loaded.double().train(train)
    inputs = [t.double() if t.is_floating_point() else t for t in inputs]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        a, b = eager(*inputs), loaded(*inputs)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), f"{path}: TorchScript and eager forward differ"
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in eager.named_parameters()], path


def export(name, model, inputs, targets, traced=False, train=False, takes_targets=False):
    """Writes NAME.pt and NAME_data.pt; inputs is a list (several forward() arguments), and
    forward also takes the targets where it returns the loss itself (--loss none)."""
    path = os.path.join(OUT, name + ".pt")
    args = inputs + [targets] if takes_targets else inputs
    # The trace checker re-runs the model without gradients, where an eval-mode Transformer layer
    # takes its fused fast path (no derivative at all): a different graph, reported as an error.
    # Traced with the fast path off, as dhess.export traces.
    if traced:
        torch.backends.mha.set_fastpath_enabled(False)
        torch.jit.trace(model, tuple(args)).save(path)
        torch.backends.mha.set_fastpath_enabled(True)
    else:
        torch.jit.script(model).save(path)
    check_export(path, model, args, train)
    torch.save((inputs[0] if len(inputs) == 1 else tuple(inputs), targets), os.path.join(OUT, name + "_data.pt"))


def traced_twin(case, model, inputs, targets, **extra):
    """CASE_traced: the model of CASE exported by torch.jit.trace, against CASE's oracle."""
    export(case + "_traced", model, inputs, targets, traced=True)
    cases[case + "_traced"] = {**cases[case], "model": case + "_traced.pt", "data": case + "_traced_data.pt",
                               "export": "trace", **extra}


def exact_case(case, model, model_name, inputs, targets, loss, flags=(), regex=None, train=False, **extra):
    """Computes and writes the oracle of one case and adds it to the manifest."""
    start = time.time()
    H, names = oracle(model, loss, inputs, targets, regex, train)
    np.save(os.path.join(OUT, case + "_H.npy"), H)
    np.save(os.path.join(OUT, case + "_eig.npy"), np.linalg.eigvalsh((H + H.T) / 2))
    flags = list(flags) + (["--params", regex] if regex else []) + (["--train-mode"] if train else [])
    cases[case] = {"model": model_name + ".pt", "data": model_name + "_data.pt", "loss": loss, "flags": flags,
                   "n": H.shape[0], "parameters": names, "oracle": case, "expect": {"kind": "exact"},
                   "oracle_seconds": round(time.time() - start, 2), **extra}
    print(f"{case:24s} n = {H.shape[0]:5d}  {time.time() - start:6.1f} s", flush=True)
    return H


def refused_case(case, base, flags, why):
    cases[case] = {**cases[base], "flags": cases[base]["flags"] + flags, "expect": dict(REFUSED_COUPLED),
                   "oracle": None, "why": why}


def randomize_norms(model):
    """Norm layers start at weight 1, bias 0: move them off that special point."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            with torch.no_grad():
                m.weight.uniform_(0.6, 1.4)
                m.bias.normal_(0.0, 0.2)


def warm_batch_norm(model, shape, steps=5):
    """A few train-mode forwards so that running_mean/running_var are not 0/1."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape) * 1.7 + 0.4)
    model.eval()


# --- the models --------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class ResBlockNet(nn.Module):
    """Stem conv + BN, one residual block, max-pool, global average pool, linear head."""

    def __init__(self, c=6, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.block = BasicBlock(c)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        x = self.block(F.relu(self.bn0(self.stem(x))))
        return self.head(torch.flatten(self.gap(self.pool(x)), 1))


class LstmTokens(nn.Module):
    """Embedding on token ids -> 2-layer LSTM -> the next token from the last step."""

    def __init__(self, vocab=7, dim=4, hidden=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.emb(tokens))
        return self.head(out[:, -1])


class GruMask(nn.Module):
    """GRU over a sequence, outputs masked (bool mask, a second input) and mean-pooled."""

    def __init__(self, features=3, hidden=6, outputs=2):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x, mask):
        out, _ = self.gru(x)
        m = mask.unsqueeze(-1).to(out.dtype)
        return self.head((out * m).sum(1) / m.sum(1).clamp(min=1.0))


class TinyTransformer(nn.Module):
    """Input projection + learned positions -> TransformerEncoderLayer (GELU) -> mean pool -> head."""

    def __init__(self, features=3, d=8, steps=5, classes=3):
        super().__init__()
        self.inp = nn.Linear(features, d)
        self.pos = nn.Parameter(0.3 * torch.randn(1, steps, d))
        self.enc = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=16, dropout=0.1, activation="gelu",
                                              batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.enc(self.inp(x) + self.pos).mean(1))


class TiedLM(nn.Module):
    """A tiny language model whose decoder weight IS the embedding weight."""

    def __init__(self, vocab=5, dim=3, tie=True):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hid = nn.Linear(dim, dim)
        self.dec = nn.Linear(dim, vocab)
        if tie:
            self.dec.weight = self.emb.weight

    def forward(self, tokens):
        return self.dec(torch.tanh(self.hid(self.emb(tokens)))).transpose(1, 2)  # [N, vocab, T]


class Conv1dNorms(nn.Module):
    def __init__(self, length=10):
        super().__init__()
        self.c1 = nn.Conv1d(2, 6, 3, padding=1)
        self.gn = nn.GroupNorm(2, 6)
        self.act1 = nn.SiLU()
        self.c2 = nn.Conv1d(6, 4, 3)
        self.ln = nn.LayerNorm(length - 2)
        self.act2 = nn.ELU()
        self.drop = nn.Dropout(0.3)
        self.f1 = nn.Linear(4 * (length - 2), 6)
        self.act3 = nn.Softplus()
        self.f2 = nn.Linear(6, 2)

    def forward(self, x):
        x = self.act2(self.ln(self.c2(self.act1(self.gn(self.c1(x))))))
        return self.f2(self.act3(self.f1(self.drop(torch.flatten(x, 1)))))


class BnMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 6)
        self.bn = nn.BatchNorm1d(6)
        self.l2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.l2(torch.tanh(self.bn(self.l1(x))))


class SumLoss(nn.Module):
    """forward(x, y) returns the SUM of per-sample squared errors, not their mean."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 5)
        self.l2 = nn.Linear(5, 2)

    def forward(self, x, y):
        return ((self.l2(torch.tanh(self.l1(x))) - y) ** 2).sum()


class EmbeddingLayerNorm(nn.Module):
    """Token ids -> Embedding (padding_idx) -> LayerNorm -> mean over the sequence -> leaky ReLU ->
    Linear. TorchScript's optimizing graph executor differentiates this with its own formulas
    (autodiff subgraphs), off from eager by about 7e-10 of max|H|: dhess must interpret it as written."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 5, padding_idx=0)
        self.ln = nn.LayerNorm(5)
        self.out = nn.Linear(5, 2)

    def forward(self, tokens):
        return self.out(F.leaky_relu(self.ln(self.emb(tokens)).mean(1), 0.1))


class OwnCrossEntropy(nn.Module):
    """--loss none with integer labels: forward computes its own (mean) cross-entropy."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(3, 5)
        self.l2 = nn.Linear(5, 4)

    def forward(self, x, y):
        return F.cross_entropy(self.l2(torch.tanh(self.l1(x))), y)


class EncoderCausal(nn.Module):
    """Token ids -> embedding + learned positions -> TransformerEncoderLayer (batch_first, GELU,
    norm_first) under a causal mask -> a head on every step: [N, classes, T] logits."""

    def __init__(self, vocab=9, d=8, steps=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.3 * torch.randn(1, steps, d))
        self.enc = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=12, dropout=0.1, activation="gelu",
                                              batch_first=True, norm_first=True)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(steps))

    def forward(self, tokens):
        h = self.enc(self.emb(tokens) + self.pos, src_mask=self.causal, is_causal=True)
        return self.head(h).transpose(1, 2)


class DecoderCausal(nn.Module):
    """A TransformerDecoderLayer (batch_first, GELU): causal self-attention over the target
    sequence, cross-attention to a float memory sequence (a second input)."""

    def __init__(self, features=3, d=8, steps=4, classes=3):
        super().__init__()
        self.tgt = nn.Linear(features, d)
        self.mem = nn.Linear(features, d)
        self.dec = nn.TransformerDecoderLayer(d, nhead=2, dim_feedforward=12, dropout=0.1, activation="gelu",
                                              batch_first=True)
        self.head = nn.Linear(d, classes)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(steps))

    def forward(self, x, memory):
        h = self.dec(self.tgt(x), self.mem(memory), tgt_mask=self.causal, tgt_is_causal=True)
        return self.head(h.mean(1))


class MhaPadded(nn.Module):
    """nn.MultiheadAttention (batch_first, attention weights returned) with a key padding mask."""

    def __init__(self, features=4, d=6, classes=2):
        super().__init__()
        self.inp = nn.Linear(features, d)
        self.mha = nn.MultiheadAttention(d, num_heads=2, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x, padding):
        h = self.inp(x)
        out, _ = self.mha(h, h, h, key_padding_mask=padding)
        return self.head(out.mean(1))


class CausalSelfAttention(nn.Module):
    """GPT-style attention through F.scaled_dot_product_attention(is_causal=True)."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def split_heads(self, t, n: int, steps: int, d: int):
        return t.view(n, steps, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x):
        n, steps, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        y = self.attend(self.split_heads(q, n, steps, d), self.split_heads(k, n, steps, d),
                        self.split_heads(v, n, steps, d))
        return self.proj(y.transpose(1, 2).reshape(n, steps, d))

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class HandWrittenCausalSelfAttention(CausalSelfAttention):
    """The same attention, written out (the oracle's): softmax(q k^T / sqrt(d_head) + causal mask) v."""

    def attend(self, q, k, v):
        steps = q.size(2)
        scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
        future = torch.ones(steps, steps, dtype=torch.bool).triu(1)
        return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v


class AttentionWithoutMask(CausalSelfAttention):
    """What a lost is_causal would compute (make_zoo checks it differs)."""

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class GptBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TinyGpt(nn.Module):
    """A GPT-style language model: token and position embeddings, one pre-norm block, a final
    LayerNorm and a head tied to the token embedding; logits [N, vocab, T]."""

    def __init__(self, vocab=11, d=8, heads=2, steps=6):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(steps, d)
        self.block = GptBlock(d, heads)
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, tokens):
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.block(self.wte(tokens) + self.wpe(positions))
        return self.head(self.lnf(x)).transpose(1, 2)


def tied_mutation_check(model, H, tokens, targets):
    """The tied oracle must be the chain rule applied to the untied model's Hessian, and must
    differ from the Hessian that counts the shared tensor twice: the comparison can fail."""
    untied = TiedLM(tie=False)
    untied.load_state_dict(model.state_dict())
    Hu, names = oracle(untied, "cross_entropy", [tokens], targets)
    assert names == ["emb.weight", "hid.weight", "hid.bias", "dec.weight", "dec.bias"], names
    E, h, n = 15, 15, H.shape[0]  # emb.weight and dec.weight sizes; hid.weight + hid.bias = 12
    J = np.zeros((Hu.shape[0], n))  # d(untied parameters) / d(tied parameters)
    J[:E + 12, :E + 12] = np.eye(E + 12)
    J[E + 12:E + 12 + h, :E] = np.eye(E)
    J[E + 12 + h:, E + 12:] = np.eye(n - E - 12)
    assert np.abs(J.T @ Hu @ J - H).max() <= 1e-12 * np.abs(H).max(), "tied oracle != chain rule on untied"
    twice = J @ H @ J.T  # the shared tensor's rows and columns duplicated, as counting it twice gives
    top, top_twice = np.linalg.eigvalsh(H)[-1], np.linalg.eigvalsh(twice)[-1]
    assert abs(top - top_twice) > 1e-3 * abs(top), "counting the tied tensor twice would go unnoticed"
    assert np.abs(Hu - twice).max() > 1e-3 * np.abs(H).max(), "untied and tied Hessians coincide"


start = time.time()

# Residual block with BatchNorm2d in eval mode (non-trivial running statistics), max-pool, GAP.
seed(101)
net = ResBlockNet()
randomize_norms(net)
warm_batch_norm(net, (16, 2, 8, 8))
x, y = torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,))
export("resblock", net, [x], y)
exact_case("resblock", net, "resblock", [x], y, "cross_entropy")
exact_case("resblock_block_params", net, "resblock", [x], y, "cross_entropy", regex=r"^block\.")
# In eval mode BatchNorm does not couple samples: micro-batches (3+3+2) give the same H.
cases["resblock_microbatch"] = {**cases["resblock"], "flags": ["--batch-size", "3"]}

# Embedding on int64 token ids -> 2-layer LSTM -> next token.
seed(202)
net = LstmTokens()
tokens = torch.randint(0, 7, (10, 6))
y = torch.randint(0, 7, (10,))
export("lstm_tokens", net, [tokens], y)
exact_case("lstm_tokens", net, "lstm_tokens", [tokens], y, "cross_entropy")
exact_case("lstm_tokens_layer1", net, "lstm_tokens", [tokens], y, "cross_entropy", regex=r"^lstm\..*_l1$")

# Traced GRU with two inputs: a float sequence and a bool mask; BCE with logits.
seed(303)
net = GruMask().eval()
x = torch.randn(8, 5, 3)
mask = torch.rand(8, 5) > 0.3
mask[:, 0] = True
y = (torch.rand(8, 2) > 0.5).double()
export("gru_mask_traced", net, [x, mask], y, traced=True)
exact_case("gru_mask_traced", net, "gru_mask_traced", [x, mask], y, "bce_with_logits", export="trace")

# TransformerEncoderLayer (attention, LayerNorm, GELU, dropout in eval) with learned positions.
seed(404)
net = TinyTransformer().eval()
randomize_norms(net)
x, y = torch.randn(6, 5, 3), torch.randint(0, 3, (6,))
export("transformer", net, [x], y)
exact_case("transformer", net, "transformer", [x], y, "cross_entropy")

# Tied embedding/decoder language model: dec.weight is emb.weight, one tensor, counted once.
tied_layout = {"names": ["emb.weight", "hid.weight", "hid.bias", "dec.bias"], "aliases": {"emb.weight": ["dec.weight"]}}
seed(505)
net = TiedLM().eval()
tokens = torch.randint(0, 5, (6, 4))
y = torch.randint(0, 5, (6, 4))
export("tied_lm", net, [tokens], y)
H = exact_case("tied_lm", net, "tied_lm", [tokens], y, "cross_entropy", layout=tied_layout)
tied_mutation_check(net, H, tokens, y)
# Padded targets: -100 (torch's ignore_index) is left out of the mean, which is then over the
# targets counted, not the samples: micro-batches of 2 are exact only if each weighs its count;
# samples 2 and 3 are all padding, so one micro-batch weighs nothing.
padded = y.clone()
padded[0, 1:] = -100
padded[2:4] = -100
padded[5, 3] = -100
by_samples = sum(F.cross_entropy(net(tokens[i:i + 2]), padded[i:i + 2]) for i in (0, 4)) / 3
assert abs(by_samples - F.cross_entropy(net(tokens), padded)) > 1e-2, "weighting by samples would go unnoticed"
export("tied_lm_padded", net, [tokens], padded)
exact_case("tied_lm_padded", net, "tied_lm_padded", [tokens], padded, "cross_entropy", flags=["--batch-size", "2"])
# The same model exported in float32: dhess converts it to float64 and must keep the tie.
net32 = copy.deepcopy(net).float()
assert net32.dec.weight is net32.emb.weight
export("tied_lm_f32", net32, [tokens], y)
exact_case("tied_lm_f32", net32, "tied_lm_f32", [tokens], y, "cross_entropy", layout=tied_layout,
           exported_dtype="float32")

# Conv1d + GroupNorm + LayerNorm + SiLU/ELU/Softplus + Dropout (eval), exported in float32:
# dhess runs it in float64, the oracle upcasts the same float32 values.
seed(606)
net = Conv1dNorms()
randomize_norms(net)
net = net.float().eval()
x, y = torch.randn(10, 2, 10, dtype=torch.float32), torch.randn(10, 2, dtype=torch.float32)
export("conv1d_norms", net, [x], y)
exact_case("conv1d_norms", net, "conv1d_norms", [x], y, "mse", exported_dtype="float32")

# BatchNorm in train mode: exact on the whole data set in one batch; micro-batches refused.
seed(707)
net = BnMlp()
randomize_norms(net)
warm_batch_norm(net, (16, 3))
x, y = torch.randn(12, 3), torch.randint(0, 3, (12,))
export("bn_train", net, [x], y, train=True)
exact_case("bn_train", net, "bn_train", [x], y, "cross_entropy", train=True)
refused_case("bn_train_batch4", "bn_train", ["--batch-size", "4"],
             "BatchNorm in train mode normalizes by the batch it sees: micro-batches change the loss")
# The same model in eval mode: running statistics, no coupling; exact on any split of the data.
exact_case("bn_eval", net, "bn_train", [x], y, "cross_entropy")

# A frozen first layer (requires_grad=False, as in fine-tuning): in H like every parameter.
frozen = copy.deepcopy(net).eval()
frozen.l1.weight.requires_grad_(False)
export("frozen_l1", frozen, [x], y)
exact_case("frozen_l1", frozen, "frozen_l1", [x], y, "cross_entropy", frozen=["l1.weight"])

# --loss none with forward returning a SUM over samples: exact in one batch; micro-batches refused.
seed(808)
net = SumLoss().eval()
x, y = torch.randn(10, 3), torch.randn(10, 2)
export("sum_loss_none", net, [x], y, takes_targets=True)
exact_case("sum_loss_none", net, "sum_loss_none", [x], y, "none")
refused_case("sum_loss_none_batch2", "sum_loss_none", ["--batch-size", "2"],
             "a sum over samples is not a mean: micro-batches weighted by their size change the loss")

# Embedding -> LayerNorm, where the graph executor's own derivatives would be off (see the class).
seed(1010)
net = EmbeddingLayerNorm().eval()
tokens, y = torch.randint(0, 12, (6, 7)), torch.randint(0, 2, (6,))
export("embedding_layernorm", net, [tokens], y)
exact_case("embedding_layernorm", net, "embedding_layernorm", [tokens], y, "cross_entropy")

# --loss none with int64 labels: forward's own cross-entropy gets the labels as integers; a mean
# over samples, so micro-batches (3+3+3+1) are exact.
seed(909)
net = OwnCrossEntropy().eval()
x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
export("loss_none_int_labels", net, [x], y, takes_targets=True)
exact_case("loss_none_int_labels", net, "loss_none_int_labels", [x], y, "none", flags=["--batch-size", "3"])

# --- models torch 2.x writes (issue 22): attention through scaled_dot_product_attention ----------

# TransformerEncoderLayer (batch_first, GELU, pre-norm) under a causal mask, on token ids.
seed(1111)
net = EncoderCausal().eval()
randomize_norms(net)
tokens, y = torch.randint(0, 9, (4, 5)), torch.randint(0, 9, (4, 5))
export("encoder_causal", net, [tokens], y)
exact_case("encoder_causal", net, "encoder_causal", [tokens], y, "cross_entropy")
traced_twin("encoder_causal", net, [tokens], y)

# TransformerDecoderLayer (batch_first, GELU): causal self-attention and cross-attention to memory.
seed(1212)
net = DecoderCausal().eval()
randomize_norms(net)
x, memory, y = torch.randn(5, 4, 3), torch.randn(5, 3, 3), torch.randint(0, 3, (5,))
export("decoder_causal", net, [x, memory], y)
exact_case("decoder_causal", net, "decoder_causal", [x, memory], y, "cross_entropy")
traced_twin("decoder_causal", net, [x, memory], y)

# nn.MultiheadAttention with a key padding mask (the last steps of some sequences padded), MSE.
seed(1313)
net = MhaPadded().eval()
x, padding, y = torch.randn(6, 5, 4), torch.zeros(6, 5, dtype=torch.bool), torch.randn(6, 2)
padding[1, 3:] = True
padding[4, 2:] = True
export("mha_padded", net, [x, padding], y)
exact_case("mha_padded", net, "mha_padded", [x, padding], y, "mse")
traced_twin("mha_padded", net, [x, padding], y)

# GPT-style LM: F.scaled_dot_product_attention(is_causal=True), tied head, -100 padded targets,
# micro-batches of 2 (the padded targets weigh each micro-batch). The oracle's attention is
# written out by hand; it must equal SDPA's forward, and the causal mask must matter.
seed(1414)
net = TinyGpt().eval()
randomize_norms(net)
tokens, y = torch.randint(0, 11, (5, 6)), torch.randint(0, 11, (5, 6))
y[0, 4:] = -100
y[3, 1:] = -100
hand = copy.deepcopy(net)
hand.block.attn.__class__ = HandWrittenCausalSelfAttention
acausal = copy.deepcopy(net)
acausal.block.attn.__class__ = AttentionWithoutMask
with torch.no_grad():
    assert torch.allclose(hand(tokens), net(tokens), rtol=1e-12, atol=1e-12), "hand-written attention != SDPA"
    assert (acausal(tokens) - net(tokens)).abs().max() > 1e-3, "the causal mask would go unnoticed"
export("gpt_sdpa", net, [tokens], y)
exact_case("gpt_sdpa", net, "gpt_sdpa", [tokens], y, "cross_entropy", flags=["--batch-size", "2"],
           layout={"names": [n for n, _ in net.named_parameters()], "aliases": {"wte.weight": ["head.weight"]}})
traced_twin("gpt_sdpa", net, [tokens], y)

with open(os.path.join(OUT, "zoo.json"), "w") as f:
    json.dump({"cases": cases, "seconds": round(time.time() - start, 1)}, f, indent=2)
print(f"model zoo: {len(cases)} cases written to {OUT} in {time.time() - start:.1f} s")
