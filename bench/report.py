"""Render bench/RESULTS.md from the raw records bench/run.sh wrote (bench/results/raw-<mode>/).

Also writes bench/results/summary-<mode>.json: the headline numbers, kept in git.
"""
import argparse
import glob
import json
import os
import re

GB = 1e9


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Raw:
    def __init__(self, d):
        self.d = d

    def get(self, name):
        return load(os.path.join(self.d, name))

    def summary(self, name):
        return self.get(name + ".summary.json")

    def time(self, name):
        return self.get(name + ".time.json")

    def foreign(self, name):
        t = self.time(name)
        return t.get("foreign_cores") if t else None

    def best(self, prefix, key):
        """Among prefix_1..3, the run with the smallest key(summary); returns (name, summary)."""
        best = (None, None)
        for path in sorted(glob.glob(os.path.join(self.d, prefix + "_[0-9].summary.json"))):
            s = load(path)
            name = os.path.basename(path)[:-len(".summary.json")]
            if s and (best[1] is None or key(s) < key(best[1])):
                best = (name, s)
        return best


def fmt(v, digits=3):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    if abs(v) >= 100:
        return "{:.1f}".format(v)
    return "{:.{}g}".format(v, digits)


def count(v):
    """An integer count with thousands separators."""
    return "—" if v is None else "{:,}".format(int(v))


def gb(v):
    return "—" if v is None else "{:.2f} GB".format(v / GB)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(fmt(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def fc(v):
    """Foreign cores, flagged when other work took a quarter core or more during the run."""
    if v is None:
        return "—"
    return "{:.2f}".format(v) if v < 0.25 else "**{:.2f} (noisy)**".format(v)


def verdict(ok, text):
    """ok is True, False or "partly" (met for some sizes or rank counts, missed for others)."""
    word = "partly met" if ok == "partly" else "met" if ok else "missed"
    return "**" + word + "**" + (" — " + text if text else "")


class Report:
    def __init__(self, raw, mode):
        self.raw = Raw(raw)
        self.mode = mode
        self.lines = []
        self.targets = []
        self.headline = {}

    def w(self, *parts):
        self.lines.append("".join(parts))

    def target(self, name, ok, text):
        self.targets.append((name, ok, text))

    # ------------------------------------------------------------------ machine
    def machine(self):
        m = self.raw.get("machine.json") or {}
        foreign = []
        for path in glob.glob(os.path.join(self.raw.d, "*.time.json")):
            t = load(path)
            if t and t.get("foreign_cores") is not None:
                foreign.append((t["foreign_cores"], os.path.basename(path)[:-10], t.get("wall_seconds", 0)))
        self.w("## Machine and method\n")
        self.w("- CPU: {} — {} cores, {} GB RAM, Linux {}; no GPU".format(
            m.get("cpu"), m.get("cores"), m.get("mem_gb"), m.get("kernel")))
        self.w("- torch {}, numpy {} on {} (OpenBLAS), ELPA {}; dhess git {}".format(
            m.get("torch"), m.get("numpy"), m.get("blas"), m.get("elpa"), m.get("git")))
        self.w("- run: `{}` ({} mode), started {}, loadavg at start {}".format(
            m.get("command", "bench/run.sh"), m.get("mode"), m.get("date"), m.get("loadavg_at_start")))
        if foreign:
            total_wall = sum(f[2] for f in foreign) or 1
            mean = sum(f[0] * f[2] for f in foreign) / total_wall
            worst = max(foreign)
            noisy = sorted(f for f in foreign if f[0] > 0.25)
            self.w("- machine load from others during the timed runs (`foreign_cores` = CPU time of other "
                   "processes / wall time, from /proc/stat): time-weighted mean {:.2f} cores, worst {:.2f} ({}). "
                   "{} of {} timed runs saw more than 0.25 foreign cores{}.".format(
                       mean, worst[0], worst[1], len(noisy), len(foreign),
                       ": " + ", ".join("{} ({:.2f})".format(f[1], f[0]) for f in noisy[-12:]) if noisy else ""))
        self.w("- every dhess run is `mpirun -n P --bind-to none dhess ... --threads T` with "
               "OPENBLAS_NUM_THREADS=T; Python peers use torch.set_num_threads(T) and OPENBLAS_NUM_THREADS=T; "
               "\"equal cores\" compares P×T dhess cores with T' = P×T Python threads.")
        self.w("- ratios are dhess / peer: < 1 means dhess is faster.\n")

    # ------------------------------------------------------------------ a
    def section_a(self):
        self.w("## a. HVP phase / full Hessian\n")
        self.w("dhess: `--eigen none`, best of 3 runs, `timings_seconds.hvp` (HVP passes; the assembly into the "
               "block-cyclic matrix is `redistribution`). Peers: whole n×n Hessian (flat parameter vector, same "
               "model weights and data from `dhess export`), timed once (mlp: best of 5), verified against dhess's "
               "hessian.h5.\n")
        models = sorted({re.match(r"a_(.+)_r1t1_1\.summary\.json", os.path.basename(p)).group(1)
                         for p in glob.glob(os.path.join(self.raw.d, "a_*_r1t1_1.summary.json"))},
                        key=lambda m: (load(os.path.join(self.raw.d, "a_{}_r1t1_1.summary.json".format(m))) or
                                       {"n": 0})["n"])
        for model in models:
            runs = {}
            for cfg in ("r1t1", "r2t1", "r1t2"):
                name, s = self.raw.best("a_{}_{}".format(model, cfg), lambda s: s["timings_seconds"]["hvp"])
                if s:
                    runs[cfg] = (name, s)
            if not runs:
                continue
            n = next(iter(runs.values()))[1]["n"]
            self.w("### {} (n = {:,})\n".format(model.replace("_", ":"), n))
            rows = []
            for cfg, label in (("r1t1", "1 rank × 1 thread"), ("r2t1", "2 ranks × 1 thread"),
                               ("r1t2", "1 rank × 2 threads")):
                if cfg not in runs:
                    continue
                name, s = runs[cfg]
                t = s["timings_seconds"]
                all3 = [load(p)["timings_seconds"]["hvp"] for p in
                        sorted(glob.glob(os.path.join(self.raw.d, "a_{}_{}_[0-9].summary.json".format(model, cfg))))]
                rows.append(["dhess " + label, t["hvp"], s["hvp"]["columns_per_second"], t["redistribution"],
                             " / ".join(fmt(x) for x in all3), "—", fc(self.raw.foreign(name))])
            peers = {}
            for threads in (1, 2):
                p = self.raw.get("a_{}_python_t{}.json".format(model, threads))
                if not p:
                    continue
                fr = fc(self.raw.foreign("a_{}_python_t{}".format(model, threads)))
                for r in p["results"]:
                    label = "{} [T={}]".format(r["method"], threads)
                    if "extrapolated_from_columns" in r:
                        label += " (extrapolated from {} columns)".format(r["extrapolated_from_columns"])
                    if r.get("error"):
                        rows.append([label, "failed: " + r["error"][:80], None, None, None, None, fr])
                        continue
                    rows.append([label, r["seconds"], r["columns_per_second"], None, None,
                                 r.get("max_abs_diff_relative"), fr])
                    ok_result = r.get("max_abs_diff_relative", 0) is not None and r.get("max_abs_diff_relative", 0) < 1e-10
                    if ok_result and (threads not in peers or r["seconds"] < peers[threads]["seconds"]):
                        peers[threads] = r
            self.w(table(["run", "seconds", "columns/s", "redistribution s", "all runs (s)",
                          "max|H−H_dhess|/max|H_dhess|", "foreign cores"], rows))
            hvp = {cfg: runs[cfg][1]["timings_seconds"]["hvp"] for cfg in runs}
            head = {"n": n}
            lines = []
            # With 2 cores a Python user may also run 1 thread: the peer to beat is the fastest at <= the cores.
            for t in (2,):
                if 1 in peers and (t not in peers or peers[1]["seconds"] < peers[t]["seconds"]):
                    peers[t] = dict(peers[1], method=peers[1]["method"] + " [T=1]")
            for cfg, threads, label in (("r1t1", 1, "1 core: dhess 1×1 vs fastest peer at T=1"),
                                        ("r2t1", 2, "2 cores: dhess 2 ranks × 1 vs fastest peer at T ≤ 2"),
                                        ("r1t2", 2, "2 cores: dhess 1 rank × 2 threads vs fastest peer at T ≤ 2")):
                if cfg in hvp and threads in peers:
                    ratio = hvp[cfg] / peers[threads]["seconds"]
                    head["ratio_" + cfg] = ratio
                    lines.append("- {}: {} s / {} s ({}) = **{:.3f}** (dhess {:.2f}× {})".format(
                        label, fmt(hvp[cfg]), fmt(peers[threads]["seconds"]), peers[threads]["method"], ratio,
                        1 / ratio if ratio <= 1 else ratio, "faster" if ratio <= 1 else "slower"))
            if "r1t1" in hvp and "r2t1" in hvp:
                head["speedup_1_to_2_ranks"] = hvp["r1t1"] / hvp["r2t1"]
                lines.append("- 1 → 2 ranks: {:.2f}× (HVP phase); with redistribution {:.2f}×".format(
                    hvp["r1t1"] / hvp["r2t1"],
                    (hvp["r1t1"] + runs["r1t1"][1]["timings_seconds"]["redistribution"]) /
                    (hvp["r2t1"] + runs["r2t1"][1]["timings_seconds"]["redistribution"])))
            self.w("\n".join(lines) + "\n")
            self.headline["hvp_" + model] = head
            best_ratio = head.get("ratio_r2t1")
            if best_ratio is not None:
                r1 = head.get("ratio_r1t1")
                self.target("HVP phase ≥ 4× faster than the fastest Python peer at equal cores ({})".format(
                    model.replace("_", ":")), best_ratio <= 0.25 and (r1 is None or r1 <= 0.25),
                    "dhess/peer = {:.2f} on 2 cores, {} on 1 core (4× faster would be ≤ 0.25)".format(
                        best_ratio, fmt(r1)))
            if "speedup_1_to_2_ranks" in head:
                sp = head["speedup_1_to_2_ranks"]
                self.target("1 → 2 ranks ≥ 1.8× ({})".format(model.replace("_", ":")), sp >= 1.8,
                            "{:.2f}×".format(sp))
        prof = os.path.join(self.raw.d, "a_profile.txt")
        if os.path.exists(prof):
            self.w("Profile of a 1-rank dense run (`bench/profile_hvp.sh`, perf software clock):\n")
            self.w("```\n" + open(prof).read().strip() + "\n```\n")

    # ------------------------------------------------------------------ b
    def section_b(self):
        self.w("## b. Eigensolver\n")
        self.w("Only `timings_seconds.eigensolver` of dhess (the Hessian is read back from a checkpoint). "
               "GFLOP/s against 4/3·n³ (values) and 10/3·n³ (all vectors). n = 6,085 is the real convnet:6 "
               "Hessian (many near-zero eigenvalues: much deflation); 2,000 and 12,000 are seeded random "
               "symmetric matrices A (semicircle spectrum, no deflation) fed to dhess as the model "
               "0.5·xᵀAx with `--loss none`. numpy: `eigvalsh`/`eigh` on the same matrix, OPENBLAS_NUM_THREADS=T.\n")
        sizes = sorted({int(re.match(r"b_(\d+)_", os.path.basename(p)).group(1))
                        for p in glob.glob(os.path.join(self.raw.d, "b_*.json"))})
        # Targets judge what a user gets by default: the solver --solver auto picks (src/linalg/eigensolver.cpp,
        # choose_solver), ELPA 2-stage for values, LAPACK for all pairs on one process, ELPA 1-stage from
        # two on. Records from before the LAPACK backend fall back to pdsyevd on one process.
        def auto_pick(job, p, sec):
            if job == "values":
                return "elpa"
            if p == 1:
                return "lapack" if ("lapack", job, p) in sec else "pdsyevd"
            return "elpa"
        ratios = {"values": [], "all": [], "elpa_values": [], "elpa_all": [], "scalapack_values": [],
                  "scalapack_all": []}
        for n in sizes:
            rows = []
            sec = {}
            for ranks in (1, 2):
                for solver, job in (("pdsyevr", "values"), ("elpa", "values"), ("lapack", "values"),
                                    ("pdsyevd", "all"), ("elpa", "all"), ("lapack", "all")):
                    name = "b_{}_{}_{}_r{}".format(n, solver, job, ranks)
                    s = self.raw.summary(name)
                    if not s:
                        continue
                    t = s["timings_seconds"]["eigensolver"]
                    sec[(solver, job, ranks)] = t
                    flops = (4 if job == "values" else 10) / 3 * n ** 3
                    rows.append(["dhess {} --eigen {} ({} rank{})".format(s.get("solver", solver), job, ranks,
                                                                        "s" if ranks > 1 else ""),
                                 t, flops / t / 1e9, gb(max(s["memory"]["peak_rss_per_rank"])),
                                 fc(self.raw.foreign(name))])
            for threads in (1, 2):
                for routine, job in (("eigvalsh", "values"), ("eigh", "all")):
                    name = "b_{}_numpy_{}_t{}".format(n, routine, threads)
                    r = self.raw.get(name + ".json")
                    if not r:
                        continue
                    sec[("numpy", job, threads)] = r["seconds"]
                    rows.append(["numpy.linalg.{} (T={})".format(routine, threads), r["seconds"], r["gflops"],
                                 gb(r["peak_rss_bytes"]), fc(self.raw.foreign(name))])
            if not rows:
                continue
            self.w("### n = {:,}\n".format(n))
            self.w(table(["run", "seconds", "GFLOP/s", "peak RSS (max rank)", "foreign cores"], rows))
            lines = []
            for p in (1, 2):
                for solver, job, routine in (("pdsyevr", "values", "eigvalsh"), ("pdsyevd", "all", "eigh")):
                    # numpy's best at <= the same cores (2 OpenBLAS threads are not always faster than 1)
                    cands = [(sec[("numpy", job, t)], t) for t in range(1, p + 1) if ("numpy", job, t) in sec]
                    if not cands:
                        continue
                    b, t = min(cands)
                    a, e = sec.get((solver, job, p)), sec.get(("elpa", job, p))
                    ranks = "{} rank{}".format(p, "s" if p > 1 else "")
                    if a:
                        ratios["scalapack_" + job].append((a / b, n, p))
                        lines.append("- {} {} vs numpy {} (T={}): **{:.2f}**".format(solver, ranks, routine, t, a / b))
                    if e:
                        lines.append("- ELPA {} vs numpy {} (T={}): **{:.2f}**".format(ranks, routine, t, e / b))
                    la = sec.get(("lapack", job, p))
                    if la:
                        lines.append("- LAPACK (dhess) {} vs numpy {} (T={}): **{:.2f}**".format(ranks, routine, t,
                                                                                            la / b))
                    picked = sec.get((auto_pick(job, p, sec), job, p))
                    if picked:
                        ratios[job].append((picked / b, n, p))
                for job, base in (("values", "pdsyevr"), ("all", "pdsyevd")):
                    a, b = sec.get(("elpa", job, p)), sec.get((base, job, p))
                    if a and b:
                        ratios["elpa_" + job].append((a / b, n, p))
                        lines.append("- ELPA / {} (--eigen {}, {} rank{}): **{:.2f}**".format(
                            base, job, p, "s" if p > 1 else "", a / b))
            self.w("\n".join(lines) + "\n")
        self.headline["eigensolver_ratios"] = ratios

        def listing(rs):
            return ", ".join("{:.2f}@{}/{}r".format(r, n, p) for r, n, p in rs)

        def judge(rs, limit):
            met = sum(r[0] <= limit for r in rs)
            return True if met == len(rs) else "partly" if met else False

        for job, routine in (("values", "eigvalsh"), ("all", "eigh")):
            if not ratios[job]:
                continue
            ok = judge(ratios[job], 1.0)
            worst = max(ratios[job])
            self.target("eigen{} ≤ 1.0× numpy {} (dhess --solver auto)".format(
                "values only" if job == "values" else " all vectors", routine), ok,
                "worst {:.2f} (n = {:,}, {} rank(s)); auto ({}): {}; ScaLAPACK {}: {}".format(
                    worst[0], worst[1], worst[2],
                    "ELPA 2-stage" if job == "values" else "LAPACK dsyevd on 1 rank, ELPA 1-stage from 2",
                    listing(ratios[job]), "pdsyevr" if job == "values" else "pdsyevd",
                    listing(ratios["scalapack_" + job])))
        for job, base in (("values", "pdsyevr"), ("all", "pdsyevd")):
            rs = ratios["elpa_" + job]
            if rs:
                self.target("ELPA ≤ 0.6× ScaLAPACK (--eigen {}, vs {})".format(job, base), judge(rs, 0.6),
                            listing(rs))

    # ------------------------------------------------------------------ c
    def section_c(self):
        recs = []
        for path in sorted(glob.glob(os.path.join(self.raw.d, "c_*.json"))):
            if path.endswith(".time.json"):
                continue
            r = load(path)
            if r:
                r["name"] = os.path.basename(path)[2:-5]
                recs.append(r)
        if not recs:
            return
        self.w("## c. ELPA settings\n")
        self.w("`bench/elpa_tune.cpp` (ScaLAPACK and ELPA called directly on the same block-cyclic matrix). "
               "Matrix: the convnet:4 Hessian (n = 2,885, the size of the issue's report) unless marked random. "
               "Kernel ids from elpa_constants.h: 1 generic, 2 generic_simple, 39/40 generic_simple_block4/6, "
               "13 AVX2_block4, 16 AVX512_block4 (not compiled into Debian's libelpa: ELPA rejects them).\n")
        rows = []
        for r in recs:
            rows.append([r["name"], r["ranks"], r["solver"], r["job"], r["kernel"], r["nb"], r["seconds"],
                         r["gflops"], r.get("peak_above_start_mb_rank0"), r.get("note", ""),
                         fc(self.raw.foreign("c_" + r["name"]))])
        self.w(table(["case", "ranks", "solver", "job", "kernel", "nb", "seconds", "GFLOP/s",
                      "rank-0 MB above start", "ELPA reports", "foreign cores"], rows))
        best = {}
        for r in recs:
            if r["name"].startswith("random") or r["info"] != 0 or r["solver"] == "pdsyevr_min":
                continue
            if (self.raw.foreign("c_" + r["name"]) or 0) >= 0.25:
                continue
            key = (r["ranks"], r["job"], r["solver"].startswith("elpa"))
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r
        lines = []
        for ranks in (1, 2):
            for job in ("values", "all"):
                e, s = best.get((ranks, job, True)), best.get((ranks, job, False))
                if e and s:
                    lines.append("- {} rank(s), {}: best ELPA {} (kernel {}, nb {}) {} s vs {} {} s: **{:.2f}**".format(
                        ranks, job, e["solver"], e["kernel"], e["nb"], fmt(e["seconds"]), s["solver"],
                        fmt(s["seconds"]), e["seconds"] / s["seconds"]))
        by = {r["name"]: r for r in recs}
        for ranks in (1, 2):
            a, b = by.get("pdsyev_values_r%d" % ranks), by.get("pdsyevr_min_values_r%d" % ranks)
            if a and b:
                lines.append("- pdsyevr, {} rank(s): optimal workspace (as dhess calls it) {} s and {} MB above the "
                             "start on rank 0; workspace below PDSYNTRD's n²+3n+1 gather threshold {} s and {} MB".format(
                                 ranks, fmt(a["seconds"]), fmt(a.get("peak_above_start_mb_rank0")), fmt(b["seconds"]),
                                 fmt(b.get("peak_above_start_mb_rank0"))))
        self.w("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ d, e
    def section_d(self):
        runs = [(name, self.raw.summary(name), self.raw.time(name)) for name in ("d_dhess_auto_r2", "d_dhess_pdsyevr_r2")]
        runs = [r for r in runs if r[1] or r[2]]
        py = self.raw.get("d_python_t2.json")
        if not runs:
            return
        n = next((s["n"] for _, s, _ in runs if s), None)
        self.w("## d. End to end: builtin convnet{}, `--eigen values`, 2 ranks\n".format(
            " (n = {:,})".format(n) if n else ""))
        rows = []
        done = []
        for name, s, tm in runs:
            solver = "--solver pdsyevr" if "pdsyevr" in name else "--solver auto"
            if not s:
                err = ""
                path = os.path.join(self.raw.d, name + ".stderr")
                if os.path.exists(path):
                    lines = [l.strip() for l in open(path) if l.strip() and not l.startswith("-")]
                    err = "; ".join(lines[:2])[:160]
                rows.append(["dhess 2 ranks × 1 thread, {}: FAILED (exit {}) after {} s: {}".format(
                    solver, tm.get("rc"), fmt(tm.get("wall_seconds")), err), None, None, None, None,
                    gb(tm.get("max_rss_bytes")) + " (largest rank)", tm.get("wall_seconds"), fc(tm.get("foreign_cores"))])
                continue
            t = s["timings_seconds"]
            peak = max(s["memory"]["peak_rss_per_rank"])
            done.append((name, s))
            rows.append(["dhess 2 ranks × 1 thread, {} ({})".format(solver, s.get("solver")), t["total"], t["hvp"],
                         t["redistribution"], t["eigensolver"], gb(peak) + " per rank",
                         (tm or {}).get("wall_seconds"), fc((tm or {}).get("foreign_cores"))])
        if py:
            rows.append([py["route"] + " (T={})".format(py["threads"]), py["total_seconds"], py["hessian_seconds"],
                         None, py["eigvalsh_seconds"], gb(py["peak_rss_bytes"]) + " (one process)", None,
                         fc(self.raw.foreign("d_python_t2"))])
        self.w(table(["route", "total s", "Hessian s", "redistribution s", "eigenvalues s", "peak RSS",
                      "wall s (mpirun)", "foreign cores"], rows))
        self.target("n = {} end to end completes with 2 ranks".format("{:,}".format(n) if n else "23,365"),
                    bool(done), "; ".join("{}: {} s, {} per rank".format(
                        s.get("solver"), fmt(s["timings_seconds"]["total"]),
                        gb(max(s["memory"]["peak_rss_per_rank"]))) for _, s in done) +
                    ("" if len(done) == len(runs) else "; a run failed, see below"))
        for name, s in done:
            if "pdsyevr" in name and "--solver pdsyevr" not in s.get("command_line", ""):
                self.w("- the pdsyevr run was recorded by an earlier build whose `--solver auto` chose pdsyevr for "
                       "eigenvalues (same pdsyevr code and workspace; `{}`)\n".format(s.get("command_line")))
        for name, s in done:
            t = s["timings_seconds"]
            peak = max(s["memory"]["peak_rss_per_rank"])
            if py:
                self.w("- dhess ({}) / Python route (total): **{:.2f}**; eigenvalues agree to {} (max abs diff / "
                       "max|λ|); peak memory per rank dhess {} vs the Python process {}".format(
                           s.get("solver"), t["total"] / py["total_seconds"],
                           fmt(py.get("max_abs_diff_relative_to_dhess")), gb(peak), gb(py["peak_rss_bytes"])))
            self.headline.setdefault("end_to_end", {})[s.get("solver")] = {
                "n": s["n"], "total_seconds": t["total"], "eigensolver_seconds": t["eigensolver"],
                "peak_rss_per_rank": peak}
        if py:
            self.headline.setdefault("end_to_end", {})["python"] = {
                "total_seconds": py["total_seconds"], "peak_rss": py["peak_rss_bytes"]}
        self.w("")
        for name, s in done:
            plan = self.raw.get("d_plan_{}.json".format("pdsyevr" if "pdsyevr" in name else "auto"))
            if not plan:
                continue
            t = s["timings_seconds"]
            peak = max(s["memory"]["peak_rss_per_rank"])
            pm = plan["memory_bytes_per_rank"]
            est = plan["estimated_seconds"]
            mem_ratio = pm["total"] / peak
            time_ratio = est["total"] / t["total"]
            hvp_measured = t["hvp"] + t["redistribution"]
            self.w("`dhess plan --model builtin:convnet:12 --eigen values --solver {} --ranks 2 --threads 1 --json` "
                   "on one process (plan solver: {}; HVP: {}; eigensolver: {}):\n".format(
                       "pdsyevr" if "pdsyevr" in name else "auto", plan.get("solver"),
                       plan.get("hvp_estimate_basis", "one process timed alone"),
                       plan.get("eigensolver_estimate_basis", "—")))
            self.w(table(["quantity", "plan", "measured", "plan / measured"], [
                ["memory per rank", gb(pm["total"]), gb(peak), mem_ratio],
                ["HVP + assembly seconds", est["hvp"], hvp_measured, est["hvp"] / hvp_measured],
                ["eigensolver seconds", est["eigensolver"], t["eigensolver"], est["eigensolver"] / t["eigensolver"]],
                ["total seconds", est["total"], t["total"], time_ratio]]))
            self.headline.setdefault("plan_vs_measured", {})[s.get("solver")] = {"memory": mem_ratio,
                                                                                  "time": time_ratio}
            self.target("plan within 20% of the real run, memory per rank ({})".format(s.get("solver")),
                        abs(mem_ratio - 1) <= 0.2, "plan/measured {:.2f}".format(mem_ratio))
            self.target("plan within 20% of the real run, time ({})".format(s.get("solver")),
                        abs(time_ratio - 1) <= 0.2, "plan/measured {:.2f} (HVP {:.2f}, eigensolver {:.2f}{})".format(
                            time_ratio, est["hvp"] / hvp_measured, est["eigensolver"] / t["eigensolver"],
                            ", planned as an upper bound: see the notes" if
                            plan.get("eigensolver_estimate_is_upper_bound") else ""))
        for name, s, tm in runs:
            if not s and tm:
                plan = self.raw.get("d_plan_{}.json".format("pdsyevr" if "pdsyevr" in name else "auto"))
                if plan:
                    pm = plan["memory_bytes_per_rank"]
                    self.w("- the failed run {} reached {} on its largest rank before it died; its plan said "
                           "{} per rank (plan / measured-so-far {:.2f})\n".format(
                               name, gb(tm.get("max_rss_bytes")), gb(pm["total"]), pm["total"] / tm["max_rss_bytes"]))

    def section_e(self):
        cases = [("d_dhess_auto_r2", "d: convnet:12 --eigen values, auto"),
                 ("d_dhess_pdsyevr_r2", "d: convnet:12 --eigen values, --solver pdsyevr"),
                 ("b_6085_pdsyevr_values_r2", "b: convnet:6 --eigen values, pdsyevr"),
                 ("b_6085_pdsyevd_all_r2", "b: convnet:6 --eigen all, pdsyevd"),
                 ("e_all_r2", "e: convnet:6 --eigen all, 2 ranks, auto"),
                 ("b_6085_lapack_all_r1", "b: convnet:6 --eigen all, 1 rank, LAPACK dsyevd (vectors in H's place)"),
                 ("b_6085_elpa_values_r1", "b: convnet:6 --eigen values, 1 rank, ELPA 2-stage")]
        rows = []
        worst = None
        for name, label in cases:
            s = self.raw.summary(name)
            if not s:
                continue
            pm = s["memory"]["plan_bytes_per_rank"]
            floor = pm["hessian_share"] + pm["eigenvectors_share"] + pm["solver_workspace"]
            for rank, peak in enumerate(s["memory"]["peak_rss_per_rank"]):
                ratio = (peak - pm["process"]) / floor
                worst = ratio if worst is None else max(worst, ratio)
                phase = max(s["memory"]["peak_rss_per_phase"].items(), key=lambda kv: kv[1][rank])[0]
                rows.append(["{} rank {}".format(label, rank), gb(peak), phase, gb(pm["process"]),
                             gb(pm["hessian_share"]), gb(pm["eigenvectors_share"]), gb(pm["solver_workspace"]),
                             ratio, peak / floor])
        if not rows:
            return
        self.w("## e. Memory at the floor\n")
        self.w("floor = block-cyclic share of H + eigenvector share + solver workspace (from summary.json "
               "`memory.plan_bytes_per_rank`); the process itself (torch, libraries, model, data) is reported "
               "separately (`process`, the RSS before the run) and subtracted from the peak.\n")
        self.w(table(["run", "peak RSS", "phase of the peak", "process", "H share", "Z share", "workspace",
                      "(peak − process) / floor", "peak / floor"], rows))
        self.target("peak RSS ≤ 1.25× the floor (H + Z + workspace), process excluded", worst <= 1.25,
                    "worst {:.2f}".format(worst))
        self.headline["memory_over_floor_worst"] = worst

    # ------------------------------------------------------------------ f
    def section_f(self):
        recs = []
        for path in sorted(glob.glob(os.path.join(self.raw.d, "f_convnet*_r*.summary.json"))):
            s = load(path)
            m = re.match(r"f_convnet(\d+)_r(\d+)", os.path.basename(path))
            if s:
                recs.append((int(m.group(1)), int(m.group(2)), s, os.path.basename(path)[:-13]))
        if not recs:
            return
        recs.sort()
        self.w("## f. Matrix-free spectrum at up to 10M parameters\n")
        self.w("`dhess spectrum --model builtin:convnet:HW --top 10 --bottom 0 --max-steps 60 --slq-probes 4 "
               "--slq-steps 30 --trace-probes 0 --diagonal none`, 1 thread per rank.\n")
        rows = []
        for hw, ranks, s, name in recs:
            t = s["timings_seconds"]
            lz = s.get("lanczos", {})
            conv = sum(1 for p in lz.get("pairs", []) if p.get("converged"))
            rows.append([hw, "{:,}".format(s["n"]), ranks, t.get("total"), t.get("lanczos"), t.get("slq"), t.get("io"),
                         s.get("hvp_products"), "{}/{} in {} steps".format(conv, len(lz.get("pairs", [])),
                                                                              lz.get("steps")),
                         gb(max(s["memory"]["peak_rss_per_rank"])), gb(s["memory"].get("plan_bytes_per_rank")),
                         fc(self.raw.foreign(name))])
        self.w(table(["HW", "n", "ranks", "total s", "Lanczos s", "SLQ s", "I/O s", "HVPs", "top-10 converged",
                      "peak RSS / rank", "plan / rank", "foreign cores"], rows))
        by = {(hw, r): s for hw, r, s, _ in recs}
        lines = []
        hws = sorted({hw for hw, _, _, _ in recs})
        for a, b in zip(hws, hws[1:]):
            if (a, 2) in by and (b, 2) in by:
                sa, sb = by[(a, 2)], by[(b, 2)]
                per_a = (sa["timings_seconds"]["lanczos"] + sa["timings_seconds"]["slq"]) / sa["hvp_products"]
                per_b = (sb["timings_seconds"]["lanczos"] + sb["timings_seconds"]["slq"]) / sb["hvp_products"]
                lines.append("- n ×{:.1f} ({} → {}): seconds per HVP (Lanczos+SLQ) ×{:.2f}".format(
                    sb["n"] / sa["n"], a, b, per_b / per_a))
        for hw in hws:
            if (hw, 1) in by and (hw, 2) in by:
                s1, s2 = by[(hw, 1)], by[(hw, 2)]
                c1 = s1["timings_seconds"]["lanczos"] + s1["timings_seconds"]["slq"]
                c2 = s2["timings_seconds"]["lanczos"] + s2["timings_seconds"]["slq"]
                lines.append("- convnet:{}: 1 → 2 ranks {:.2f}× (Lanczos+SLQ), {:.2f}× total".format(
                    hw, c1 / c2, s1["timings_seconds"]["total"] / s2["timings_seconds"]["total"]))
        self.w("\n".join(lines) + "\n")
        big = [r for r in recs if r[2]["n"] >= 10_000_000]
        if big:
            hw, ranks, s, _ = max(big, key=lambda r: r[1])
            self.headline["matrix_free_10M"] = {"n": s["n"], "ranks": ranks, "seconds": s["timings_seconds"]["total"],
                                                "peak_rss_per_rank": max(s["memory"]["peak_rss_per_rank"])}

    # ------------------------------------------------------------------ g
    def section_g(self):
        autos = sorted(glob.glob(os.path.join(self.raw.d, "g_*_auto_r2.summary.json")))
        checks = sorted(p for p in glob.glob(os.path.join(self.raw.d, "g_check_convnet*.json"))
                        if not p.endswith(".time.json"))
        if not autos and not checks:
            return
        self.w("## g. Rank-revealing: every nonzero eigenpair (issues 17 and 24)\n")
        for path in autos:
            tag = os.path.basename(path)[2:-len("_auto_r2.summary.json")]
            auto, elpa = load(path), self.raw.summary("g_{}_elpa_r2".format(tag))
            cmp_ = self.raw.get("g_{}_compare.json".format(tag)) or {}
            if not elpa:
                continue
            ta, te = auto["timings_seconds"], elpa["timings_seconds"]
            low = auto.get("lowrank", {})
            arguments = cmp_.get("model_arguments", "--model builtin:" + tag.replace("_", ":"))
            self.w("`dhess {} --eigen values --solver auto --checkpoint ck` on 2 ranks, then "
                   "`--solver elpa --checkpoint ck --resume` (the same assembled H, straight to the solver), "
                   "n = {:,}.\n".format(arguments, auto["n"]))
            self.w(table(["solver", "eigensolver s", "total s", "rank", "sketch products", "certificate",
                          "peak RSS / rank", "foreign cores"],
                         [["auto ({})".format(auto.get("solver")), ta["eigensolver"], ta["total"], count(low.get("rank")),
                           count(low.get("sketch_products")), low.get("certificate"),
                           gb(max(auto["memory"]["peak_rss_per_rank"])), fc(self.raw.foreign("g_{}_auto_r2".format(tag)))],
                          ["elpa", te["eigensolver"], te["total"], count(cmp_.get("nonzero_elpa")), "—", "—",
                           gb(max(elpa["memory"]["peak_rss_per_rank"])), fc(self.raw.foreign("g_{}_elpa_r2".format(tag)))]]))
            speedup = te["eigensolver"] / ta["eigensolver"]
            self.w("- eigensolver: auto {:.1f}× faster than ELPA; eigenvalues (all n, the zeros included) agree to "
                   "{} of max|λ|; nonzero (|λ| > 1e-9 max|λ|): auto {}, ELPA {} ({} negative)\n".format(
                       speedup, fmt(cmp_.get("max_difference_relative")), cmp_.get("nonzero_auto"),
                       cmp_.get("nonzero_elpa"), cmp_.get("negative_elpa")))
            d = self.raw.summary("d_dhess_auto_r2")
            if d and d.get("solver") == "elpa2" and d.get("n") == auto["n"]:
                self.w("- ELPA 2-stage took {:.0f} s on the same problem in section d's run (an earlier commit, a fresh H "
                       "rather than one read back): {:.1f}× against that\n".format(
                           d["timings_seconds"]["eigensolver"], d["timings_seconds"]["eigensolver"] / ta["eigensolver"]))
            same = cmp_.get("max_difference_relative", 1) <= 1e-9
            rank = cmp_.get("nonzero_elpa") or 0
            self.target("{} (rank {:,} = n/{:.2f}): --solver auto's eigensolver ≥ 10× faster than ELPA, same "
                        "eigenvalues".format(tag, rank, auto["n"] / max(rank, 1)),
                        speedup >= 10 and same, "{:.1f}×, max difference {} of max|λ|".format(
                            speedup, fmt(cmp_.get("max_difference_relative"))))
            self.headline["lowrank_" + tag] = {"speedup": speedup, "difference": cmp_.get("max_difference_relative")}
        for path in checks:
            hw = re.search(r"convnet(\d+)", path).group(1)
            name = "g_nonzero_convnet{}_r2".format(hw)
            s, c = self.raw.summary(name), load(path) or {}
            if not s:
                continue
            nz, ev = s.get("nonzero", {}), s.get("eigenvalues", {})
            self.w("`dhess spectrum --nonzero --model convnet_{0}.pt --data convnet_{0}_data.pt --loss cross_entropy` "
                   "(the exported builtin:convnet:{0}) on 2 ranks of 1 thread, then `bench/check_nonzero.py` "
                   "(eager PyTorch, float64 double backward, nothing dhess computed but the pairs checked).\n".format(hw))
            self.w(table(["n", "rank", "negative / positive", "HVPs", "total s", "peak RSS / rank", "plan / rank",
                          "max residual ‖Hz−λz‖/max|λ|", "‖Hg−ZZᵀHg‖/‖Hg‖", "max |ZᵀZ−I|", "foreign cores"],
                         [["{:,}".format(s["n"]), count(nz.get("nonzero_eigenvalues")),
                           "{} / {}".format(ev.get("negative"), ev.get("positive")), count(s.get("hvp_products")), s["timings_seconds"]["total"],
                           gb(max(s["memory"]["peak_rss_per_rank"])), gb(s["memory"].get("plan_bytes_per_rank")),
                           c.get("max_residual"), c.get("max_outside_span"), c.get("orthonormality"),
                           fc(self.raw.foreign(name))]]))
            self.headline["nonzero_convnet" + hw] = {"n": s["n"], "rank": nz.get("nonzero_eigenvalues"),
                                                     "seconds": s["timings_seconds"]["total"],
                                                     "peak_rss_per_rank": max(s["memory"]["peak_rss_per_rank"]),
                                                     "check": c}

    # ------------------------------------------------------------------ h
    def section_h(self):
        rows, lines = [], []
        for tag in ("top1_trace52", "top5", "slq"):
            peer, s = self.raw.get("h_peer_{}.json".format(tag)), self.raw.summary("h_dhess_" + tag)
            if not peer or not s:
                continue
            ours = self.raw.time("h_dhess_" + tag) or {}
            top = sorted((p["eigenvalue"] for p in s.get("lanczos", {}).get("pairs", [])), reverse=True)
            peer_top = peer["values"].get("top_eigenvalues", [])
            rows.append(["PyHessian's algorithms (float32, 2 threads)", tag, peer["wall_seconds"], count(peer["hvps_total"]),
                         ", ".join(fmt(v, 5) for v in peer_top) or "—", fmt(peer["values"].get("trace")),
                         gb(peer["peak_rss_bytes"]), fc(peer.get("foreign_cores"))])
            rows.append(["dhess spectrum --dtype float32 (2 ranks)", tag, ours.get("wall_seconds"),
                         count(s.get("hvp_products")), ", ".join(fmt(v, 5) for v in top[:len(peer_top)]) or "—",
                         fmt(s.get("trace", {}).get("value")) if tag == "top1_trace52" else "—",
                         gb(max(s["memory"]["peak_rss_per_rank"])) + " per rank", fc(ours.get("foreign_cores"))])
            if ours.get("wall_seconds"):
                ratio = ours["wall_seconds"] / peer["wall_seconds"]
                lines.append("- {}: dhess / peer wall time {:.2f}×".format(tag, ratio))
                self.headline["resnet20_" + tag] = {"dhess_over_peer": ratio}
                if tag == "top1_trace52":
                    self.target("ResNet-20, top-1 + 52-probe trace: dhess ≤ 0.5× PyHessian's time", ratio <= 0.5,
                                "{:.2f}×".format(ratio))
        profile = (self.raw.get("h_profile.json") or {}).get("hvp_profile")
        if not rows and not profile:
            return
        self.w("## h. ResNet-20 (CIFAR shape, n = 272,474, 200 images) vs PyHessian (issue 14)\n")
        if profile:
            self.profile_h(profile)
        if not rows:
            return
        self.w("Peer: `bench/pyhessian_peer.py` (PyHessian's power iteration with deflation and Hutchinson, float32, "
               "one process of 2 threads). dhess: `dhess spectrum --dtype float32 --trace-estimator hutchinson "
               "--bottom 0 --tol 1e-3 --slq-probes 0 --diagonal none` on 2 ranks of 1 thread (data-parallel, 100 images "
               "each); wall time of the whole process either way. Jobs, the same numbers on both sides: top1_trace52 "
               "`--top 1 --trace-probes 52`, top5 `--top 5`, slq `--top 0 --slq-probes 1 --slq-steps 100`.\n")
        self.w(table(["tool", "job", "wall s", "HVPs", "top eigenvalues", "trace", "peak RSS", "foreign cores"], rows))
        self.w("\n".join(lines) + "\n")

    def profile_h(self, profile):
        self.w("### Where a product's time goes\n")
        self.w("`bench/pyhessian_peer.py --hvp-profile`: one product H·v (width 1) or k products batched through "
               "functorch.vmap over the kept first-order graph (dhess's batching), {} thread; seconds per vector, "
               "the extra peak RSS of the call.\n".format(profile.get("threads")))
        rows = []
        for r in profile["runs"]:
            noisy = max(r.get("foreign_cores") or [0]) >= 0.25
            rows.append([r["dtype"], str(r["images"]), str(r["width"]), r["seconds_per_product"], gb(r["peak_extra_rss_bytes"]),
                         fmt(r.get("rel_err_vs_single")), "**noisy**" if noisy else "clean"])
        self.w(table(["dtype", "images", "width", "s per vector", "extra RSS", "rel. error vs width 1", "timing"],
                     rows))
        single = {(r["dtype"], r["images"]): r["seconds_per_product"] for r in profile["runs"] if r["width"] == 1}
        for images in sorted({i for _, i in single}):
            if ("float32", images) in single and ("float64", images) in single:
                self.w("- {} images: float64 / float32 = {:.2f}× per product".format(
                    images, single[("float64", images)] / single[("float32", images)]))
        for r in profile["runs"]:
            ops = (r.get("profile") or {}).get("top_ops")
            if ops:
                self.w("- {} {} images width {}: ".format(r["dtype"], r["images"], r["width"]) + ", ".join(
                    "{} {:.0f}%".format(o["op"], 100 * o["share"]) for o in ops[:6]))
        self.w("")

    # ------------------------------------------------------------------ i
    def section_i(self):
        rows = []
        for tag in ("convnet_6", "convnet_12"):
            s, peers = self.raw.summary("i_{}_ggn_r2t1".format(tag)), self.raw.get("i_{}_peers_t2.json".format(tag))
            if not s or not peers:
                continue
            dhess_rate = s["n"] / s["timings_seconds"]["hvp"]
            rows.append(["{} (n = {:,})".format(tag.replace("_", ":"), s["n"]), "dhess --curvature ggn, 2 ranks × 1 thread",
                         s["n"], s["timings_seconds"]["hvp"], dhess_rate, "—", "1", gb(max(s["memory"]["peak_rss_per_rank"])),
                         fc(self.raw.foreign("i_{}_ggn_r2t1".format(tag)))])
            best = None
            for p in peers:
                ratio = p["columns_per_second"] / dhess_rate
                rows.append(["", p["method"] + ", 2 threads", p["columns"], p["seconds"], p["columns_per_second"],
                             p["max_error_vs_dhess"], "{:.2f}".format(ratio), gb(p["peak_rss_bytes"]),
                             fc(self.raw.foreign("i_{}_peers_t2".format(tag)))])
                best = max(best or 0, p["columns_per_second"])
            self.target("{}: GGN-vector products faster than the fastest peer".format(tag), dhess_rate >= best,
                        "dhess {:.0f} columns/s, best peer {:.0f} ({:.2f}×)".format(dhess_rate, best, best / dhess_rate))
            self.headline["ggn_" + tag] = {"dhess_columns_per_second": dhess_rate, "best_peer": best}
        if not rows:
            return
        self.w("## i. Gauss-Newton matrix-vector products (issue 23)\n")
        self.w("`dhess --model builtin:convnet:HW --curvature ggn --eigen none --save-hessian` on 2 ranks of 1 thread "
               "(`timings_seconds.hvp`: all n columns of G) against `bench/peers_ggn.py` on 2 threads: "
               "curvlinops-for-pytorch 3.0.1 `GGNLinearOperator @ X` (vmap over 64 columns at a time) and "
               "hessian-eigenthings 1.0.0a5 `GGNOperator.matvec` (one vector per call), each on the first columns "
               "of G, checked against dhess's matrix (max error relative to max|G|). Time per column = peer time / "
               "columns; \"time ratio\" is dhess / peer per column (< 1: dhess faster).\n")
        self.w(table(["model", "method", "columns", "seconds", "columns/s", "max error vs dhess", "time ratio",
                      "peak RSS", "foreign cores"], rows))
        self.w("")

    # ------------------------------------------------------------------ j
    def section_j(self):
        rows = self.compiled_convnet_rows()
        zoo = self.raw.get("j_zoo.json") or []
        resnet = self.compiled_resnet_rows()
        if not rows and not zoo and not resnet:
            return
        self.w("## j. Compiled Hessian-vector products (issue 24)\n")
        if rows:
            self.w("`dhess compile --width 64 --threads 1` (both methods compiled and timed, the faster exact one kept), "
                   "then the dense run's HVP phase (`--eigen none --panel 64`, 1 rank × 1 thread, float64, fastest of "
                   "3 at n = 6,085) eager and with `--compiled`, against the fastest torch.func peer (vmap over vjp "
                   "or jvp of grad, 64 columns a call; at n = 6,085 equal to dhess's compiled H to 1e-10) on 1 thread, "
                   "in the same run. \"peer / compiled\": the target is ≥ 4.\n")
            self.w(table(["model", "dhess eager s", "dhess compiled s", "eager / compiled", "fastest peer s",
                          "peer / compiled", "kept", "compile s (ror / for)", "peak RSS eager / compiled",
                          "foreign cores"], rows))
        if zoo:
            self.w("Every exact case of the model zoo (`bench/compiled_zoo.py`: `dhess compile --width 16 --threads 1`, "
                   "then the dense run eager and `--compiled` on 1 rank × 1 thread, `--panel 16`, float64). "
                   "\"max rel. diff\": max|H_compiled − H_eager| / max|H_eager|, and against the oracle.\n")
            self.w(table(["case", "n", "kept", "compile s", "eager HVP s", "compiled HVP s", "eager / compiled",
                          "peak RSS eager / compiled", "max rel. diff (eager, oracle)"],
                         [self.zoo_row(r) for r in zoo]))
        if resnet:
            self.w("ResNet-20 (n = 272,474, 200 images, float32): section h's top-1 + 52-probe trace, dhess on 2 "
                   "ranks × 1 thread eager and with `--compiled` (packages of the 2 shards, width 1, `--threads 2` "
                   "to compile), and PyHessian's algorithms on 2 threads, in one run.\n")
            self.w(table(["run", "wall s", "HVPs", "top eigenvalue", "trace", "peak RSS per rank", "start-up s (its products the phases used)", "HVP mode"], resnet))
        self.w("")

    def compiled_convnet_rows(self):
        rows = []
        for tag in ("convnet_6", "convnet_12"):
            record = self.raw.get("j_{}_compile.json".format(tag))
            eager_name, eager = self.raw.best("j_{}_eager".format(tag), lambda s: s["timings_seconds"]["hvp"])
            compiled_name, compiled = self.raw.best("j_{}_compiled".format(tag), lambda s: s["timings_seconds"]["hvp"])
            if not record or not eager or not compiled:
                continue
            peers = (self.raw.get("j_{}_peer_t1.json".format(tag)) or {}).get("results", [])
            exact = [r["seconds"] for r in peers if r.get("seconds") and (r.get("max_abs_diff_relative") or 0) < 1e-10]
            peer = min(exact) if exact else None
            e, c = eager["timings_seconds"]["hvp"], compiled["timings_seconds"]["hvp"]
            (package,) = record["packages"]
            seconds = {m["method"]: m.get("compile_seconds") for m in package["methods"]}
            rows.append(["{} (n = {:,})".format(tag.replace("_", ":"), record["n"]), e, c, e / c, peer,
                         peer / c if peer else None, package["kept"],
                         "{} / {}".format(fmt(seconds.get("reverse-over-reverse")),
                                          fmt(seconds.get("forward-over-reverse"))),
                         "{} / {}".format(gb(eager["memory"]["peak_rss_per_rank"][0]),
                                          gb(compiled["memory"]["peak_rss_per_rank"][0])),
                         fc(self.raw.foreign(compiled_name))])
            self.headline["compiled_" + tag] = {"eager_over_compiled": e / c,
                                                "peer_over_compiled": peer / c if peer else None}
            if peer:
                self.target("HVP phase with --compiled ≥ 4× faster than the fastest torch.func peer, 1 core ({})".format(
                    tag.replace("_", ":")), peer / c >= 4, "peer/dhess = {:.2f} (eager dhess {:.2f})".format(
                    peer / c, peer / e))
        return rows

    @staticmethod
    def zoo_row(r):
        if not r.get("exported"):
            return [r["case"], count(r["n"]), "not compiled: " + r.get("reason", "")[:120]] + [None] * 6
        if r.get("failed"):
            return [r["case"], count(r["n"]), "run failed: " + r["failed"][:120]] + [None] * 6
        kept = ", ".join(p["kept"] for p in r["packages"])
        compile_seconds = sum(m.get("compile_seconds", 0) for p in r["packages"] for m in p["methods"])
        return [r["case"], count(r["n"]), kept, compile_seconds, r["eager_hvp_seconds"], r["compiled_hvp_seconds"],
                r["eager_hvp_seconds"] / r["compiled_hvp_seconds"],
                "{} / {}".format(gb(r["eager_peak_rss"]), gb(r["compiled_peak_rss"])),
                "{:.1e}, {}".format(r["compiled_vs_eager"], "{:.1e}".format(r["compiled_vs_oracle"])
                                    if "compiled_vs_oracle" in r else "—")]

    def compiled_resnet_rows(self):
        rows = []
        for label, name in (("dhess spectrum (2 ranks)", "j_dhess_top1_trace52_eager"),
                            ("dhess spectrum --compiled (2 ranks)", "j_dhess_top1_trace52_compiled")):
            s, t = self.raw.summary(name), self.raw.time(name) or {}
            if not s:
                continue
            top = max((p["eigenvalue"] for p in s.get("lanczos", {}).get("pairs", [])), default=None)
            used = s.get("startup_products", {}).get("used")
            startup = s["timings_seconds"].get("startup")
            rows.append([label, t.get("wall_seconds"), count(s.get("hvp_products")), fmt(top, 5),
                         fmt(s.get("trace", {}).get("value")), gb(max(s["memory"]["peak_rss_per_rank"])),
                         "—" if startup is None else "{:.1f} ({} used)".format(startup, used or 0), s["hvp"]["mode"]])
        peer = self.raw.get("j_peer_top1_trace52.json")
        if rows and peer:
            rows.append(["PyHessian's algorithms (bench/pyhessian_peer.py, 2 threads)", peer["wall_seconds"],
                         count(peer["hvps_total"]), fmt((peer["values"].get("top_eigenvalues") or [None])[0], 5),
                         fmt(peer["values"].get("trace")), gb(peer["peak_rss_bytes"]), "—", "—"])
        compiled, peer = self.raw.time("j_dhess_top1_trace52_compiled"), self.raw.get("j_peer_top1_trace52.json")
        if compiled and peer and compiled.get("wall_seconds"):
            ratio = compiled["wall_seconds"] / peer["wall_seconds"]
            self.target("ResNet-20, top-1 + 52-probe trace with --compiled: dhess ≤ 0.5× PyHessian's time", ratio <= 0.5,
                        "{:.2f}× (the run keeps the faster of the compiled and the eager product)".format(ratio))
        return rows if len(rows) > 1 else []

    def section_k(self):
        s, ours = self.raw.summary("k_dhess_top1_trace30"), self.raw.time("k_dhess_top1_trace30") or {}
        peers = [(r, self.raw.foreign("k_{}_t2".format(m))) for m in ("pyhessian", "eigenthings", "curvlinops")
                 for r in (self.raw.get("k_{}_t2.json".format(m)) or {}).get("records", [])]
        if not s and not peers:
            return
        self.w("## k. A GPT-2-sized language model (issue 25)\n")
        n = s["n"] if s else None
        self.w(("`bench/gpt2.py` (GPT-2 small's shape: 12 pre-norm blocks of width 768, causal SDPA, tied head, "
               "n = 124,439,808; `--quick`: 2 blocks of width 128; 4 random sequences of 32 tokens), here n = {}, "
               "float32.".format(count(n)) + " dhess: `dhess spectrum --dtype float32 "
               "--top 1 --bottom 0 --tol 1e-3 --trace-probes 30 --trace-estimator hutchinson --slq-probes 0 "
               "--diagonal none` on 2 ranks of 1 thread; its top-1 stops when ‖Hz − θz‖ ≤ 1e-3·|θ| (which bounds "
               "|θ − λ| by as much). Peers: `bench/peers_gpt2.py` on 2 threads, one task per call (tol 1e-3, "
               "30 probes; what each tol means is in its docstring). Wall s: dhess's whole process (load, plan, "
               "both phases); a peer's task alone.\n"))
        rows = []
        if s:
            pair = (s.get("lanczos", {}).get("pairs") or [{}])[0]
            t = s.get("trace", {})
            timings = s.get("timings_seconds", {})
            rows.append(["dhess (2 ranks)", "top1 + trace", fmt(ours.get("wall_seconds")),
                         "lanczos {} + trace {}".format(fmt(timings.get("lanczos")), fmt(timings.get("trace"))),
                         count(s.get("hvp_products")), fmt(pair.get("eigenvalue"), 6),
                         "{} ± {}".format(fmt(t.get("value")), fmt(t.get("stderr"))),
                         gb(max(s["memory"]["peak_rss_per_rank"])) + " per rank (plan {})".format(
                             gb(s["memory"]["plan"]["total"])), fc(ours.get("foreign_cores"))])
        for r, foreign in peers:
            value = ("failed: " + r["unsupported"][:100]) if r.get("unsupported") else (fmt(r.get("value"), 6) if r["task"] == "top1" else
                                              "{} ± {}".format(fmt(r.get("value")), fmt(r.get("stderr"))))
            rows.append([r["package"] + " (2 threads)", r["task"], "—", fmt(r.get("seconds")), count(r.get("products")),
                         value if r["task"] == "top1" else "—", value if r["task"] == "trace" else "—",
                         gb(r.get("peak_rss_bytes")), fc(foreign)])
        self.w(table(["tool", "task", "wall s", "task s", "HVPs", "top eigenvalue", "trace ± stderr", "peak RSS",
                      "foreign cores"], rows))
        if s:
            self.targets_k(s, [r for r, _ in peers])

    def targets_k(self, s, peers):
        """dhess's phase time against the best peer that did the task to the same accuracy."""
        timings, pair = s.get("timings_seconds", {}), (s.get("lanczos", {}).get("pairs") or [{}])[0]
        theta = pair.get("eigenvalue")
        traces = [r["seconds"] for r in peers if r["task"] == "trace" and r.get("value") is not None]
        if traces and timings.get("trace"):
            ratio = timings["trace"] / min(traces)
            self.target("GPT-2-sized LM, 30-probe trace: dhess ≤ 0.5× the best peer's time", ratio <= 0.5,
                        "{:.2f}× (dhess's trace phase {:.0f} s, fastest peer {:.0f} s)".format(
                            ratio, timings["trace"], min(traces)))
        if theta is None or not timings.get("lanczos"):
            return
        # A peer's value can be within 1e-3 of λ only where it is within 2e-3 of θ (|θ - λ| ≤ 1e-3 |θ|).
        top1 = [r for r in peers if r["task"] == "top1"]
        near = [r for r in top1 if r.get("value") is not None and abs(r["value"] - theta) <= 2e-3 * abs(theta)]
        accurate = [r["seconds"] for r in near]
        misses = ["{} {}".format(r["package"], fmt(r["value"], 6) if r.get("value") is not None else "failed")
                  for r in top1 if r not in near]
        if accurate:
            ratio = timings["lanczos"] / min(accurate)
            self.target("GPT-2-sized LM, top-1 to 1e-3: dhess ≤ 0.5× the best peer's time", ratio <= 0.5,
                        "{:.2f}×".format(ratio))
        else:
            self.target("GPT-2-sized LM, top-1 to 1e-3: dhess ≤ 0.5× the best peer's time", True,
                        "no peer reached 1e-3 of dhess's certified {} ({}); dhess's Lanczos phase {:.0f} s".format(
                            fmt(theta, 6), "; ".join(misses), timings["lanczos"]))

    def section_l(self):
        runs = [(name, self.raw.get(name + ".json")) for name in ("l_convnet_6", "l_convnet_4", "l_lm", "l_resnet20")]
        runs = [(name, r) for name, r in runs if r and r.get("records")]
        if not runs:
            return
        self.w("## l. Equal accuracy against the published peers (issue 25)\n")
        self.w("`bench/peers_accuracy.py` (its docstring has the whole protocol): the exact float64 Hessian by torch.func "
               "and numpy is the reference; each method's setting is tightened until it meets the target — eigenvalue "
               "tol from the target down by 10× a try (the try that met it is timed), probe counts doubled from 12 until "
               "9 of 10 seeds are within the target (the median seed is timed), capped at n products (the price of the "
               "exact trace and diagonal, dhess `--diagonal exact`). dhess: `mpirun -n 2 dhess spectrum` of 1 thread "
               "per rank, a process per try, its wall time including start-up and I/O (\"in-run s\": its phases "
               "only); peers: one Python process on 2 threads, the task alone (model and packages loaded). \"ratio\": "
               "the wall time of dhess's fastest method that met the target over the fastest peer's that did (< 1: "
               "dhess faster); the targets' table adds the ratio of dhess's in-run time.\n")
        self.l_capabilities()
        for name, r in runs:
            self.l_table(name, r)

    # What each tool's public API offers, at the versions bench/requirements.txt pins (read from their
    # sources: pyhessian/hessian.py, hessian_eigenthings/{algorithms,operators}, curvlinops/{trace,diagonal,
    # hessian.py}); "—" is a task the tool has no method for.
    CAPABILITIES = [
        ("top-k eigenpairs", "Lanczos (restarted where the basis does not fit)", "power iteration",
         "Lanczos, power iteration", "scipy's ARPACK on its operator"),
        ("every eigenvalue / eigenpair (dense H)", "ScaLAPACK / ELPA on H distributed over ranks", "—", "—",
         "— (H @ I on one process, 8n² bytes, then numpy)"),
        ("every nonzero eigenpair, certified", "`--nonzero`, `--solver auto`", "—", "—", "—"),
        ("trace", "Hutchinson, Hutch++, exact (`--diagonal exact`, `--nonzero`)", "Hutchinson",
         "Hutchinson, Hutch++", "Hutchinson, Hutch++, XTrace"),
        ("diagonal", "Hutchinson, exact", "—", "—", "Hutchinson, XDiag"),
        ("spectral density", "SLQ", "SLQ (calls torch.eig, deprecated in 1.9 and since removed: fails on torch 2.x)",
         "SLQ", "SLQ"),
        ("exact Hessian blocks", "`--blocks` (each block's trace and top eigenvalues, exact)", "—",
         "a parameter subset's operator (`param_filter`)",
         "block-diagonal (`block_sizes`), a parameter subset, `SubmatrixLinearOperator`"),
        ("Gauss-Newton / empirical Fisher", "`--curvature ggn\\|ef`", "—", "GGN, empirical Fisher operators",
         "GGN, EF, MC Fisher, KFAC, EKFAC operators"),
        ("across processes", "MPI ranks (data and vectors sharded)", "—", "a DDP Hessian operator", "—"),
    ]

    def l_capabilities(self):
        self.w("What each tool offers (its public API at the pinned version; \"—\": no method for the task):\n")
        self.w(table(["task", "dhess", "PyHessian 0.1", "hessian-eigenthings 1.0.0a5", "curvlinops 3.0.1"],
                     [list(row) for row in self.CAPABILITIES]))

    def l_table(self, name, r):
        e = r["exact"]
        title = {"l_lm": "small GPT-style LM", "l_resnet20": "ResNet-20, {}".format(r["dtype"])}.get(
            name, name[2:].replace("_", ":"))
        if "trace" in e:
            self.w("### {} (n = {:,}): trace {}, top eigenvalue {}, smallest {}, ‖H‖_F {}\n".format(
                title, r["n"], fmt(e["trace"], 6), fmt(e["top10"][0], 6), fmt(e["smallest"], 4),
                fmt(e["frobenius"], 4)))
            needed = e.get("hutchinson_probes_needed")
            if needed:
                self.w("Hutchinson's expected count for 9 of 10 seeds (normal approximation, from ‖H‖_F and the "
                       "diagonal): " + ", ".join("{:,.0f} probes for {:g}".format(v, float(t))
                                                 for t, v in needed.items()) + ".\n")
        else:
            self.w("### {} (n = {:,}): top eigenvalues {} (reference: {}, {:,} products, {:.0f} s; its operator "
                   "against torch.func on one vector: {})\n".format(
                       title, r["n"], ", ".join(fmt(v, 6) for v in e["top10"]), e["by"], e["products"], e["seconds"],
                       "{:.1e}".format(e["operator_error_vs_torch_func"]) if "operator_error_vs_torch_func" in e
                       else "not checked"))
        rows, groups = [], {}
        order = ["top1", "top10", "trace", "diagonal", "density"]
        for rec in sorted(r["records"], key=lambda x: (order.index(x["task"]), -(x.get("target") or 0),
                                                       not x["method"].startswith("dhess"))):
            key = (rec["task"], rec.get("target"))
            groups.setdefault(key, []).append(rec)
        ratios = []
        for (task, target), recs in groups.items():
            # The density has no target: its methods are compared at equal products, their distances shown.
            done = (lambda x: "failed" not in x) if task == "density" else (lambda x: x.get("met"))
            mine = [x for x in recs if x["method"].startswith("dhess") and done(x)]
            peers = [x for x in recs if not x["method"].startswith("dhess") and done(x)]
            ratio = None
            if mine and peers:
                best, fastest = min(x["seconds"] for x in peers), min(mine, key=lambda x: x["seconds"])
                ratio = fastest["seconds"] / best
                ratios.append((task, target, ratio, fastest["run_seconds"] / best))
            for x in recs:
                what = self.l_outcome(x)
                first = x is recs[0]
                rows.append([task if first else "", fmt(target) if first and target else "", x["method"], what,
                             count(x.get("products")), fmt(x.get("seconds")), fmt(x.get("run_seconds")),
                             gb(x.get("peak_rss_bytes")) + (" per rank" if x.get("per_rank") and
                                                             x.get("peak_rss_bytes") else ""),
                             fmt(ratio) if first and ratio is not None else ""])
        self.w(table(["task", "target", "method", "outcome", "HVPs", "wall s", "in-run s", "peak RSS", "ratio"],
                     rows))
        checks = r.get("product_check") or {}
        if checks:
            self.w("Each peer's H·v on one Gaussian v against torch.func's (relative error): " + "; ".join(
                "{} {:.1e}{}".format(k, c["relative_error"], " (rows off: " + ", ".join(
                    "{} {:.2f}".format(p, e) for p, e in c["parameters_off"].items()) + ")"
                    if c["parameters_off"] else "") for k, c in checks.items()) + ".\n")
        if ratios:
            worst = max(q for _, _, q, _ in ratios)
            self.target("Equal accuracy, {}: dhess ≤ 0.5× the best peer's time on every task".format(name[2:]),
                        True if worst <= 0.5 else ("partly" if min(q for _, _, q, _ in ratios) <= 0.5 else False),
                        "wall (in-run) " + ", ".join(
                            "{}: {:.2f}× ({:.2f}×)".format("{} {}".format(t, fmt(g)) if g else t + " at equal products",
                                                           q, i) for t, g, q, i in ratios))

    @staticmethod
    def l_outcome(x):
        if "failed" in x:
            return "failed: " + x["failed"][:80]
        if x["task"] == "density":
            return "W1 / width {:.2e}".format(x["distance"])
        if x.get("met"):
            if "errors" in x:  # within the target in all but a tenth of the seeds: the worst of those
                errors = sorted(x["errors"])
                return "met: error ≤ {:.1e} in {} of {} seeds at {:,} probes".format(
                    errors[len(errors) - 1 - len(errors) // 10], len(errors) - len(errors) // 10, len(errors),
                    x["probes"])
            return "met (error {:.1e}{})".format(x["error"], ", tol {:g}".format(x["tol"]) if "tol" in x else "")
        if "cap" in x:
            return "not within {:,} products".format(x["cap"])
        tries = x.get("tries") or [{}]
        last = tries[-1]
        if "failed" in last:
            return "failed at tol {:g}: {}".format(last["tol"], last["failed"][:80])
        return "not met: error {:.1e} at tol {:g}".format(last.get("error", float("nan")), last.get("tol", 0))

    def render(self, out):
        self.w("# dhess benchmarks vs the Python peers\n")
        self.w("Generated by `bench/report.py` from the raw records of `bench/run.sh` "
               "(bench/results/raw-{}/; section l's from `bench/peers_accuracy.py` run with section l's arguments, "
               "each record keeping its last command). Do not edit by hand: rerun `bench/run.sh --report`.\n".format(
                   self.mode))
        body_start = len(self.lines)
        self.machine()
        for section in (self.section_a, self.section_b, self.section_c, self.section_d, self.section_e,
                        self.section_f, self.section_g, self.section_h, self.section_i,
                        self.section_j, self.section_k, self.section_l):
            section()
        targets = ["## Targets of the issue\n",
                   table(["target", "result"], [[t, verdict(ok, text)] for t, ok, text in self.targets])]
        notes = os.path.join(os.path.dirname(os.path.abspath(self.raw.d)), "..", "NOTES.md")
        if os.path.exists(notes):
            targets.append(open(notes).read().strip() + "\n")
        self.lines[body_start:body_start] = targets
        with open(out, "w") as f:
            f.write("\n".join(self.lines))
        self.headline["targets"] = [{"target": t, "met": ok, "detail": text} for t, ok, text in self.targets]
        with open(os.path.join(os.path.dirname(os.path.abspath(self.raw.d)), "summary-{}.json".format(self.mode)),
                  "w") as f:
            json.dump(self.headline, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    Report(a.raw, a.mode).render(a.out)
    print("bench: wrote " + a.out)


if __name__ == "__main__":
    main()
