#!/usr/bin/env bash
# Slurm baseline for the node-agents benchmark: a one-host Slurm (Debian package
# slurm-wlm, 22.05 on bookworm) with its own munged, every file under one work dir.
#
#   benches/agents/slurm.sh start WORKDIR [--profile tuned|guide|default] [--cpus N] [--set KEY=VALUE]...
#   benches/agents/slurm.sh stop WORKDIR
#   benches/agents/slurm.sh status WORKDIR
#   WORKDIR/env is written by start: `. WORKDIR/env` sets SLURM_CONF for sbatch/squeue.
#
# start is idempotent: it installs slurm-wlm and munge if missing (apt-get, non-
# interactive), stops daemons left running from WORKDIR, writes WORKDIR/slurm.conf,
# starts munged, slurmctld and slurmd (as root, with cleared state) and waits until
# sinfo shows the node idle. stop ends exactly the daemons whose pid files are in
# WORKDIR. Nothing outside WORKDIR is written (apart from the package install).
#
# Profiles:
#   default  the settings that one host in this sandbox needs (node, partition,
#            select/cons_tres with CR_CPU, no cgroups) and Slurm's defaults for the rest.
#   guide    default plus what the High Throughput Computing Administration Guide
#            (slurm.schedmd.com/high_throughput.html) recommends and applies to one
#            host; each setting is explained where it is written below.
#   tuned    guide, except that a job's end starts the scheduler at once (an Epilog
#            and no "defer"; see below). The fastest measured here, and the one to
#            compare with. The default.
# --cpus N declares N CPUs on the node instead of the real count (slurmd is started
# with SlurmdParameters=config_overrides), so that N one-CPU jobs can run at once, as
# on agents that offer more slots than the machine has cores. Default: the real count.
#
# --set KEY=VALUE replaces (or adds) one slurm.conf line after the profile is written,
# for experiments, e.g. --set SchedulerParameters=batch_sched_delay=0 --set Epilog=/bin/true.
#
# Ports: SLURM_CTLD_PORT (default 6817) and SLURM_D_PORT (default 6818) in the
# environment change them if another Slurm already uses these.
set -euo pipefail

die() { echo "slurm.sh: $*" >&2; exit 1; }
log() { echo "slurm.sh: $*" >&2; }

usage() {
    sed -n '2,8p' "$0" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd="$1"; shift
work="$1"; shift
profile=tuned
cpus=""
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --set) [[ "$2" == *=* ]] || die "--set wants KEY=VALUE"; sets+=("$2"); shift 2 ;;
        *) usage ;;
    esac
done
case "$profile" in default|guide|tuned) ;; *) die "unknown profile $profile" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (slurmd must start jobs as their user; munged and slurmd run as root here)"

mkdir -p "$work"
work="$(cd "$work" && pwd)"
ctld_port="${SLURM_CTLD_PORT:-6817}"
d_port="${SLURM_D_PORT:-6818}"

install_packages() {
    local missing=()
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing slurm-wlm and munge (missing: ${missing[*]})"
        apt-get update
        # slurm-wlm pulls slurmctld, slurmd and slurm-client. Its postinst may try to
        # start the system services; where policy-rc.d forbids that (containers) it
        # only prints a note. Those services would use /etc/slurm, not our config.
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
    fi
}

# Ends the daemon whose pid file is $1, if it is alive, and waits for it to go.
stop_pidfile() {
    local pidfile="$1" name="$2" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop in 10 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop_all() {
    # slurmd first (it would otherwise keep calling the controller), then the
    # controller, then munged that both use.
    stop_pidfile "$work/run/slurmd.pid" slurmd
    stop_pidfile "$work/run/slurmctld.pid" slurmctld
    stop_pidfile "$work/munge/munged.pid" munged
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

status() {
    local ok=0 f
    for f in munge/munged.pid run/slurmctld.pid run/slurmd.pid; do
        if alive "$work/$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$work/$f"))"
        else echo "$(basename "$f" .pid): stopped"; ok=1; fi
    done
    if [ $ok -eq 0 ]; then SLURM_CONF="$work/slurm.conf" sinfo -N -h -o '%N %t %c %m' || true; fi
    return $ok
}

start_munge() {
    # Our own munged with its own key and socket, so that a system munged (if any) is
    # not touched. munged insists that its key is private to its user and that its
    # socket, pid and log directories are not writable by others.
    mkdir -p "$work/munge"
    chmod 0700 "$work/munge"
    if [ ! -s "$work/munge/munge.key" ]; then
        mungekey --create --keyfile="$work/munge/munge.key" 2>/dev/null \
            || dd if=/dev/urandom of="$work/munge/munge.key" bs=1 count=1024 status=none
    fi
    chmod 0600 "$work/munge/munge.key"
    # High-throughput guide, "Munge configuration": the default of 2 threads limits
    # how fast credentials are made and checked; it suggests 10. The default profile
    # keeps munged's own default.
    local threads=2
    [ "$profile" != default ] && threads=10
    munged --force --num-threads="$threads" \
        --socket="$work/munge/munge.socket.2" \
        --key-file="$work/munge/munge.key" \
        --pid-file="$work/munge/munged.pid" \
        --log-file="$work/munge/munged.log" \
        --seed-file="$work/munge/munged.seed"
    for _ in $(seq 1 50); do
        [ -S "$work/munge/munge.socket.2" ] && return 0
        sleep 0.1
    done
    die "munged did not create its socket; see $work/munge/munged.log"
}

write_conf() {
    local real_cpus mem node_cpus
    real_cpus="$(nproc)"
    # RealMemory in MiB, a little below the total so that slurmd's own check of the
    # node (which reads the same /proc/meminfo) never finds less than declared.
    mem="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)"
    node_cpus="${cpus:-$real_cpus}"
    mkdir -p "$work/state" "$work/spool" "$work/log" "$work/run" "$work/out"
    {
        cat <<EOF
# Written by benches/agents/slurm.sh (profile: $profile). Edits are overwritten.
ClusterName=corralbench
# One host: controller and the only node are both "localhost", so that the setup does
# not depend on the machine's hostname resolving. slurmd is started with -N localhost.
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket.2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
# No cgroups: slurmd should not manage this machine's cgroup tree from inside the
# sandbox, and corral's agent uses no cgroups either (at the time of writing). pgid
# tracks a job's processes by its process group, which is all a job that runs
# \`true\` needs; task/none binds nothing.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
# Many one-CPU jobs at once: CPUs are the consumable resource (memory is not).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
EOF
        if [ -n "$cpus" ] && [ "$cpus" != "$real_cpus" ]; then
            cat <<EOF
# --cpus $cpus: the node declares more CPUs than the machine has; config_overrides
# makes slurmd report the configured count instead of refusing the node.
SlurmdParameters=config_overrides
EOF
        fi
        if [ "$profile" != default ]; then
            cat <<'EOF'

# ---- High Throughput Computing Administration Guide, as applies to one host ----
# No accounting storage and no accounting collection: the guide says gathering job
# accounting information costs throughput (jobacct_gather/none), and storing it a
# little (accounting_storage/none). No slurmdbd exists here anyway.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobAcctGatherFrequency=0
# No job completion log (jobcomp/none), the guide's advice. (This is also the default.)
JobCompType=jobcomp/none
# FIFO priority: "considerably faster than other options".
PriorityType=priority/basic
# sched/builtin: the guide recommends it when most jobs are short-lived; it manages a
# FIFO queue without the backfill pass. One node and equal jobs leave nothing to
# backfill.
SchedulerType=sched/builtin
# Room for the whole burst: 2,000 jobs plus completed ones still held in memory
# (default 10,000 is already enough; raised so a bigger --jobs does not hit it).
MaxJobCount=100000
# Purge completed jobs from slurmctld's memory after 2 s instead of 300 s ("should be
# reduced to a few seconds if possible"). The bench reads results from the
# controller's log, not from squeue -t all, so nothing needs the records longer.
MinJobAge=2
# Under a burst of 2,000 submits on 2 cores the controller answers slowly; a longer
# timeout avoids RPCs failing and being retried ("might need to be increased").
MessageTimeout=30
# Less logging: the guide says more detailed logging decreases throughput and to use
# "error" or "info". info is kept because the bench verifies each job's exit status
# from the controller's "_job_complete ... WEXITSTATUS" lines, which are at info.
SlurmctldDebug=info
SlurmdDebug=error
# Scheduler tuning. The guide's example set for "hundreds of jobs per second" is
#   batch_sched_delay=20, bf_continue, bf_interval=300, bf_min_age_reserve=10800,
#   bf_resolution=600, bf_yield_interval=1000000, partition_job_depth=500,
#   sched_max_job_start=200, sched_min_interval=2000000
# It is meant for a large, always-busy cluster. How Slurm 22.05 starts a batch job
# decides what applies here: sbatch's submit RPC only test-fits the job and queues a
# scheduling request; slurmctld's background thread, which wakes every 1 s, runs the
# scheduler when a request is queued and batch_sched_delay seconds have passed since
# its last run. A job's end (no Epilog configured) also only queues a request. So on
# this path the scheduler runs at most once a second and starts what fits then.
#  - batch_sched_delay=0: run on every 1 s tick that has requests, instead of every
#    3 s (default) or 20 s (the guide's example, which is for keeping the scheduler
#    from running all the time on a big machine; on one host it only idles the node).
#    Measured here (2,000 jobs, 64 CPUs declared, machine loaded by other builds):
#    about 21 -> 28-33 jobs/s, and the idle start latency p50 about 2.3 s -> 0.5 s.
#  - default_queue_depth, partition_job_depth, sched_max_job_start: how many jobs one
#    run may consider and start (defaults 100, unlimited, unlimited); raised so one
#    run can fill every free CPU when the node declares many (--cpus).
#  - sched_min_interval is left at its default (2 us): runs already come at most once
#    a second here, and the guide's 2 s would halve the rate.
#  - The bf_* options tune sched/backfill, which is not used (see SchedulerType).
EOF
        fi
        if [ "$profile" = guide ]; then
            cat <<'EOF'
#  - defer: do not test-fit each job at submit time (less work per sbatch during the
#    burst, the guide's advice for many hundreds of submits at once). For batch jobs
#    it does not delay their start, which is left to the 1 s tick anyway.
SchedulerParameters=defer,batch_sched_delay=0,default_queue_depth=1000,partition_job_depth=1000,sched_max_job_start=1000
EOF
        fi
        if [ "$profile" = tuned ]; then
            cat <<'EOF'
#  - No defer, and an Epilog that does nothing. With an Epilog configured, slurmd
#    reports each job's end with an EPILOG_COMPLETE message, and slurmctld's handler
#    of that message runs the scheduler at once unless "defer" is set (proc_req.c,
#    _slurm_rpc_epilog_complete). Without an Epilog, slurmd answers the terminate
#    request with "already complete", which only queues a request for the 1 s tick.
#    So here a freed CPU gets the next job right away instead of at the next tick.
#    Measured here with 2 CPUs (2 one-CPU jobs at a time), 200 jobs: 2.0 jobs/s
#    with the guide profile, 28 jobs/s with this one. With 64 CPUs both are limited
#    by the submit rate and come out about the same. Costs one fork of /bin/true
#    per job on the node. Does not change the start latency of a lone job, which
#    is still decided by the tick.
SchedulerParameters=batch_sched_delay=0,default_queue_depth=1000,partition_job_depth=1000,sched_max_job_start=1000
Epilog=/bin/true
EOF
        fi
        cat <<EOF

NodeName=localhost NodeAddr=127.0.0.1 CPUs=$node_cpus RealMemory=$mem State=UNKNOWN
PartitionName=bench Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    } >"$work/slurm.conf"
    local kv key
    for kv in ${sets[@]+"${sets[@]}"}; do
        key="${kv%%=*}"
        # slurm.conf keys are case-insensitive: drop any line that sets the same key.
        grep -v -i "^${key}=" "$work/slurm.conf" >"$work/slurm.conf.tmp" || true
        printf '%s\n' "# --set" "$kv" >>"$work/slurm.conf.tmp"
        mv "$work/slurm.conf.tmp" "$work/slurm.conf"
    done
    printf 'export SLURM_CONF=%q\n' "$work/slurm.conf" >"$work/env"
}

start() {
    install_packages
    stop_all
    # A fresh controller each time: old state (jobs, node state) is cleared, -c below
    # also says so to both daemons.
    rm -rf "$work/state" "$work/spool" "$work/log"
    local port
    for port in "$ctld_port" "$d_port"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use (another Slurm? stop it, or set SLURM_CTLD_PORT / SLURM_D_PORT)"
        fi
    done
    write_conf
    start_munge
    export SLURM_CONF="$work/slurm.conf"
    # The high-throughput guide asks for high ulimits for slurmctld: open files matter
    # when thousands of RPCs arrive at once.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    slurmctld -c -f "$SLURM_CONF" || die "slurmctld failed; see $work/log/slurmctld.log"
    for _ in $(seq 1 100); do
        scontrol ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer; see $work/log/slurmctld.log"
    # -N localhost: this slurmd is the node named "localhost" whatever the hostname.
    slurmd -c -N localhost -f "$SLURM_CONF" || die "slurmd failed; see $work/log/slurmd.log"
    local state=""
    for _ in $(seq 1 300); do
        state="$(sinfo -h -n localhost -o '%t' 2>/dev/null || true)"
        [ "$state" = idle ] && break
        sleep 0.1
    done
    [ "$state" = idle ] || die "node is not idle after 30 s (state: '$state'); see $work/log/"
    log "up: profile $profile, node localhost $(sinfo -h -n localhost -o '%c CPUs, %m MiB') idle; . $work/env"
}

case "$cmd" in
    start) start ;;
    stop) stop_all; log "stopped" ;;
    status) status ;;
    *) usage ;;
esac
