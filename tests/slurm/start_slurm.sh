#!/usr/bin/env bash
# A throw-away one-node SLURM cluster for tests/test_slurm_real.py: munged, slurmctld and slurmd as
# root with every file (config, key, socket, state, logs, pids) under STATE_DIR, no accounting
# (Snakemake queries job states with squeue), and a fake `gpu:2` gres backed by two /dev/null devices so
# SLURM sets CUDA_VISIBLE_DEVICES for a job that asks --gpus. While it runs, /etc/slurm/slurm.conf links
# to its config (the jobs' inner srun reads only that); it refuses to start where that file exists.
#   start_slurm.sh start STATE_DIR CTLD_PORT SLURMD_PORT   -> prints SLURM_CONF=... on success
#   start_slurm.sh stop STATE_DIR                          -> kills the three daemons by their pid files
# Needs the Debian packages slurm-wlm and munge (slurmctld, slurmd, slurm-client come with slurm-wlm).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin   # the daemons live in sbin, not always on a non-login PATH

cmd=${1:?usage: start_slurm.sh start|stop STATE_DIR [CTLD_PORT SLURMD_PORT]}
dir=${2:?usage: start_slurm.sh start|stop STATE_DIR [CTLD_PORT SLURMD_PORT]}
dir=$(cd "$dir" && pwd)

stop() {
    # Jobs first (their slurmstepd outlive slurmd), then the daemons.
    if [[ -s $dir/slurmctld.pid && -f $dir/slurm.conf ]]; then
        SLURM_CONF=$dir/slurm.conf scancel --full --state=RUNNING 2>/dev/null || true
        SLURM_CONF=$dir/slurm.conf scancel --state=PENDING 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(SLURM_CONF=$dir/slurm.conf squeue -h -t RUNNING,COMPLETING 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    if [[ $(readlink /etc/slurm/slurm.conf 2>/dev/null) == "$dir/slurm.conf" ]]; then
        rm -f /etc/slurm/slurm.conf
    fi
    for name in slurmd slurmctld munged; do
        pidfile="$dir/$name.pid"
        if [[ -s $pidfile ]]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi

ctld_port=${3:?CTLD_PORT}
slurmd_port=${4:?SLURMD_PORT}
for tool in munged slurmctld slurmd sbatch squeue sinfo; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y slurm-wlm munge" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "needs root (slurmd runs jobs as the submitting user)" >&2; exit 3; }

trap 'stop' ERR   # a daemon that failed to start: take down the ones already running
chmod 700 "$dir"   # munged refuses a socket or key in a directory others can write
mkdir -p "$dir/state" "$dir/spool" "$dir/dev"
# slurmd wants gres files to be devices: two copies of /dev/null (a symlink where mknod is refused).
for i in 0 1; do
    [[ -e $dir/dev/gpu$i ]] || mknod "$dir/dev/gpu$i" c 1 3 2>/dev/null || ln -s /dev/null "$dir/dev/gpu$i"
done
node=$(hostname -s)

# munge: its own key and socket, so a system munged (if any) is neither used nor disturbed.
dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"

cat >"$dir/slurm.conf" <<EOF
ClusterName=latentrec-test
SlurmctldHost=$node
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# squeue keeps finished jobs this long: Snakemake's squeue status query must still see them.
MinJobAge=600
SchedulerParameters=sched_interval=2
# More CPUs and memory than the machine has: tiny test jobs may share the two real cores.
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$dir/gres.conf" <<EOF
AutoDetect=off
NodeName=$node Name=gpu File=$dir/dev/gpu[0-1]
EOF

# The job's inner `srun` (Snakemake's jobstep) runs with SLURM_* variables stripped, SLURM_CONF too, so
# it reads the default /etc/slurm/slurm.conf: point that at this cluster while it runs (stop removes the
# link), and never replace a real one.
if [[ -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    echo "/etc/slurm/slurm.conf exists (a configured SLURM, or another test cluster); not replacing it" >&2
    exit 3
fi
mkdir -p /etc/slurm
ln -s "$dir/slurm.conf" /etc/slurm/slurm.conf

export SLURM_CONF=$dir/slurm.conf
slurmctld -i   # -i: ignore (absent) saved state
slurmd -N "$node"

# Ready when the node is idle (slurmd registered with its gres); a daemon that died says why in its log.
for _ in $(seq 60); do
    if [[ $(sinfo -h -N -n "$node" -o %T 2>/dev/null) == idle ]]; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm did not come up within 30 s; sinfo: $(sinfo -N 2>&1 | tail -2)" >&2
tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 2>/dev/null || true
stop
exit 4
