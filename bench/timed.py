"""Run a command and record what else the machine did meanwhile.

usage: timed.py [--wait-quiet SECONDS] --record out.json -- command ...

Writes wall seconds, the command's own CPU seconds (all descendants), its largest
resident set, the loadavg before/after, and `foreign_cores`: the average number of
cores busy with other work during the run ((all busy CPU time - ours) / wall).
With --wait-quiet it first waits (up to SECONDS) until other work uses < 0.25 core
(--quiet-state FILE: at most 60 s when the previous wait found no quiet).
"""
import json
import os
import resource
import subprocess
import sys
import time


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle


def busy_cores(seconds):
    hz_total0, idle0 = cpu_times()
    time.sleep(seconds)
    hz_total1, idle1 = cpu_times()
    ncpu = os.cpu_count()
    total = hz_total1 - hz_total0
    return ncpu * (1 - (idle1 - idle0) / total) if total else 0.0


def wait_quiet(limit):
    t0 = time.time()
    quiet = 0
    last = None
    while time.time() - t0 < limit:
        last = busy_cores(2.0)
        quiet = quiet + 1 if last < 0.25 else 0
        if quiet >= 2:
            break
    return {"waited_seconds": round(time.time() - t0, 1), "busy_cores_before": round(last or 0, 2),
            "quiet": quiet >= 2}


def main():
    args = sys.argv[1:]
    wait, record, state = 0.0, None, None
    while args and args[0] != "--":
        if args[0] == "--wait-quiet":
            wait = float(args[1]); args = args[2:]
        elif args[0] == "--quiet-state":
            state = args[1]; args = args[2:]
        elif args[0] == "--record":
            record = args[1]; args = args[2:]
        else:
            sys.exit("timed.py: unknown option " + args[0])
    cmd = args[1:]
    info = {"command": " ".join(cmd)}
    if wait > 0:
        # After a wait that found no quiet, wait at most a minute: the machine is shared.
        if state and os.path.exists(state) and open(state).read().strip() == "busy":
            wait = min(wait, 60.0)
        info.update(wait_quiet(wait))
        if state:
            with open(state, "w") as f:
                f.write("quiet" if info["quiet"] else "busy")
    info["loadavg_before"] = open("/proc/loadavg").read().split()[:3]
    tick = os.sysconf("SC_CLK_TCK")
    tot0, idle0 = cpu_times()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tot1, idle1 = cpu_times()
    ours = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    busy = ((tot1 - tot0) - (idle1 - idle0)) / tick
    info.update({
        "rc": rc,
        "wall_seconds": wall,
        "cpu_seconds": ours,
        "max_rss_bytes": r1.ru_maxrss * 1024,  # largest single descendant
        "foreign_cores": max(0.0, (busy - ours) / wall) if wall > 0 else 0.0,
        "loadavg_after": open("/proc/loadavg").read().split()[:3],
    })
    if record:
        with open(record, "w") as f:
            json.dump(info, f, indent=1)
    sys.exit(rc)


if __name__ == "__main__":
    main()
