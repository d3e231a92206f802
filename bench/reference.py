#!/usr/bin/env python3
"""A plain PyTorch (eager) InceptionXML / InceptionXML+, written from the model reference docs/MODEL.md: the
yardstick a user would otherwise run, for side-by-side benchmarks with `inceptionxml bench`.

Same data format (Extreme Classification Repository folder: trn_X.txt, trn_X_Y.txt, tst_*), same
text pipeline (MODEL.md §2), same model (sections 3-5), same optimisers and one-cycle schedule.
Idiomatic PyTorch: sparse embedding gradients with SparseAdam for the word table and the label
table W_e, Adam for the rest, torch.optim.lr_scheduler.OneCycleLR; InceptionXML+ builds its
candidate lists with batched tensor ops (no per-row Python loop, unlike the authors' code).

Usage:
  python3 bench/reference.py --data data/cooking --epochs 5                 # train + evaluate
  python3 bench/reference.py --data D --bench-steps 50                      # training throughput
  python3 bench/reference.py --data D --plus --clusters clusters.txt --bench-steps 20
  python3 bench/reference.py --data D --epochs 0 --bench-predict 1000       # prediction latency
Clusters for --plus come from `inceptionxml cluster` (header `labels clusters`, then one cluster
id per label) so both programs shortlist the same label groups.
Prints a human line and a JSON line per measurement.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

STOP_WORDS = set(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them their
    theirs themselves what which who whom this that that'll these those am is are was were be been
    being have has had having do does did doing a an the and but if or because as until while of
    at by for with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how all any
    both each few more most other some such no nor not only own same so than too very s t can will
    just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn
    didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn
    mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn
    wouldn't""".split()
)

SPLIT_RUNS = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
CONTRACTIONS = re.compile(r"('ve|'re|'d|'ll)")


def tokenize(text):
    """MODEL.md §2 (Unicode letters and digits kept, like the Rust pipeline)."""
    t = text.replace("_", " ")
    t = "".join(c if (c.isalnum() or c in ".'`") else " " for c in t)
    t = "".join(c for i, c in enumerate(t) if not (c == "." and i > 0 and t[i - 1].isalpha()))
    t = SPLIT_RUNS.sub(" ", t)
    t = t.replace("'s ", " ").replace("s' ", " ")
    t = CONTRACTIONS.sub(r" \1", t)
    toks = [w for w in t.lower().split() if w not in STOP_WORDS]
    return toks or text.lower().split()


def read_texts(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_labels(path):
    """Sparse `rows cols` header + `label:value` rows -> (list of label lists, cols)."""
    with open(path, encoding="utf-8") as f:
        rows, cols = map(int, f.readline().split())
        out = []
        for line in f:
            out.append(sorted({int(e.split(":")[0]) for e in line.split()}))
    out += [[] for _ in range(rows - len(out))]
    return out, cols


def read_clusters(path, n_labels):
    with open(path, encoding="utf-8") as f:
        labels, clusters = map(int, f.readline().split())
        assign = np.array([int(x) for x in f.read().split()], dtype=np.int64)
    if labels != n_labels or len(assign) != n_labels:
        sys.exit(f"{path}: {labels} labels, the data has {n_labels}")
    return assign, clusters


class Vocab:
    def __init__(self, token_lists, max_size=200_000):
        counts = Counter(w for toks in token_lists for w in toks)
        ranked = sorted(counts.items(), key=lambda e: (-e[1], e[0]))[: max(0, max_size - 2)]
        self.ids = {w: i + 1 for i, (w, _) in enumerate(ranked)}
        self.unk = len(self.ids) + 1
        self.size = len(self.ids) + 2

    def encode(self, token_lists, seq_len):
        out = np.zeros((len(token_lists), seq_len), dtype=np.int64)
        for r, toks in enumerate(token_lists):
            ids = [self.ids.get(w, self.unk) for w in toks[:seq_len]]
            out[r, : len(ids)] = ids
        return out


# ---- model (MODEL.md §3–5) -----------------------------------------------------------------


def xavier(layer, normal=False):
    w = layer.weight
    (nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_)(w)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class Encoder(nn.Module):
    def __init__(self, vocab, d, s, f, plus):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0, sparse=True)
        nn.init.uniform_(self.emb.weight, -0.25, 0.25)
        with torch.no_grad():
            self.emb.weight[0].zero_()
        self.w1 = spectral_norm(xavier(nn.Conv1d(s, s, 1, bias=False), normal=True))
        self.w2 = spectral_norm(xavier(nn.Conv1d(d, d, 1, bias=False), normal=True))
        self.g1 = nn.Parameter(torch.zeros(1))
        self.g2 = nn.Parameter(torch.zeros(1))
        self.proj = xavier(nn.Conv1d(s, f, 1))
        self.bn_proj = nn.BatchNorm1d(f)
        self.branches = nn.ModuleList(
            xavier(nn.Conv1d(f, f, k, stride=4, padding=2 * (k // 4 - 1), padding_mode="circular"))
            for k in (4, 8, 16)
        )
        self.bn_merge = nn.BatchNorm1d(3 * f)
        self.final = xavier(nn.Conv1d(3 * f, f, 16, stride=4))
        self.bn_final = nn.BatchNorm1d(f)
        self.drop = nn.Dropout(0.25)
        self.plus = plus

    def forward(self, ids):
        x = self.drop(self.emb(ids))  # [B, S, d]
        # attention over words: O1 = g1 (X X^T)(W1 X) + X
        o1 = self.g1 * torch.bmm(torch.bmm(x, x.transpose(1, 2)), self.w1(x)) + x
        # attention over dims: H = O1^T; O2 = g2 (H X)(W2 H) + H
        h = o1.transpose(1, 2)  # [B, d, S]
        o2 = self.g2 * torch.bmm(torch.bmm(h, x), self.w2(h)) + h
        x = o2.transpose(1, 2)  # [B, S, d]
        p = self.bn_proj(F.gelu(self.proj(x)))  # [B, F, d]
        if not self.plus:
            p = self.drop(p)
        h = torch.cat([b(p) for b in self.branches], dim=1)
        h = self.drop(self.bn_merge(F.gelu(h)))
        h = self.bn_final(F.gelu(self.final(h)))
        return h.flatten(1)  # channel-major [B, F * L2]


class InceptionXML(nn.Module):
    def __init__(self, vocab, n_labels, d=300, s=32, f=32, dropout_ext=0.5):
        super().__init__()
        self.enc = Encoder(vocab, d, s, f, plus=False)
        D = feature_dim(d, f)
        self.hidden = xavier(nn.Linear(D, D))
        self.bn = nn.BatchNorm1d(D)
        self.out = xavier(nn.Linear(D, n_labels))
        self.drop = nn.Dropout(0.25)
        self.drop_ext = nn.Dropout(dropout_ext)

    def forward(self, ids):
        hf = self.enc(ids)
        ho = self.bn(F.gelu(self.hidden(self.drop(hf))))
        return self.out(self.drop_ext(ho + hf))


class InceptionXMLPlus(nn.Module):
    def __init__(self, vocab, n_labels, n_clusters, hd, d=300, s=32, f=32, dropout_meta=0.3,
                 dropout_ext=0.5):
        super().__init__()
        self.enc = Encoder(vocab, d, s, f, plus=True)
        D = feature_dim(d, f)
        self.meta_hidden = spectral_norm(xavier(nn.Linear(D, hd)))
        self.meta_out = xavier(nn.Linear(hd, n_clusters))
        self.ext_hidden = spectral_norm(xavier(nn.Linear(D, hd)))
        self.table = nn.Embedding(n_labels, hd, sparse=True)
        nn.init.xavier_uniform_(self.table.weight)
        self.pool = None if hd == D else nn.AdaptiveAvgPool1d(hd)
        self.drop = nn.Dropout(0.25)
        self.drop_meta = nn.Dropout(dropout_meta)
        self.drop_ext = nn.Dropout(dropout_ext)

    def residual(self, hf):
        return hf if self.pool is None else self.pool(hf.unsqueeze(1)).squeeze(1)

    def meta(self, hf):
        hm = F.gelu(self.meta_hidden(self.drop(hf)))
        return self.meta_out(self.drop_meta(hm + self.residual(hf)))

    def extreme_features(self, hf):
        return self.drop_ext(F.gelu(self.ext_hidden(self.drop(hf))) + self.residual(hf))

    def extreme_logits(self, g, cand):
        """logits[b, j] = W_e[cand[b, j]] . g[b]"""
        return torch.bmm(self.table(cand), g.unsqueeze(2)).squeeze(2)


def feature_dim(d, f):
    l1 = (d - 4) // 4 + 1
    return f * ((l1 - 16) // 4 + 1)


class Shortlister:
    """Cluster members as a padded [C, M] tensor (-1 = padding)."""

    def __init__(self, assign, n_clusters, device):
        order = np.argsort(assign, kind="stable")
        sizes = np.bincount(assign, minlength=n_clusters)
        m = int(sizes.max())
        members = np.full((n_clusters, m), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for c in range(n_clusters):
            members[c, : sizes[c]] = order[starts[c] : starts[c + 1]]
        self.members = torch.from_numpy(members).to(device)
        self.assign = torch.from_numpy(assign).to(device)
        self.n_clusters = n_clusters

    def candidates(self, meta_scores, k):
        """Top-k clusters per row -> (candidate labels [B, k*M] clamped, mask [B, k*M])."""
        top = meta_scores.topk(k, dim=1).indices
        cand = self.members[top].flatten(1)
        mask = cand >= 0
        return cand.clamp(min=0), mask, top


# ---- data on the device ------------------------------------------------------------------------


def dense_targets(rows, n_cols, device):
    """[B, n_cols] float with 1 at each row's labels (built on the device from index pairs)."""
    r = [i for i, ls in enumerate(rows) for _ in ls]
    c = [l for ls in rows for l in ls]
    t = torch.zeros(len(rows), n_cols, device=device)
    if c:
        t[torch.tensor(r, device=device), torch.tensor(c, device=device)] = 1.0
    return t


def make_optimizers(model, sparse_params, lr, total_steps, pct_start):
    sparse_ids = {id(p) for p in sparse_params}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opts = [torch.optim.Adam(dense, lr=lr), torch.optim.SparseAdam(sparse_params, lr=lr)]
    scheds = [
        torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=lr, total_steps=max(total_steps, 2), pct_start=pct_start,
            anneal_strategy="cos", div_factor=10.0, final_div_factor=1e4,
            cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
        for o in opts
    ]
    return opts, scheds


def apply(opts, loss):
    """One optimiser step of every group from `loss`; returns it."""
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in opts:
        o.step()
    return loss


def step_plain(model, opts, ids, targets):
    return apply(opts, F.binary_cross_entropy_with_logits(model(ids), targets))


def padded_positives(rows, device):
    """[B, max positives] label ids, -1 padded (never B x L)."""
    width = max(1, max(len(ls) for ls in rows))
    p = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, ls in enumerate(rows):
        p[i, : len(ls)] = torch.tensor(ls, dtype=torch.long)
    return p.to(device)


def step_plus(model, sl, opts, ids, cluster_targets, positives, k, detach):
    hf = model.enc(ids)
    meta = model.meta(hf)
    meta_loss = F.binary_cross_entropy_with_logits(meta, cluster_targets)
    with torch.no_grad():
        cand, mask, _ = sl.candidates(torch.sigmoid(meta) + cluster_targets, k)
        # candidate j of row b is a positive: compare with the row's (few) padded positives
        y = ((cand.unsqueeze(2) == positives.unsqueeze(1)).any(2) & mask).float()
    g = model.extreme_features(hf.detach() if detach else hf)
    logits = model.extreme_logits(g, cand)
    m = mask.float()
    ext = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    ext_loss = (ext * m).sum() / m.sum().clamp(min=1.0)
    return apply(opts, meta_loss + ext_loss)


@torch.no_grad()
def predict(model, sl, ids, k, top_k_clusters, batch):
    """Top-k (labels, scores) per row, on the device."""
    model.eval()
    labels, scores = [], []
    for a in range(0, len(ids), batch):
        x = ids[a : a + batch]
        if sl is None:
            s, l = torch.sigmoid(model(x)).topk(k, dim=1)
        else:
            hf = model.enc(x)
            cand, mask, _ = sl.candidates(torch.sigmoid(model.meta(hf)), top_k_clusters)
            z = torch.sigmoid(model.extreme_logits(model.extreme_features(hf), cand))
            z = z.masked_fill(~mask, -1.0)
            s, j = z.topk(min(k, z.shape[1]), dim=1)
            l = cand.gather(1, j)
        labels.append(l)
        scores.append(s)
    model.train()
    return torch.cat(labels), torch.cat(scores)


def metrics(pred, truth, inv_prop, k=5):
    """P@1/3/5 and PSP@1/3/5 (x100)."""
    pred = pred.cpu().numpy()
    out = {}
    p = np.zeros(k)
    psp = np.zeros(k)
    best = np.zeros(k)
    for r, labels in enumerate(truth):
        pos = set(labels)
        hits = np.array([1.0 if l in pos else 0.0 for l in pred[r, :k]])
        w = np.array([inv_prop[l] if l in pos else 0.0 for l in pred[r, :k]])
        p += np.cumsum(hits)
        psp += np.cumsum(w)
        ideal = sorted((inv_prop[l] for l in labels), reverse=True)[:k]
        ideal += [0.0] * (k - len(ideal))
        best += np.cumsum(ideal)
    n = max(len(truth), 1)
    for j in (1, 3, 5):
        if j <= k:
            out[f"P@{j}"] = 100 * p[j - 1] / (n * j)
            out[f"PSP@{j}"] = 100 * psp[j - 1] / max(best[j - 1], 1e-12)
    return out


def inverse_propensity(rows, n_labels, a=0.55, b=1.5):
    freq = np.zeros(n_labels)
    for ls in rows:
        freq[ls] += 1
    n = len(rows)
    c = (math.log(n) - 1) * (b + 1) ** a
    return 1.0 + c * (freq + b) ** (-a)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/cooking")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--plus", action="store_true")
    ap.add_argument("--clusters", help="label -> cluster file (inceptionxml cluster)")
    ap.add_argument("--top-k", type=int, help="clusters shortlisted per row [C/64 in 16..800]")
    ap.add_argument("--hidden-dim", type=int, default=480)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--dropout-ext", type=float, default=0.5)
    ap.add_argument("--dropout-meta", type=float, default=0.3)
    ap.add_argument("--detach-fraction", type=float, default=0.25)
    ap.add_argument("--max-train", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--bench-steps", type=int, default=0, help="time this many training steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bench-predict", type=int, default=0, help="queries for prediction timing")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (not eager)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    dev = torch.device(a.device)
    epochs = a.epochs if a.epochs is not None else (35 if a.plus else 42)
    batch = a.batch_size or (256 if a.plus else 128)
    lr = a.lr or (0.008 if a.plus else 5e-3)

    t0 = time.time()
    trn_texts = read_texts(os.path.join(a.data, "trn_X.txt"))
    trn_rows, n_labels = read_labels(os.path.join(a.data, "trn_X_Y.txt"))
    if a.max_train:
        trn_texts, trn_rows = trn_texts[: a.max_train], trn_rows[: a.max_train]
    trn_tok = [tokenize(t) for t in trn_texts]
    vocab = Vocab(trn_tok)
    trn_ids = torch.from_numpy(vocab.encode(trn_tok, a.seq_len)).to(dev)
    tst_path = os.path.join(a.data, "tst_X.txt")
    tst_ids = tst_rows = None
    if os.path.exists(tst_path):
        tst_ids = torch.from_numpy(vocab.encode([tokenize(t) for t in read_texts(tst_path)], a.seq_len)).to(dev)
        tst_rows, _ = read_labels(os.path.join(a.data, "tst_X_Y.txt"))
    print(f"data: {len(trn_texts)} train texts, {n_labels} labels, vocab {vocab.size} ({time.time() - t0:.1f}s)", flush=True)

    sl = None
    if a.plus:
        if a.clusters:
            assign, n_clusters = read_clusters(a.clusters, n_labels)
        else:
            n_clusters = 1 << max(1, round(math.log2(max(n_labels / 10, 2))))
            print(f"no --clusters: {n_clusters} random balanced clusters (throughput only)")
            assign = np.random.permutation(n_labels) % n_clusters
        k = a.top_k or min(max(n_clusters // 64, 16), 800, n_clusters)
        sl = Shortlister(assign, n_clusters, dev)
        model = InceptionXMLPlus(vocab.size, n_labels, n_clusters, a.hidden_dim, a.dim, a.seq_len,
                                 dropout_meta=a.dropout_meta, dropout_ext=a.dropout_ext)
        sparse = [model.enc.emb.weight, model.table.weight]
    else:
        k = 0
        model = InceptionXML(vocab.size, n_labels, a.dim, a.seq_len, dropout_ext=a.dropout_ext)
        sparse = [model.enc.emb.weight]
    model.to(dev).train()
    fwd_model = torch.compile(model) if a.compile else model
    n = len(trn_texts)
    steps_per_epoch = max(1, math.ceil(n / batch))
    total = steps_per_epoch * epochs if a.bench_steps == 0 else a.bench_steps + a.warmup
    opts, scheds = make_optimizers(model, sparse, lr, total, 0.33 if a.plus else 0.3)
    detach_epochs = round(a.detach_fraction * epochs) if a.plus else 0

    def batch_of(rows_idx):
        rows = [trn_rows[i] for i in rows_idx]
        ids = trn_ids[torch.as_tensor(rows_idx, device=dev)]
        if a.plus:
            pos = padded_positives(rows, dev)
            ct = torch.zeros(len(rows), sl.n_clusters, device=dev)
            r, j = (pos >= 0).nonzero(as_tuple=True)
            ct[r, sl.assign[pos[r, j]]] = 1.0
            return ids, ct, pos
        return ids, dense_targets(rows, n_labels, dev), None

    def run_step(ids, t1, t2, detach):
        if a.plus:
            loss = step_plus(model, sl, opts, ids, t1, t2, k, detach)
        else:
            loss = step_plain(fwd_model, opts, ids, t1)
        for s in scheds:
            s.step()
        return loss

    if a.bench_steps > 0:
        times = []
        done = 0
        rng = np.random.default_rng(a.seed)
        while len(times) < a.bench_steps:
            order = rng.permutation(n)
            for s in range(n // batch):
                b = batch_of(order[s * batch : (s + 1) * batch].tolist())
                sync(dev)
                t = time.perf_counter()
                loss = run_step(*b, detach=False)
                loss.item()
                sync(dev)
                if done >= a.warmup:
                    times.append(time.perf_counter() - t)
                done += 1
                if len(times) == a.bench_steps:
                    break
        med = statistics.median(times)
        mem = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")
        kind = "InceptionXML+" if a.plus else "InceptionXML"
        print(f"reference train ({kind}, {dev}): {n_labels} labels, batch {batch}, {len(times)} steps: "
              f"median step {med * 1e3:.2f} ms, {batch / med:.0f} samples/s, "
              f"loss {loss.item():.5f}, peak GPU memory {mem:.0f} MiB", flush=True)
        print(json.dumps({"what": "train", "model": kind, "device": str(dev), "labels": n_labels,
                          "batch": batch, "median_step_ms": med * 1e3,
                          "samples_per_s": batch / med, "peak_gpu_mib": mem}), flush=True)

    elif epochs > 0:
        rng = np.random.default_rng(a.seed)
        inv_prop = inverse_propensity(trn_rows, n_labels)
        t_train = 0.0
        for ep in range(epochs):
            order = rng.permutation(n)
            tot, cnt = 0.0, 0
            t = time.perf_counter()
            for s in range(steps_per_epoch):
                idx = order[s * batch : (s + 1) * batch].tolist()
                if len(idx) < 2:
                    continue
                loss = run_step(*batch_of(idx), detach=ep < detach_epochs)
                tot += loss.item()
                cnt += 1
            sync(dev)
            t_train += time.perf_counter() - t
            line = f"epoch {ep + 1}/{epochs}: loss {tot / max(cnt, 1):.5f} ({time.perf_counter() - t:.1f}s)"
            if tst_ids is not None and (ep + 1 == epochs):
                pred, _ = predict(model, sl, tst_ids, 5, k, 256)
                m = metrics(pred, tst_rows, inv_prop)
                line += "  " + "  ".join(f"{key} {v:.2f}" for key, v in m.items())
                print(json.dumps({"what": "eval", "epoch": ep + 1, "loss": tot / max(cnt, 1),
                                  "train_s": t_train, **m}), flush=True)
            print(line, flush=True)

    if a.bench_predict > 0 and tst_ids is not None:
        q = tst_ids[: a.bench_predict]
        for bs in (1, 256):
            predict(model, sl, q[: min(len(q), 4 * bs)], 100, k, bs)  # warm-up
            lat = []
            if bs == 1:
                for i in range(len(q)):
                    sync(dev)
                    t = time.perf_counter()
                    l, s = predict(model, sl, q[i : i + 1], 100, k, 1)
                    l.cpu()
                    lat.append(time.perf_counter() - t)
                med = statistics.median(lat)
                print(f"reference predict ({dev}): batch 1, {len(q)} queries, top-100: median {med * 1e3:.2f} ms", flush=True)
                print(json.dumps({"what": "predict", "device": str(dev), "batch": 1, "median_ms": med * 1e3}), flush=True)
            else:
                sync(dev)
                t = time.perf_counter()
                l, s = predict(model, sl, q, 100, k, bs)
                l.cpu()
                total_s = time.perf_counter() - t
                print(f"reference predict ({dev}): batch {bs}, {len(q)} queries: {len(q) / total_s:.0f} queries/s "
                      f"({total_s * 1e3 / math.ceil(len(q) / bs):.2f} ms per batch)", flush=True)
                print(json.dumps({"what": "predict", "device": str(dev), "batch": bs,
                                  "queries_per_s": len(q) / total_s}), flush=True)


if __name__ == "__main__":
    main()
