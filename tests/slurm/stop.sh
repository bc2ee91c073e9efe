#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start.sh started in DIR: cancel its jobs, then end slurmd,
# slurmctld and munged by the process ids in their pid files (nothing else is touched).
#
#   tests/slurm/stop.sh DIR [--rm]    # --rm: also delete DIR
set -uo pipefail

DIR=${1:?usage: stop.sh DIR [--rm]}
export SLURM_CONF="$DIR/slurm.conf"

# Jobs first, while slurmctld and slurmd can still end their processes.
if [ -f "$DIR/run/slurmctld.pid" ] && command -v squeue >/dev/null; then
  ids=$(squeue -h -o %A 2>/dev/null | sort -u)
  if [ -n "$ids" ]; then
    scancel $ids 2>/dev/null || true
    for _ in $(seq 1 40); do
      [ -z "$(squeue -h -t R,CG,S -o %A 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

stop_pid() {  # stop_pid PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
}
stop_pid "$DIR/run/slurmd.pid"
stop_pid "$DIR/run/slurmctld.pid"
stop_pid "$DIR/run/munged.pid"

if [ "${2:-}" = "--rm" ]; then
  rm -rf "$DIR"
fi
exit 0
