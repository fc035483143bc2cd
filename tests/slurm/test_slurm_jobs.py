#!/usr/bin/env python3
"""The job scripts in jobs/ on a real, one-node SLURM cluster started on this machine.

munged (its own key and socket), slurmctld and slurmd from the Debian packages run with
all their state in a temporary directory and on free ports. Through sbatch, with small
problems passed as environment variables (the scripts are used unedited):

  jobs/cpu.sbatch     2 ranks, --eigen all --save-hessian     vs the torch oracle
  jobs/mpirun.sh      2 ranks, mpirun inside the allocation   vs the torch oracle
  jobs/gpu.sbatch     1 rank x 2 cores on a fake GPU (dhess on the CPU), --eigen values
  jobs/resume.sbatch  stopped with SIGUSR1 to every rank (what --signal=USR1@120 sends):
                      dhess checkpoints and exits 75, the job requeues itself and
                      finishes from the checkpoint; then once more with --no-requeue,
                      where the job must submit its successor instead.

Everything is shut down on the way out, failures included. Exit codes: 0 passed,
1 failed, 77 skipped (SLURM or munge missing and not installable, or not root).
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = os.path.normpath(os.path.join(HERE, "..", "..", "jobs"))
ORACLE = os.environ.get("DHESS_ORACLE_DIR", "oracle")
DHESS = os.path.abspath(os.environ.get("DHESS_BIN", "dhess"))
DEADLINE = time.monotonic() + float(os.environ.get("DHESS_SLURM_TEST_SECONDS", "220"))
COMMANDS = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo"]
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
# Open MPI refuses root; for this test only, never in the job scripts.
ROOT_MPI = "OMPI_ALLOW_RUN_AS_ROOT=1,OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1,OMPI_MCA_rmaps_base_oversubscribe=1"
# Samples of the slow problem the resume jobs are interrupted in (a few seconds of HVPs on 2 ranks).
RESUME_SAMPLES = int(os.environ.get("DHESS_SLURM_RESUME_SAMPLES", "4000"))
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}


class Failure(Exception):
    pass


def log(msg):
    print(f"[slurm-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def remaining(limit):
    left = DEADLINE - time.monotonic()
    if left <= 0:
        raise Failure("the test ran out of time")
    return min(limit, left)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_commands():
    return [c for c in COMMANDS if shutil.which(c) is None and not os.path.exists("/usr/sbin/" + c)]


def which(cmd):
    return shutil.which(cmd) or "/usr/sbin/" + cmd


def ensure_packages():
    """Returns None when SLURM and munge are usable, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root: slurmd runs jobs as their user and this cluster uses SlurmUser=root"
    if not missing_commands():
        return None
    log(f"missing {missing_commands()}: trying apt-get install {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + PACKAGES,
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + PACKAGES):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot install {' '.join(PACKAGES)}: {e}"
        if not missing_commands():
            return None
    return f"{', '.join(missing_commands())} not found and apt-get could not install {' '.join(PACKAGES)}"


def clean_env():
    """This process's environment without anything from an enclosing SLURM job."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_"))}


class Cluster:
    """munged + slurmctld + slurmd on 127.0.0.1, everything under one temporary directory."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="dhess-slurm-")
        os.chmod(self.root, 0o755)  # munged and slurmd check the modes of their directories
        self.conf = os.path.join(self.root, "etc", "slurm.conf")
        self.sock = os.path.join(self.root, "munge-run", "munge.socket")
        self.work = os.path.join(self.root, "work")
        self.procs = {}
        self.fake_gpus = False
        self.env = dict(clean_env(), SLURM_CONF=self.conf)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def run(self, *cmd, check=True, timeout=60, cleanup=False):
        # While cleaning up, the test's deadline no longer applies: shutting down must not be cut short.
        p = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True,
                           timeout=timeout if cleanup else remaining(timeout))
        if check and p.returncode != 0:
            raise Failure(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def spawn(self, name, cmd):
        out = open(self.path("log", name + ".stderr"), "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def wait_for(self, what, predicate, timeout, interval=0.2):
        end = time.monotonic() + remaining(timeout)
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise Failure(f"{name} exited with {p.returncode} while waiting for {what}")
            if predicate():
                return
            time.sleep(interval)
        raise Failure(f"timed out after {timeout} s waiting for {what}")

    def start(self):
        for d in ("etc", "log", "state", "spool", "tmpfs", "munge", "munge-run", "dev", "work"):
            os.makedirs(self.path(d), mode=0o755, exist_ok=True)
        os.chmod(self.path("munge"), 0o700)
        key = self.path("munge", "munge.key")
        if shutil.which("mungekey") or os.path.exists("/usr/sbin/mungekey"):
            self.run(which("mungekey"), "--create", "--keyfile", key)
        else:
            self.run("dd", "if=/dev/urandom", "of=" + key, "bs=1", "count=1024")
        os.chmod(key, 0o400)
        self.spawn("munged", [which("munged"), "--foreground", "--key-file=" + key, "--socket=" + self.sock,
                              "--pid-file=" + self.path("munge", "munged.pid"),
                              "--log-file=" + self.path("log", "munged.log"),
                              "--seed-file=" + self.path("munge", "munged.seed")])
        self.wait_for("the munge socket", lambda: os.path.exists(self.sock), 20)
        self.write_conf()
        self.spawn("slurmctld", [which("slurmctld"), "-D", "-c", "-f", self.conf])
        self.wait_for("slurmctld", lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout, 30)
        self.spawn("slurmd", [which("slurmd"), "-D", "-f", self.conf, "-N", self.node])
        self.wait_for("the node to be idle",
                      lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle", 60)
        log(f"cluster up in {self.root}: node {self.node}, {self.cpus} CPUs, "
            f"{'2 fake GPUs' if self.fake_gpus else 'no GPUs'}")

    def write_conf(self):
        probe = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, env=self.env)
        fields = dict(re.findall(r"(\w+)=(\S+)", probe.stdout))
        self.node = fields.get("NodeName") or socket.gethostname().split(".")[0]
        # Two ranks per job even on a one-core machine: config_overrides trusts these numbers.
        self.cpus = max(2, int(fields.get("CPUs", "2")))
        memory = max(4096, int(fields.get("RealMemory", "4096")))
        gres = ""
        try:  # character devices standing in for GPUs, so that --gpus-per-task binds one per task
            for i in range(2):
                os.mknod(self.path("dev", f"nvidia{i}"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            self.fake_gpus = True
            gres = " Gres=gpu:2"
            with open(self.path("etc", "gres.conf"), "w") as f:
                f.write(f"NodeName={self.node} Name=gpu File={self.path('dev', 'nvidia')}[0-1]\n")
        except OSError as e:
            log(f"cannot create fake GPU devices ({e}): jobs/gpu.sbatch will not be run")
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=dhess-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.sock}
StateSaveLocation={self.path('state')}
SlurmdSpoolDir={self.path('spool')}
TmpFS={self.path('tmpfs')}
SlurmctldPidFile={self.path('slurmctld.pid')}
SlurmdPidFile={self.path('slurmd.pid')}
SlurmctldLogFile={self.path('log', 'slurmctld.log')}
SlurmdLogFile={self.path('log', 'slurmd.log')}
SlurmctldDebug=debug
SlurmdDebug=debug
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
{'GresTypes=gpu' if self.fake_gpus else ''}
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory}{gres} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    # --- jobs ---------------------------------------------------------------------------
    def sbatch(self, script, options, variables):
        exports = ",".join(["ALL", ROOT_MPI] + [f"{k}={v}" for k, v in variables.items()])
        cmd = ["sbatch", "--parsable", "--export=" + exports] + options + [os.path.join(JOBS, script)]
        p = subprocess.run(cmd, env=self.env, cwd=self.work, capture_output=True, text=True, timeout=remaining(60))
        if p.returncode != 0:
            raise Failure(f"sbatch {script} exited {p.returncode}: {p.stderr.strip()}")
        job = p.stdout.strip().split(";")[0]
        log(f"submitted {script} as job {job} ({' '.join(options)})")
        return job

    def job(self, job):
        """JobState, ExitCode, Restarts and Reason of a job, from scontrol."""
        text = self.run("scontrol", "-o", "show", "job", job).stdout
        info = dict(re.findall(r"\b(JobState|ExitCode|Restarts|Reason|JobName)=(\S+)", text))
        return info

    def wait_done(self, job, timeout):
        state = {}

        def done():
            state.update(self.job(job))
            return state.get("JobState") in FINISHED

        self.wait_for(f"job {job} to finish", done, timeout, interval=0.5)
        return state

    def job_log(self, job):
        name = self.job(job).get("JobName", "*")
        files = glob.glob(os.path.join(self.work, f"{name}-{job}.out"))
        return open(files[0]).read() if files else f"(no log {name}-{job}.out in {self.work})"

    # --- shutdown -----------------------------------------------------------------------
    def stop(self):
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20, cleanup=True).stdout.split()
                if jobs:
                    log(f"cancelling jobs {' '.join(jobs)}")
                    self.run("scancel", *jobs, check=False, timeout=20, cleanup=True)
                    end = time.monotonic() + 30
                    while time.monotonic() < end and self.run("squeue", "-h", check=False, timeout=20,
                                                              cleanup=True).stdout.strip():
                        time.sleep(0.5)
                self.run("scontrol", "shutdown", check=False, timeout=20, cleanup=True)
            except subprocess.TimeoutExpired as e:
                log(f"{e}: stopping the daemons by their pids")
                self.procs["slurmctld"].terminate()
                if "slurmd" in self.procs:
                    self.procs["slurmd"].terminate()
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            if name == "munged" and p.poll() is None:
                p.terminate()  # munged stops on SIGTERM
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) did not stop: killing it")
                p.kill()
                p.wait(timeout=10)
        # slurmstepd processes outlive slurmd for a moment (PMIx cleanup); wait for ours to go.
        end = time.monotonic() + 20
        while self.live_processes() and time.monotonic() < end:
            time.sleep(0.5)
        for pid, cmd in self.live_processes():
            log(f"warning: pid {pid} ({cmd}) still uses {self.root}")
        if os.environ.get("DHESS_SLURM_KEEP"):
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def live_processes(self):
        """(pid, command) of running processes other than this one with a file open under our directory."""
        found = []
        for proc in glob.glob("/proc/[0-9]*"):
            try:
                if int(proc[6:]) == os.getpid() or open(proc + "/stat").read().rsplit(") ", 1)[1][0] == "Z":
                    continue
                for fd in os.listdir(proc + "/fd"):
                    if os.readlink(f"{proc}/fd/{fd}").startswith(self.root + os.sep):
                        found.append((int(proc[6:]), open(proc + "/cmdline").read().replace("\0", " ").strip()))
                        break
            except (OSError, IndexError, ValueError):
                continue
        return found

    def dump_logs(self):
        for f in sorted(glob.glob(self.path("log", "*"))) + sorted(glob.glob(os.path.join(self.work, "*.out"))):
            lines = open(f, errors="replace").read().splitlines()
            if os.path.dirname(f) == self.path("log"):
                lines = [ln for ln in lines if "debug" not in ln.split("]", 1)[-1][:12]] or lines
            print(f"----- {f} (last 40 lines) -----")
            print("\n".join(lines[-40:]))


# --- oracles ------------------------------------------------------------------------------
def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def convnet_hessian(inputs, targets):
    """H of the mean cross-entropy of the oracle convnet (its weights from convnet.pt), by
    torch.autograd.functional.hessian on an eager re-implementation of its forward."""
    model = torch.jit.load(os.path.join(ORACLE, "convnet.pt"))
    params = tuple(p.detach().double() for _, p in model.named_parameters())

    def loss(w1, b1, w2, b2):
        return F.cross_entropy(F.linear(torch.flatten(F.conv2d(inputs, w1, b1, 1, 1), 1), w2, b2), targets)

    blocks = torch.autograd.functional.hessian(loss, params)
    sizes = [p.numel() for p in params]
    return np.concatenate([np.concatenate([blocks[i][j].reshape(sizes[i], sizes[j]).numpy()
                                           for j in range(len(sizes))], axis=1) for i in range(len(sizes))], axis=0)


def check_results(out, H, eig, ranks, what, hessian=True):
    def expect(cond, msg):
        if not cond:
            raise Failure(f"{what}: {msg}")

    expect(os.path.exists(os.path.join(out, "summary.json")), f"no summary.json in {out}")
    summary = json.load(open(os.path.join(out, "summary.json")))
    expect(summary["ranks"] == ranks, f"ran on {summary['ranks']} rank(s), expected {ranks}")
    if hessian:
        with h5py.File(os.path.join(out, "hessian.h5"), "r") as f:
            err = rel(f["hessian"][:], H)
        expect(err <= 1e-10, f"hessian.h5 differs from the oracle by {err:.3g} (relative)")
    w = np.load(os.path.join(out, "eigenvalues.npy"))
    expect(w.shape == eig.shape, f"{w.size} eigenvalues, expected {eig.size}")
    err = np.abs(w - eig).max() / np.abs(eig).max()
    expect(err <= 1e-9, f"eigenvalues differ from the oracle by {err:.3g} of max|lambda|")
    log(f"{what}: results match the oracle ({ranks} rank(s))")
    return summary


# --- the scenarios --------------------------------------------------------------------------
def simple_jobs(c):
    H = np.load(os.path.join(ORACLE, "convnet_H.npy"))
    eig = np.load(os.path.join(ORACLE, "convnet_eig.npy"))
    problem = {"DHESS": DHESS, "MODEL": os.path.join(ORACLE, "convnet.pt"),
               "DATA": os.path.join(ORACLE, "convnet_data.pt"), "LOSS": "cross_entropy"}

    def out(name):
        return os.path.join(c.work, name)

    two_ranks = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem-per-cpu=1G", "--time=10"]
    jobs = {"cpu": c.sbatch("cpu.sbatch", two_ranks,
                            dict(problem, EIGEN="all", OUT=out("cpu"), DHESS_ARGS="--save-hessian --block 32")),
            "mpirun": c.sbatch("mpirun.sh", ["--ntasks=2", "--cpus-per-task=1", "--mem-per-cpu=1G", "--time=10"],
                               dict(problem, EIGEN="all", OUT=out("mpirun"), DEVICE="cpu",
                                    DHESS_ARGS="--save-hessian"))}
    if c.fake_gpus:
        jobs["gpu"] = c.sbatch("gpu.sbatch", ["--nodes=1", "--ntasks-per-node=1", "--gpus-per-task=1",
                                              "--cpus-per-task=2", "--mem-per-cpu=1G", "--time=10"],
                               dict(problem, EIGEN="values", OUT=out("gpu"), DEVICE="cpu"))
    for name, job in jobs.items():
        state = c.wait_done(job, 120)
        if state["JobState"] != "COMPLETED" or state["ExitCode"] != "0:0":
            raise Failure(f"{name} job {job} ended {state}:\n{c.job_log(job)}")
    check_results(out("cpu"), H, eig, 2, "cpu.sbatch")
    check_results(out("mpirun"), H, eig, 2, "mpirun.sh")
    if c.fake_gpus:
        s = check_results(out("gpu"), H, eig, 1, "gpu.sbatch", hessian=False)
        if s["threads_per_rank"] != 2:
            raise Failure(f"gpu.sbatch: {s['threads_per_rank']} thread(s) per rank, expected --cpus-per-task=2")
        log_text = c.job_log(jobs["gpu"])
        if "1 rank(s) x 2 core(s)" not in log_text:
            raise Failure(f"gpu.sbatch did not see its allocation:\n{log_text}")


def interrupt_when_panels_saved(c, job, checkpoint):
    """Sends SIGUSR1 to every rank of the job (as --signal=USR1@T does) once dhess has saved a panel."""
    def saved():
        state = c.job(job)["JobState"]
        if state in FINISHED:
            raise Failure(f"job {job} ended ({state}) before it could be interrupted: raise "
                          f"DHESS_SLURM_RESUME_SAMPLES (now {RESUME_SAMPLES})\n{c.job_log(job)}")
        return state == "RUNNING" and glob.glob(os.path.join(checkpoint, "*.panel"))

    c.wait_for(f"job {job} to checkpoint a panel", saved, 120, interval=0.1)
    c.run("scancel", "--signal=USR1", job)  # steps only, not the batch shell: like --signal without B:
    log(f"sent SIGUSR1 to the ranks of job {job} ({len(glob.glob(os.path.join(checkpoint, '*.panel')))} panel(s) saved)")


def expect_in(text, pieces, what):
    for p in pieces:
        if not re.search(p, text):
            raise Failure(f"{what}: the log lacks /{p}/:\n{text}")


def resume_jobs(c):
    torch.manual_seed(5)
    x = torch.randn(RESUME_SAMPLES, 1, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (RESUME_SAMPLES,))
    data = os.path.join(c.work, "slow_data.pt")
    torch.save((x, y), data)
    problem = {"DHESS": DHESS, "MODEL": os.path.join(ORACLE, "convnet.pt"), "DATA": data, "LOSS": "cross_entropy",
               "EIGEN": "all", "DHESS_ARGS": "--save-hessian --panel 8"}
    options = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem-per-cpu=1G", "--time=10"]

    # Requeue: one job id, two pieces in one log; the second restores panels from the checkpoint.
    out, ckpt = os.path.join(c.work, "resume"), os.path.join(c.work, "resume.ckpt")
    job = c.sbatch("resume.sbatch", options, dict(problem, OUT=out, CHECKPOINT=ckpt))
    interrupt_when_panels_saved(c, job, ckpt)

    def requeued():
        s = c.job(job)
        if s["JobState"] in FINISHED:
            raise Failure(f"job {job} ended {s} instead of requeueing itself:\n{c.job_log(job)}")
        return s["JobState"] == "PENDING" and int(s["Restarts"]) >= 1

    c.wait_for(f"job {job} to requeue itself", requeued, 60)
    # SLURM holds a requeued job ~2 min; skip that, but only once the old step's slurmstepd has
    # left: the new step reuses its id and its PMIx socket name in the spool directory.
    c.wait_for(f"the first step of job {job} to be cleaned up",
               lambda: not glob.glob(c.path("spool", f"*.{job}.*")) + glob.glob(c.path("spool", f"*_{job}.*")), 60)
    # slurmd revokes the old credential with a 1-second timestamp: one issued in that same
    # second counts as revoked ("Job credential revoked"), so let the clock move on first.
    time.sleep(3)
    c.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    state = c.wait_done(job, 150)
    text = c.job_log(job)
    if state["JobState"] != "COMPLETED" or state["ExitCode"] != "0:0":
        raise Failure(f"resume job {job} ended {state}:\n{text}")
    # The first piece ran with --resume and no checkpoint yet, and exited 75 (else no requeue).
    expect_in(text, [r"piece 1,", r"checkpointed in .*requeueing job", r"piece 2,"], "resume.sbatch (requeue)")

    x0, y0 = torch.load(os.path.join(ORACLE, "convnet_data.pt"))
    if rel(convnet_hessian(x0, y0), np.load(os.path.join(ORACLE, "convnet_H.npy"))) > 1e-12:
        raise Failure("convnet_hessian() here no longer matches the convnet of tests/oracle/make_cases.py")
    H = convnet_hessian(x, y)
    eig = np.linalg.eigvalsh((H + H.T) / 2)
    s = check_results(out, H, eig, 2, "resume.sbatch, interrupted and requeued")
    restored = sum(s["hvp"]["columns_restored_from_checkpoint"])
    if not 0 < restored < H.shape[0]:
        raise Failure(f"resume.sbatch: {restored} columns restored from the checkpoint, expected 0 < r < n")
    log(f"resume.sbatch (requeue): {int(restored)} of {H.shape[0]} columns came from the checkpoint")

    # --no-requeue: `scontrol requeue` is refused, the job submits its successor with a dependency.
    out, ckpt = os.path.join(c.work, "resubmit"), os.path.join(c.work, "resubmit.ckpt")
    job = c.sbatch("resume.sbatch", options + ["--no-requeue"],
                   dict(problem, OUT=out, CHECKPOINT=ckpt, REMOVE_CHECKPOINT="yes"))
    interrupt_when_panels_saved(c, job, ckpt)
    state = c.wait_done(job, 60)
    text = c.job_log(job)
    if state["JobState"] != "COMPLETED" or state["ExitCode"] != "0:0":
        raise Failure(f"resume job {job} ended {state} instead of resubmitting itself:\n{text}")
    expect_in(text, [r"checkpointed in", r"requeue refused", r"Submitted batch job \d+"], "resume.sbatch (resubmit)")
    successor = re.search(r"Submitted batch job (\d+)", text).group(1)
    state = c.wait_done(successor, 150)
    text = c.job_log(successor)
    if state["JobState"] != "COMPLETED" or state["ExitCode"] != "0:0":
        raise Failure(f"resubmitted job {successor} ended {state}:\n{text}")
    expect_in(text, [r"piece 2,"], "resume.sbatch (resubmitted job)")
    s = check_results(out, H, eig, 2, "resume.sbatch, interrupted and resubmitted")
    if sum(s["hvp"]["columns_restored_from_checkpoint"]) <= 0:
        raise Failure("resume.sbatch (resubmitted job): nothing was restored from the checkpoint")
    if os.path.exists(ckpt):
        raise Failure(f"REMOVE_CHECKPOINT=yes left {ckpt}")


def main():
    reason = ensure_packages()
    if reason:
        print(f"SKIPPED: {reason}", flush=True)
        return SKIP
    for f in ("convnet.pt", "convnet_data.pt", "convnet_H.npy", "convnet_eig.npy"):
        if not os.path.exists(os.path.join(ORACLE, f)):
            print(f"FAILED: oracle file {f} missing in {ORACLE} (run the oracle_cases test first)")
            return 1
    if not os.access(DHESS, os.X_OK):
        print(f"FAILED: DHESS_BIN={DHESS} is not an executable")
        return 1

    def interrupted(signum, _):
        raise Failure(f"interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    c = Cluster()
    t0 = time.monotonic()
    try:
        c.start()
        scenarios = os.environ.get("DHESS_SLURM_SCENARIOS", "simple,resume").split(",")
        if "simple" in scenarios:
            simple_jobs(c)
        if "resume" in scenarios:
            resume_jobs(c)
    except (Failure, subprocess.TimeoutExpired) as e:
        c.dump_logs()
        print(f"FAILED: {e}", flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        c.stop()
    log(f"all SLURM job scripts passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
