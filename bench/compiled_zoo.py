"""Every exact case of the model zoo (tests/oracle/make_zoo.py) through `dhess compile` and the dense run,
eager and `--compiled` (issue 24, items 2 and 3): which models export, the compiled Hessian against the
eager one and the oracle, the HVP phase's time and the peak memory both ways, and the compile time of each
method (`--method`: reverse-over-reverse by default; the convnet rows of bench/run.sh j compile both). One
rank, one thread, float64, `--panel WIDTH` both ways.

    python bench/compiled_zoo.py --zoo ZOO_DIR --dhess build/dhess --work DIR --out compiled_zoo.json
"""
import argparse
import json
import os
import subprocess
import time

import h5py
import numpy as np


def run(cmd):
    start = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    return p, time.perf_counter() - start


def dense(a, case, out, extra=()):
    p, _ = run([a.dhess, "--model", os.path.join(a.zoo, case["model"]), "--data", os.path.join(a.zoo, case["data"]),
                "--loss", case["loss"], *case["flags"], "--threads", "1", "--panel", a.width, "--save-hessian",
                "--eigen", "none", "--out", out, "--force", *extra])
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1])
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    with h5py.File(os.path.join(out, "hessian.h5"), "r") as f:
        H = f["hessian"][:]
    return H, s


def flag(flags, name):
    return flags[flags.index(name) + 1] if name in flags else None


def compile_case(a, case, out):
    flags = case["flags"]
    cmd = [a.dhess, "compile", "--model", os.path.join(a.zoo, case["model"]), "--data",
           os.path.join(a.zoo, case["data"]), "--loss", case["loss"], "--width", a.width, "--threads", "1",
           "--method", a.method, "--out", out, "--force"]
    for name in ("--params", "--batch-size"):
        if flag(flags, name):
            cmd += [name, flag(flags, name)]
    if "--train-mode" in flags:
        cmd.append("--train-mode")
    p, seconds = run(cmd)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    with open(os.path.join(out, "compile.json")) as f:
        return json.load(f), seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--dhess", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--width", default="16")
    ap.add_argument("--method", default="reverse-over-reverse", help="dhess compile --method (auto: both, twice the time)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.zoo, "zoo.json")) as f:
        cases = json.load(f)["cases"]
    records = []
    for name, case in cases.items():
        if case["expect"]["kind"] != "exact":
            continue
        work = os.path.join(a.work, name)
        record = {"case": name, "n": case["n"], "loss": case["loss"], "flags": case["flags"]}
        compiled, detail = compile_case(a, case, os.path.join(work, "packages"))
        if compiled is None:
            record["exported"] = False
            record["reason"] = detail
        else:
            record.update(exported=True, wall_seconds=detail, packages=compiled["packages"])
            try:
                H_e, s_e = dense(a, case, os.path.join(work, "eager"))
                H_c, s_c = dense(a, case, os.path.join(work, "compiled"),
                                 ("--compiled", os.path.join(work, "packages")))
            except RuntimeError as e:
                record["failed"] = str(e)
                print(json.dumps(record), flush=True)
                records.append(record)
                continue
            scale = np.abs(H_e).max()
            record.update(mode=s_c["hvp"]["mode"], eager_hvp_seconds=s_e["timings_seconds"]["hvp"],
                          compiled_hvp_seconds=s_c["timings_seconds"]["hvp"],
                          eager_peak_rss=s_e["memory"]["peak_rss_per_rank"][0],
                          compiled_peak_rss=s_c["memory"]["peak_rss_per_rank"][0],
                          compiled_vs_eager=float(np.abs(H_c - H_e).max() / scale))
            oracle = os.path.join(a.zoo, case["oracle"] + "_H.npy")
            if os.path.exists(oracle):
                H = np.load(oracle)
                record["compiled_vs_oracle"] = float(np.abs(H_c - H).max() / np.abs(H).max())
        print(json.dumps(record), flush=True)
        records.append(record)
    with open(a.out, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
