#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for tests/test_slurm.py.
#
#   tests/slurm/cluster.sh install          apt-get install Debian's slurm-wlm and munge (if missing)
#   tests/slurm/cluster.sh start DIR        write configs into DIR, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh stop DIR         stop exactly the daemons `start` recorded in DIR/pids
#   tests/slurm/cluster.sh logs DIR         print the daemon logs (for failure output)
#
# Everything lives in DIR: slurm.conf, gres.conf, cgroup.conf, a private munge key and socket, the
# state and spool folders, the logs and the PID files. Nothing under /etc is written, no daemon of the
# machine is touched, and `stop` signals only the PIDs recorded by `start`. Client commands (sbatch,
# squeue, scontrol) find this cluster through SLURM_CONF=DIR/slurm.conf, and a job's nested srun through
# DIR/bin on PATH (`start` prints both exports).
#
# Facts this follows (SLURM 22.05 on Debian 12, measured): NodeName must equal `hostname -s`;
# RealMemory must not exceed what `slurmd -C` reports; without an accounting daemon `sacct` fails,
# so the snakemake slurm executor is run with `--slurm-status-command squeue`, which the plugin honours
# only while MinJobAge >= 3 x its first status-check interval (MinJobAge=3600 here, the interval 5-40 s).
# One GPU is declared through gres.conf with File=/dev/null: a `--gpus=1` request is scheduled as on
# a real GPU node, and the job itself runs on the CPU.
set -euo pipefail

cmd=${1:?usage: cluster.sh install|start DIR|stop DIR|logs DIR}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        echo "slurm-wlm and munge already installed: $(slurmd -V)"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    echo "installed: $(slurmd -V)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2
    shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - t0 >= limit)); then
            echo "timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

start() {
    local dir
    dir=$(cd "${1:?start needs a directory}" && pwd)
    mkdir -p "$dir"/{munge,state,spool,log} "$dir/spool/$(hostname -s)"
    chmod 700 "$dir/munge"
    : >"$dir/pids"

    local host mem cpu_line ctld_port d_port
    host=$(hostname -s)
    # slurmd -C: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    cpu_line=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=.*//')
    mem=$(slurmd -C | sed -nE 's/.*RealMemory=([0-9]+).*/\1/p')
    mem=$((mem * 9 / 10))  # never above what slurmd detects, or the node is drained
    ctld_port=$(free_port)
    d_port=$(free_port)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done

    # A private munge key: the daemons and the clients of this cluster only trust each other.
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"

    cat >"$dir/slurm.conf" <<EOF
# Single-node test cluster written by tests/slurm/cluster.sh (see there for why each value).
ClusterName=testcluster
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${dir}/munge/munge.socket
CredType=cred/munge
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool/%n
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups inside a container: track job processes through /proc, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: sacct cannot answer, so the executor polls squeue.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# squeue must still see a finished job when the executor first asks (>= 3 x its first interval);
# an hour, so that the test can also read every job's record (scontrol show job) at the end.
MinJobAge=3600
# cons_tres: GPUs are a trackable resource, so sbatch --gpus=1 is scheduled against gres.conf.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=${host} NodeAddr=127.0.0.1 ${cpu_line} RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=gpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$dir/gres.conf" <<EOF
# One pretend GPU: the request is scheduled like a real one; the job runs on the CPU.
AutoDetect=off
NodeName=${host} Name=gpu File=/dev/null
EOF
    cat >"$dir/cgroup.conf" <<EOF
# Not used (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none); present so that slurmd finds
# a cgroup.conf next to slurm.conf instead of reading the system's.
CgroupPlugin=autodetect
IgnoreSystemd=yes
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
EOF

    # The plugin's job step (snakemake-executor-plugin-slurm-jobstep) strips every SLURM_* variable,
    # SLURM_CONF included, before its nested `srun`; srun would then look for /etc/slurm/slurm.conf.
    # This cluster's config lives in $dir, so an `srun` first on PATH restores it. Nothing else changes.
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$dir/slurm.conf" "$(command -v srun)" >"$dir/bin/srun"
    chmod +x "$dir/bin/srun"

    export SLURM_CONF="$dir/slurm.conf"

    munged --foreground --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" >>"$dir/log/munged.out" 2>&1 &
    echo "munged $!" >>"$dir/pids"
    wait_for 20 "munged" test -S "$dir/munge/munge.socket"

    slurmctld -D -f "$dir/slurm.conf" >>"$dir/log/slurmctld.out" 2>&1 &
    echo "slurmctld $!" >>"$dir/pids"
    wait_for 30 "slurmctld" scontrol ping

    slurmd -D -f "$dir/slurm.conf" >>"$dir/log/slurmd.out" 2>&1 &
    echo "slurmd $!" >>"$dir/pids"
    wait_for 60 "node ${host} idle" sh -c "sinfo -h -n '${host}' -o %T | grep -qx idle"

    echo "export SLURM_CONF=$dir/slurm.conf PATH=$dir/bin:\$PATH"
    sinfo -N -o '%N %T %c %m %G %P'
}

stop() {
    local dir=${1:?stop needs a directory}
    [ -f "$dir/pids" ] || return 0
    # Jobs still queued or running on this private cluster are cancelled first, so that no job
    # step outlives slurmd.
    if [ -f "$dir/slurm.conf" ] && SLURM_CONF="$dir/slurm.conf" timeout 10 scontrol ping >/dev/null 2>&1; then
        SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --user "$(id -u)" 2>/dev/null || true
        for _ in $(seq 1 20); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" timeout 10 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    # Reverse order: slurmd, slurmctld, then munged; each by its recorded PID only.
    local name pid
    tac "$dir/pids" | while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "$name ($pid) ignored SIGTERM; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        echo "stopped $name ($pid)"
    done
    : >"$dir/pids"
}

logs() {
    local dir=${1:?logs needs a directory} f
    # The daemons' own log files, and munged's stderr (slurmd/slurmctld repeat their log on stderr).
    for f in "$dir"/log/*.log "$dir"/log/munged.out; do
        [ -f "$f" ] || continue
        echo "===== $f (last 60 lines) ====="
        tail -n 60 "$f"
    done
}

case "$cmd" in
install) install ;;
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
logs) logs "${2:-}" ;;
*)
    echo "unknown command: $cmd" >&2
    exit 2
    ;;
esac
