#!/usr/bin/env bash
# Bring up a throwaway single-node SLURM on this machine, for tests and CI:
# munged, MariaDB + slurmdbd (accounting, so `sacct` works), slurmctld and slurmd.
# No systemd needed; run as root.
#
#   tests/slurm/up.sh      # then: sinfo, sbatch, sacct ...
#   tests/slurm/down.sh    # stops exactly the daemons this script started
#
# Settings (environment):
#   SLURM_CI_DIR      state, logs, configs, database, PIDs   (default /tmp/salt-slurm)
#   WITH_DBD          1: slurmdbd + MariaDB (sacct works); 0: no accounting   (default 1)
#   FAKE_GPUS         N > 0: the node advertises N fake GPUs (GRES gpu)       (default 0)
#   SLURM_CI_INSTALL  1: apt-get install missing Debian packages; 0: fail     (default 1)
#   SLURM_CI_DB_PORT  TCP port of the private MariaDB on 127.0.0.1           (default 13306)
#   SLURM_CI_CPUS     CPUs the node advertises            (default: nproc, at least 2)
#   SLURM_CI_MEM_MB   memory (MB) the node advertises     (default: 80% of RAM, at least 32768)
# The node may advertise more than the machine has (SlurmdParameters=config_overrides; memory is
# not enforced without cgroups), so that jobs sized for a real cluster (e.g. train: mem_mb=8000)
# still get scheduled on a small CI machine; the test configs keep the actual use tiny.
#
# Everything written lives under $SLURM_CI_DIR; /etc/slurm/{slurm,gres,slurmdbd}.conf are symlinks
# into it (down.sh removes them). A second call while the cluster is up changes nothing and says
# "already up". If a step fails, whatever this call started is stopped again.
set -euo pipefail

D=${SLURM_CI_DIR:-/tmp/salt-slurm}
WITH_DBD=${WITH_DBD:-1}
FAKE_GPUS=${FAKE_GPUS:-0}
INSTALL=${SLURM_CI_INSTALL:-1}
DB_PORT=${SLURM_CI_DB_PORT:-13306}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARK="# written by salt tests/slurm/up.sh"
CLUSTER=salt-ci
SETTINGS="WITH_DBD=$WITH_DBD FAKE_GPUS=$FAKE_GPUS"

say() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

[ "$(id -u)" = 0 ] || die "must run as root (it starts munged, slurmctld, slurmd as system daemons)"
case "$WITH_DBD" in 0|1) ;; *) die "WITH_DBD must be 0 or 1, got '$WITH_DBD'";; esac
[[ "$FAKE_GPUS" =~ ^[0-9]+$ ]] || die "FAKE_GPUS must be a non-negative integer, got '$FAKE_GPUS'"
for v in SLURM_CI_CPUS SLURM_CI_MEM_MB SLURM_CI_DB_PORT; do
    [ -z "${!v:-}" ] || [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

mkdir -p "$D"/{etc,log,state,spool,dev}
chmod 755 "$D"
# One up/down at a time. Daemons must not inherit fd 9, or they would hold the lock forever.
exec 9>"$D/lock"
flock -w 600 9 || die "timed out waiting for the lock $D/lock"

# ---------------------------------------------------------------- helpers
alive() {  # alive NAME PID STARTTIME: is PID still the daemon we started (not a reused PID)?
    [ -r "/proc/$2/stat" ] || return 1
    local comm state start
    comm=$(cat "/proc/$2/comm" 2>/dev/null) || return 1
    # after ") ": field 1 is the state (Z: exited, not yet reaped), field 20 the start time
    read -r state start < <(awk '{sub(/^.*\) /, ""); print $1, $20}' "/proc/$2/stat" 2>/dev/null) || return 1
    [ "$comm" = "$1" ] && [ "$state" != Z ] && [ "$start" = "$3" ]
}
running() {  # running PID: exists and has not exited (a zombie still answers kill -0)
    local state
    state=$(awk '{sub(/^.*\) /, ""); print $1}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
all_recorded_alive() {
    [ -s "$D/pids" ] || return 1
    local name pid start
    while read -r name pid start; do alive "$name" "$pid" "$start" || return 1; done <"$D/pids"
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
pid_of() { awk -v n="$1" '$1==n{print $2}' "$D/pids" | tail -n 1; }

start() {  # start NAME CMD...: run CMD as a detached daemon, log to $D/log/NAME.out, record its PID
    local name=$1; shift
    # In a non-interactive shell the background child is not a group leader, so setsid execs
    # CMD in place and $! is the daemon's own PID (checked in wait_for via /proc/PID/comm).
    setsid "$@" </dev/null >"$D/log/$name.out" 2>&1 9>&- &
    local pid=$! start=""
    for _ in $(seq 50); do  # until exec has happened
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && break
        running "$pid" || break
        sleep 0.1
    done
    start=$(awk '{sub(/^.*\) /, ""); print $20}' "/proc/$pid/stat" 2>/dev/null || true)
    echo "$name $pid ${start:-0}" >>"$D/pids"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || fail_daemon "$name" "did not start"
}

fail_daemon() {  # print the daemon's logs and fail
    local name=$1; shift
    for f in "$D/log/$name.out" "$D/log/$name.log"; do
        [ -s "$f" ] && { echo "---- tail of $f"; tail -n 25 "$f"; } >&2
    done
    die "$name $*"
}

wait_for() {  # wait_for NAME SECONDS CMD...: poll CMD until it succeeds; fail early if NAME died
    local name=$1 secs=$2; shift 2
    local pid; pid=$(pid_of "$name")
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        [ -n "$pid" ] && ! running "$pid" && fail_daemon "$name" "exited during start-up"
        [ "$(date +%s)" -ge "$deadline" ] && fail_daemon "$name" "not ready after ${secs}s ($*)"
        sleep 0.3
    done
}

node_state() { timeout 5 sinfo -h -N -n localhost -o %T 2>/dev/null | head -n 1; }

wait_node_idle() {  # resume the node when slurmctld marks it down/drained (e.g. GRES count changed)
    local deadline=$(( $(date +%s) + ${1:-60} )) st
    local pid; pid=$(pid_of slurmd)
    while :; do
        running "$pid" || fail_daemon slurmd "exited during start-up"
        st=$(node_state || true)
        case "$st" in
            idle|mixed|allocated|completing) return 0 ;;
            *drain*|down*|inval*|fail*)
                timeout 5 scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            timeout 5 scontrol show node localhost >&2 || true
            fail_daemon slurmd "node 'localhost' is '$st', not idle"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- already up?
if [ -s "$D/pids" ]; then
    if all_recorded_alive; then
        running=$(cat "$D/settings" 2>/dev/null || echo unknown)
        [ "$running" = "$SETTINGS" ] || die "already up with '$running', asked for '$SETTINGS': run down.sh first"
        wait_node_idle 30
        say "already up (started earlier from $D; not touched): $(node_state)"
        exit 0
    fi
    say "some recorded daemons have exited: stopping the rest before starting again"
    SLURM_CI_LOCKED=1 "$HERE/down.sh"
fi
: >"$D/pids"

ok=0
cleanup() {
    local rc=$?
    if [ "$ok" != 1 ]; then
        say "bring-up failed (rc=$rc): stopping what this call started"
        SLURM_CI_LOCKED=1 "$HERE/down.sh" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- packages
need=(slurmctld slurmd sbatch sacct munged)
pkgs=(slurm-wlm slurmctld slurmd slurm-client munge)
if [ "$WITH_DBD" = 1 ]; then need+=(slurmdbd mariadbd mariadb-install-db); pkgs+=(slurmdbd mariadb-server); fi
export PATH=$PATH:/usr/sbin:/sbin
missing=()
for b in "${need[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing programs: ${missing[*]} (apt-get install ${pkgs[*]}, or SLURM_CI_INSTALL=1)"
    say "installing ${pkgs[*]} (missing: ${missing[*]})"
    a0=$(date +%s)
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"; }
    apt_install >"$D/log/apt.log" 2>&1 || { apt-get update -q >>"$D/log/apt.log" 2>&1 && apt_install >>"$D/log/apt.log" 2>&1; } \
        || { tail -n 30 "$D/log/apt.log" >&2; die "apt-get install failed (log: $D/log/apt.log)"; }
    say "installed in $(( $(date +%s) - a0 ))s"
fi

# ---------------------------------------------------------------- preflight: nothing else in the way
for p in 6817:slurmctld 6818:slurmd $([ "$WITH_DBD" = 1 ] && echo "6819:slurmdbd $DB_PORT:mariadb"); do
    port_open "${p%%:*}" && die "port ${p%%:*} (${p#*:}) is already in use by a process this script did not start"
done
mkdir -p /etc/slurm
for f in slurm.conf gres.conf slurmdbd.conf; do
    t=/etc/slurm/$f
    if [ -L "$t" ]; then
        # ours: a symlink into a state dir (possibly dangling after a crash) or to a file we wrote
        [ ! -e "$t" ] || grep -q "^$MARK" "$t" || die "$t links to a config this script did not write; move it away first"
    elif [ -e "$t" ]; then
        grep -q "^$MARK" "$t" || die "$t exists and was not written by this script; move it away first"
    fi
done

# ---------------------------------------------------------------- configs (in $D/etc, linked from /etc/slurm)
CPUS=${SLURM_CI_CPUS:-$(nproc)}
[ "$CPUS" -ge 2 ] || CPUS=2
MEM_MB=${SLURM_CI_MEM_MB:-$(( $(awk '/^MemTotal/{print int($2/1024)}' /proc/meminfo) * 8 / 10 ))}
[ -n "${SLURM_CI_MEM_MB:-}" ] || [ "$MEM_MB" -ge 32768 ] || MEM_MB=32768
gres_types="" node_gres=""
if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu
AccountingStorageTRES=gres/gpu"; node_gres="Gres=gpu:$FAKE_GPUS"
    { echo "$MARK"; echo "AutoDetect=off"
      for i in $(seq 0 $(( FAKE_GPUS - 1 ))); do
          # slurmd wants one character device per GPU: clones of /dev/null (major 1, minor 3)
          [ -c "$D/dev/fakegpu$i" ] || { rm -f "$D/dev/fakegpu$i"; mknod -m 666 "$D/dev/fakegpu$i" c 1 3; }
          echo "NodeName=localhost Name=gpu File=$D/dev/fakegpu$i"
      done; } >"$D/etc/gres.conf"
else
    rm -f "$D/etc/gres.conf"
fi
if [ "$WITH_DBD" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat >"$D/etc/slurm.conf" <<EOF
$MARK ($SETTINGS); down.sh removes the /etc/slurm link
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# trust the CPUs/RealMemory below even where they exceed the hardware (see the header)
SlurmdParameters=config_overrides
# keep finished jobs visible to squeue for 10 min (so the status command squeue also works)
MinJobAge=600
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
$gres_types
$accounting
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $node_gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
ln -sfn "$D/etc/slurm.conf" /etc/slurm/slurm.conf
if [ -e "$D/etc/gres.conf" ]; then ln -sfn "$D/etc/gres.conf" /etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi

# ---------------------------------------------------------------- munge (reuse a working one)
if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
    say "munged already running: using it"
else
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        head -c 1024 /dev/urandom >/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for munged 20 bash -c 'munge -n | unmunge'
fi

# ---------------------------------------------------------------- MariaDB + slurmdbd (private datadir)
if [ "$WITH_DBD" = 1 ]; then
    DB=$D/mysql
    mkdir -p "$DB"; chown mysql:mysql "$DB"
    if [ ! -d "$DB/data/mysql" ]; then
        say "initialising MariaDB in $DB/data"
        rm -rf "$DB/data"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --skip-test-db \
            --auth-root-authentication-method=socket >"$D/log/mariadb-install.out" 2>&1 \
            || fail_daemon mariadb-install "failed"
    fi
    start mariadbd mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$DB/mysqld.sock" \
        --pid-file="$DB/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-log-bin \
        --innodb-lock-wait-timeout=900 --log-error="$D/log/mariadbd.log"
    sql() { mariadb --no-defaults -S "$DB/mysqld.sock" -u root "$@"; }
    wait_for mariadbd 60 sql -e 'select 1'
    # a fresh password each bring-up; ALTER USER because CREATE ... IF NOT EXISTS keeps an old one
    pw=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1'; ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost'; ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    (umask 077; cat >"$D/etc/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$D/log/slurmdbd.log
PidFile=$D/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
EOF
)
    ln -sfn "$D/etc/slurmdbd.conf" /etc/slurm/slurmdbd.conf
    start slurmdbd slurmdbd -D
    # slurmctld dies ("no TRES") on a fresh state dir when slurmdbd is not up yet
    wait_for slurmdbd 60 port_open 6819
else
    rm -f /etc/slurm/slurmdbd.conf
fi

# ---------------------------------------------------------------- slurmctld + slurmd
start slurmctld slurmctld -D
wait_for slurmctld 60 bash -c 'timeout 5 scontrol ping | grep -q UP'
# -N localhost: the node is "localhost" whatever this machine's hostname is
start slurmd slurmd -D -N localhost
wait_node_idle 60

echo "$SETTINGS" >"$D/settings"
ok=1
say "up in $(elapsed)s ($SETTINGS, $CPUS CPUs, ${MEM_MB} MB, state in $D)"
timeout 5 sinfo || true
say "started: $(awk '{printf "%s=%s ", $1, $2}' "$D/pids")"
