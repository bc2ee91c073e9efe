#!/usr/bin/env bash
# Start a single-node Slurm cluster on 127.0.0.1 for aebench's tests (or by hand), with no systemd.
#
#   tests/slurm/start.sh [DIR]    # DIR: where config, state, logs and the munge key go (default: a new temp dir)
#   export SLURM_CONF=DIR/slurm.conf   # then sbatch, squeue and aebench's slurm launcher use this cluster
#   tests/slurm/stop.sh DIR
#
# Needs root (slurmd runs jobs as their user) and Debian's `slurm-wlm` and `munge` packages. Nothing is
# written outside DIR: munged runs with its own key and socket in DIR, and every daemon logs there.
# Ports: SLURMCTLD_PORT (default 6817) and SLURMD_PORT (default 6818); both bind to 127.0.0.1 only.
# The last line printed is DIR.
set -euo pipefail

DIR=${1:-$(mktemp -d /tmp/aebench-slurm.XXXXXX)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}

for exe in munged mungekey slurmctld slurmd sinfo; do
  command -v "$exe" >/dev/null || { echo "start.sh: $exe not found; apt-get install slurm-wlm munge" >&2; exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root (slurmd starts jobs as their user)" >&2; exit 3; }

mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
chmod 700 "$DIR/munge"

# -- munge: its own key and socket, so the host's munge (if any) is untouched ----------------------------
[ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" --bits=1024
chmod 600 "$DIR/munge/munge.key"
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"

# -- slurm.conf: one node, localhost at 127.0.0.1, no cgroups, no accounting ---------------------------
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$DIR/slurm.conf" <<CONF
ClusterName=aebench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
KillWait=2
InactiveLimit=0
MinJobAge=300
MailProg=/bin/true
PlugStackConfig=$DIR/plugstack.conf
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
: > "$DIR/plugstack.conf"
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost

# -- wait until the node takes jobs ---------------------------------------------------------------------
for _ in $(seq 1 60); do
  state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
  case "$state" in idle|mix|alloc) echo "$DIR"; exit 0 ;; esac
  sleep 0.5
done
echo "start.sh: node not ready (state: ${state:-none}); logs in $DIR/log" >&2
tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
exit 1
