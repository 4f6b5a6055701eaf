#!/usr/bin/env python3
"""Slurm side of the node-agents benchmark.

Measures, on a one-host Slurm started by benches/agents/slurm.sh:

1. start latency on an idle cluster: N single jobs, one at a time (after one warm-up
   job that is not counted). Each runs `date +%s%N > FILE`; the latency is from just
   before `sbatch` is started to the job's first command (the timestamp it writes).
   The next job is submitted only once the previous one has left the queue, so every
   job finds the node idle, and after a random pause of 0..JITTER s (fixed seed), so
   that submits do not all land at the same point of slurmctld's 1 s scheduling tick.
2. throughput: JOBS separate jobs running `true` (no job arrays: the corral side
   submits separate jobs too), submitted with `sbatch` by SUBMITTERS concurrent
   processes (each runs sbatch one after the other, as a user's script would).
   Time runs from the first sbatch being started to the controller recording the
   last job's completion ("_job_complete: JobId=N done" in slurmctld's log, with ms
   timestamps). Completion is watched in that log, not by polling squeue, so the
   watcher adds no RPC load to the controller.
   Every job's exit status is checked from the same log ("WEXITSTATUS 0").

Prints one JSON object on stdout:
  {jobs, seconds, jobs_per_second, submit_per_second, start_latency_ms: {p50, p99}, ...}
Progress goes to stderr.

  benches/agents/slurm_bench.py --work /tmp/slurm-bench --profile tuned
  benches/agents/slurm_bench.py --work /tmp/slurm-bench --no-start   # cluster already up
"""

import argparse
import datetime
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COMPLETE_RE = re.compile(
    r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] _job_complete: JobId=(\d+) (WEXITSTATUS (\d+)|WTERMSIG (\d+)|done)"
)


def log(msg):
    print(f"slurm_bench: {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100)
    return s[int(rank) - 1]


def sbatch(env, cwd, command):
    out = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--job-name=bench", "--wrap", command],
        env=env, cwd=cwd, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sbatch failed ({out.returncode}): {out.stderr.strip()}")
    return int(out.stdout.strip().split(";")[0])


def queue_empty(env):
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip() == ""


class CtldLog:
    """Follows slurmctld's log and collects job completions from a given offset."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = ""
        self.done = {}  # job id -> completion time (epoch seconds)
        self.status = {}  # job id -> "0" | "sig N" | other exit code

    def poll(self):
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            data = f.read()
            self.offset = f.tell()
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()
        for line in lines:
            m = COMPLETE_RE.match(line)
            if not m:
                continue
            stamp, job = m.group(1), int(m.group(2))
            if m.group(3) == "done":
                # Local time, as slurmctld writes it; same clock as time.time().
                t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                self.done[job] = t
            elif m.group(4) is not None:
                self.status[job] = m.group(4)
            else:
                self.status[job] = f"sig {m.group(5)}"


def measure_latency(env, work, samples, timeout, jitter):
    outdir = os.path.join(work, "out")
    os.makedirs(outdir, exist_ok=True)
    lat_ms, submit_ms = [], []
    rng = random.Random(1)  # fixed seed: the same jitter sequence every run
    for i in range(-1, samples):  # sample -1 is a warm-up, not counted
        stamp_file = os.path.join(outdir, f"latency-{i}")
        if os.path.exists(stamp_file):
            os.remove(stamp_file)
        deadline = time.time() + timeout
        while not queue_empty(env):  # idle cluster before each sample
            if time.time() > deadline:
                raise RuntimeError("queue did not drain before a latency sample")
            time.sleep(0.05)
        # Slurm starts batch jobs from a loop that ticks once a second; without a random
        # pause the submit would always land at the same point of that tick (right after
        # the previous job's end) and every sample would see the same wait.
        time.sleep(rng.uniform(0, jitter))
        t0 = time.time_ns()
        sbatch(env, outdir, f"date +%s%N > {stamp_file}")
        t1 = time.time_ns()
        while True:
            try:
                with open(stamp_file) as f:
                    text = f.read().strip()
                if text:
                    started = int(text)
                    break
            except FileNotFoundError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"latency job {i} did not start within {timeout} s")
            time.sleep(0.002)
        if i >= 0:
            lat_ms.append((started - t0) / 1e6)
            submit_ms.append((t1 - t0) / 1e6)
    # Wait for the last one to leave the queue so the throughput run starts idle.
    while not queue_empty(env):
        time.sleep(0.05)
    return lat_ms, submit_ms


def measure_throughput(env, work, jobs, submitters, ctld_log_path, timeout):
    outdir = os.path.join(work, "out")
    os.makedirs(outdir, exist_ok=True)
    ctld = CtldLog(ctld_log_path)
    ids, errors = [], []
    lock = threading.Lock()
    counter = iter(range(jobs))

    def submitter():
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                job = sbatch(env, outdir, "true")
            except Exception as e:  # counted and reported, the run goes on
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                ids.append(job)

    t_first = time.time()
    threads = [threading.Thread(target=submitter) for _ in range(submitters)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        ctld.poll()
        time.sleep(0.1)
    t_submitted = time.time()
    log(f"{len(ids)} submitted in {t_submitted - t_first:.2f} s ({len(errors)} sbatch errors)")
    wanted = set(ids)
    deadline = time.time() + timeout
    while True:
        ctld.poll()
        if wanted.issubset(ctld.done.keys()):
            break
        if time.time() > deadline:
            missing = len(wanted - ctld.done.keys())
            raise RuntimeError(f"{missing} jobs not completed within {timeout} s after the last submit")
        time.sleep(0.05)
    t_seen = time.time()
    t_last = max(ctld.done[j] for j in wanted)
    ok = sum(1 for j in wanted if ctld.status.get(j) == "0")
    return {
        "submitted": len(ids),
        "submit_errors": len(errors),
        "first_submit_error": errors[0] if errors else None,
        "completed_ok": ok,
        "failed": len(wanted) - ok,
        "seconds": t_last - t_first,
        "seconds_until_observed": t_seen - t_first,
        "submit_seconds": t_submitted - t_first,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="slurm.sh work dir")
    ap.add_argument("--profile", choices=["tuned", "guide", "default"], default="tuned",
                    help="config profile for slurm.sh start (default: tuned)")
    ap.add_argument("--cpus", type=int, help="CPUs the node declares (slurm.sh --cpus); default: the real count")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="slurm.conf line to replace or add (slurm.sh --set); repeatable")
    ap.add_argument("--no-start", action="store_true", help="use a cluster that is already up in --work")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--submitters", type=int, default=4,
                    help="concurrent sbatch processes for the throughput run (default 4)")
    ap.add_argument("--latency-samples", type=int, default=20)
    ap.add_argument("--jitter", type=float, default=1.0,
                    help="random pause of 0..JITTER s before each latency sample (default 1)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for jobs to finish")
    args = ap.parse_args()

    work = os.path.abspath(args.work)
    slurm_sh = os.path.join(HERE, "slurm.sh")
    if not args.no_start:
        cmd = [slurm_sh, "start", work, "--profile", args.profile]
        if args.cpus:
            cmd += ["--cpus", str(args.cpus)]
        for kv in args.set:
            cmd += ["--set", kv]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    env = dict(os.environ, SLURM_CONF=os.path.join(work, "slurm.conf"))
    ctld_log = os.path.join(work, "log", "slurmctld.log")
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    try:
        load_before = loadavg()
        log(f"start latency: {args.latency_samples} jobs on the idle cluster (load {load_before})")
        lat, submit_lat = measure_latency(env, work, args.latency_samples, args.timeout, args.jitter)
        log(f"start latency p50 {percentile(lat, 50):.0f} ms, p99 {percentile(lat, 99):.0f} ms")
        log(f"throughput: {args.jobs} jobs running `true`, {args.submitters} submitters")
        run = measure_throughput(env, work, args.jobs, args.submitters, ctld_log, args.timeout)
        load_after = loadavg()
    finally:
        if not args.keep and not args.no_start:
            subprocess.run([slurm_sh, "stop", work], stdout=sys.stderr)

    result = {
        "system": "slurm",
        "version": subprocess.run(["sinfo", "--version"], env=env, capture_output=True, text=True).stdout.strip(),
        "profile": "external" if args.no_start else args.profile,
        "settings": args.set,
        "node_cpus": int(node[0]) if node else None,
        "machine_cpus": os.cpu_count(),
        "jobs": run["completed_ok"],
        "jobs_submitted": run["submitted"],
        "jobs_failed": run["failed"],
        "submit_errors": run["submit_errors"],
        "submitters": args.submitters,
        "seconds": round(run["seconds"], 3),
        "jobs_per_second": round(run["completed_ok"] / run["seconds"], 1),
        "submit_seconds": round(run["submit_seconds"], 3),
        "submit_per_second": round(run["submitted"] / run["submit_seconds"], 1),
        "start_latency_ms": {
            "p50": round(percentile(lat, 50), 1),
            "p99": round(percentile(lat, 99), 1),
            "min": round(min(lat), 1),
            "max": round(max(lat), 1),
            "samples": len(lat),
        },
        "sbatch_return_ms_p50": round(percentile(submit_lat, 50), 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    if run["first_submit_error"]:
        result["first_submit_error"] = run["first_submit_error"]
    print(json.dumps(result))
    return 0 if run["failed"] == 0 and run["submit_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
