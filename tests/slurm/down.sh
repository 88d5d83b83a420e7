#!/usr/bin/env bash
# Stop the throwaway SLURM that tests/slurm/up.sh started: exactly the daemons it recorded in
# $SLURM_CI_DIR/pids (newest first), nothing else. Jobs still in that cluster are cancelled first
# (slurmd leaves running job steps alive when it stops). Each daemon gets SIGTERM, then SIGKILL
# after $SLURM_CI_STOP_TIMEOUT seconds (default 15): slurmd ignores SIGTERM while it retries
# registration. The /etc/slurm links that up.sh made are removed. $SLURM_CI_DIR (logs, state,
# accounting database) is kept for inspection unless SLURM_CI_PURGE=1.
# Exit status: 0 when nothing recorded is left running.
set -uo pipefail

D=${SLURM_CI_DIR:-/tmp/salt-slurm}
STOP_TIMEOUT=${SLURM_CI_STOP_TIMEOUT:-15}
export PATH=$PATH:/usr/sbin:/sbin

say() { printf 'slurm-down: %s\n' "$*"; }

if [ ! -d "$D" ]; then say "nothing to stop ($D does not exist)"; exit 0; fi
if [ "${SLURM_CI_LOCKED:-0}" != 1 ]; then  # up.sh calls us while holding the lock
    exec 9>"$D/lock"
    flock -w 600 9 || { say "timed out waiting for the lock $D/lock"; exit 1; }
fi

alive() {  # alive NAME PID STARTTIME: is PID still the daemon up.sh started (not a reused PID)?
    [ -r "/proc/$2/stat" ] || return 1
    local comm state start
    comm=$(cat "/proc/$2/comm" 2>/dev/null) || return 1
    # after ") ": field 1 is the state (Z: exited, not yet reaped), field 20 the start time
    read -r state start < <(awk '{sub(/^.*\) /, ""); print $1, $20}' "/proc/$2/stat" 2>/dev/null) || return 1
    [ "$comm" = "$1" ] && [ "$state" != Z ] && [ "$start" = "$3" ]
}

rc=0
if [ -s "$D/pids" ]; then
    # cancel the cluster's jobs while our slurmctld still answers
    ctld=$(awk '$1=="slurmctld"' "$D/pids" | tail -n 1)
    if [ -n "$ctld" ] && alive $ctld; then
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs still in the throwaway cluster: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 40); do
                [ -z "$(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    while read -r name pid start; do
        [ -n "$name" ] || continue
        if ! alive "$name" "$pid" "$start"; then say "$name ($pid) already gone"; continue; fi
        t=$(date +%s.%N)
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq $(( STOP_TIMEOUT * 5 ))); do alive "$name" "$pid" "$start" || break; sleep 0.2; done
        if alive "$name" "$pid" "$start"; then
            say "$name ($pid) ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 25); do alive "$name" "$pid" "$start" || break; sleep 0.2; done
        fi
        if alive "$name" "$pid" "$start"; then say "$name ($pid) is still running"; rc=1
        else say "stopped $name ($pid) in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"; fi
    done < <(tac "$D/pids")
else
    say "no daemons recorded in $D/pids"
fi

# remove only the /etc/slurm links that point into this state dir
for f in slurm.conf gres.conf slurmdbd.conf; do
    t=/etc/slurm/$f
    if [ -L "$t" ] && [ "$(readlink "$t")" = "$D/etc/$f" ]; then rm -f "$t"; fi
done

if [ "$rc" = 0 ]; then
    rm -f "$D/pids" "$D/settings"
    if [ "${SLURM_CI_PURGE:-0}" = 1 ]; then rm -rf "$D"; say "removed $D"; fi
fi
exit "$rc"
