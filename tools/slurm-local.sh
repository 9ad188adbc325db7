#!/usr/bin/env bash
# slurm-local.sh -- a real single-node Slurm cluster on localhost, for tests and CI.
# (The project's copy of ../shared/tools/slurm-local.sh, plus SLURM_LOCAL_KILLWAIT; used by
# tests/test_slurm.py and .ci/run.)
#
# Debian 12 (bookworm) packages: Slurm 22.05.8, munge 0.5.15, optionally slurmdbd +
# MariaDB 10.11 (so that `sacct`/`sacctmgr` work, which is what
# snakemake-executor-plugin-slurm uses by default). No systemd needed: every daemon
# is started in the background by this script, and its PID is recorded, so that
# `down` stops exactly those processes (by PID, never by name).
#
# Usage (as root):
#   slurm-local.sh up         install (if needed), configure, start, wait until node idle
#   slurm-local.sh down       cancel all jobs, stop the daemons this script started
#                             (PIDs recorded in /var/lib/slurm-local/pids)
#   slurm-local.sh purge      down + remove config, state, spool, the accounting DB
#   slurm-local.sh status     show recorded daemons and sinfo
#   slurm-local.sh selftest   submit a few jobs (CPU, fake GPU, failing) and check them
#
# Settings (environment variables, all optional):
#   SLURM_LOCAL_ACCOUNTING  slurmdbd (default) | none
#                           none: no slurmdbd/MariaDB; `sacct` then only prints
#                           "Slurm accounting storage is disabled" (exit 1), so the
#                           snakemake profile must set `slurm-status-command: squeue`;
#                           slurm_account is then passed through unvalidated.
#   SLURM_LOCAL_GPUS        number of fake GPUs (gres gpu, type "testgpu"), default 2; 0 = none
#   SLURM_LOCAL_GPU_TYPE    gres type name, default testgpu
#   SLURM_LOCAL_CPUS        CPUs to advertise, default: what `slurmd -C` sees. A larger
#                           number oversubscribes (SlurmdParameters=config_overrides).
#   SLURM_LOCAL_MEM_MB      RealMemory to advertise, default: what `slurmd -C` sees
#   SLURM_LOCAL_ACCOUNT     Slurm account created for root (slurmdbd mode), default testacct
#   SLURM_LOCAL_EXTRA_USERS space-separated extra users to add to that account
#   SLURM_LOCAL_CGROUP      0 (default): proctrack/linuxproc + task/affinity, memory is
#                           only booked, not enforced. 1: proctrack/cgroup + task/cgroup
#                           (cgroup v1 here), so a job over its --mem is OOM-killed
#                           (step state OUT_OF_MEMORY). Tested on this VM; needs a
#                           writable cgroup hierarchy.
#   SLURM_LOCAL_TIMEOUT     seconds to wait for each daemon, default 60
#   SLURM_LOCAL_KILLWAIT    seconds between SIGTERM and SIGKILL when a job is cancelled or
#                           times out (slurm.conf KillWait), default 30. Under
#                           proctrack/cgroup SIGTERM reaches only a step's top process
#                           (Snakemake's job runner), so a cancelled job's command keeps
#                           running until the SIGKILL; the tests use a short wait.
set -euo pipefail

ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-slurmdbd}
NGPUS=${SLURM_LOCAL_GPUS:-2}
GPU_TYPE=${SLURM_LOCAL_GPU_TYPE:-testgpu}
ACCOUNT=${SLURM_LOCAL_ACCOUNT:-testacct}
EXTRA_USERS=${SLURM_LOCAL_EXTRA_USERS:-}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
CGROUP=${SLURM_LOCAL_CGROUP:-0}
KILLWAIT=${SLURM_LOCAL_KILLWAIT:-30}
CLUSTER=localcluster
NODE=localhost
ETC=/etc/slurm
STATE_DIR=/var/lib/slurm-local          # our PID records + config hash
PID_DIR=$STATE_DIR/pids
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
LOG_DIR=/var/log/slurm
DB_PASS=slurmdbpass                     # local-only test database

log() { printf '[slurm-local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
case "$ACCOUNTING" in slurmdbd|none) ;; *) die "SLURM_LOCAL_ACCOUNTING must be slurmdbd or none";; esac

# ---------------------------------------------------------------- PID bookkeeping
# A record is $PID_DIR/<name> containing the PID; alive = process exists and its
# /proc/PID/comm is the expected executable name (guards against PID reuse).
comm_of() { case "$1" in mariadb) echo mariadbd;; *) echo "$1";; esac; }
pidfile_of() {
  case "$1" in
    munged) echo /run/munge/munged.pid;; mariadb) echo /run/mysqld/mysqld.pid;;
    *) echo "/run/$1.pid";;
  esac
}
recorded_pid() { [ -f "$PID_DIR/$1" ] && cat "$PID_DIR/$1" || true; }
is_alive() {  # name
  local pid; pid=$(recorded_pid "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$(comm_of "$1")" ]
}
record_from_pidfile() {  # name pidfile -> waits for the daemon's own pidfile, records it
  local name=$1 pidfile=$2 i pid
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$(comm_of "$name")" ]; then
      echo "$pid" > "$PID_DIR/$name"; log "$name running, pid $pid"; return 0
    fi
    sleep 0.1
  done
  die "$name did not start (no live pid in $pidfile); see $LOG_DIR"
}
stop_one() {  # name: TERM the recorded PID, wait, KILL if needed
  local name=$1 pid i
  pid=$(recorded_pid "$name")
  if [ -z "$pid" ]; then return 0; fi
  if is_alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    if [ -e "/proc/$pid" ]; then log "$name (pid $pid) ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  else
    log "$name (recorded pid $pid) is not running"
  fi
  rm -f "$PID_DIR/$name"
  # slurmctld leaves its pidfile behind; a stale /run/slurmctld.pid makes the Debian
  # prerm of slurmctld run scancel and fail, which breaks `apt-get purge`.
  local pf; pf=$(pidfile_of "$name")
  [ "$(cat "$pf" 2>/dev/null || true)" = "$pid" ] && rm -f "$pf"
  return 0
}
wait_for() {  # description, command...
  local what=$1 i; shift
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out waiting for $what"
}

foreign_check() {  # name: refuse to start a second copy next to one we did not start
  local pf pid; pf=$(pidfile_of "$1"); pid=$(cat "$pf" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$(comm_of "$1")" ]; then
    die "$1 is already running as pid $pid but was not started by this script; stop it first"
  fi
  return 0
}

# ---------------------------------------------------------------- install
install_packages() {
  local pkgs=(munge slurmctld slurmd slurm-client) missing=() p
  [ "$ACCOUNTING" = slurmdbd ] && pkgs+=(slurmdbd mariadb-server)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "packages already installed"; return 0; }
  log "installing: ${missing[*]}"
  local t0=$SECONDS
  apt-get update -qq
  # The Debian postinsts try to start the services through invoke-rc.d; without
  # systemd/runlevels that is refused and harmless. --no-install-recommends keeps it
  # at 8 packages (+ ~18 for slurmdbd/MariaDB).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "packages installed in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- configuration
hw_field() { slurmd -C | head -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }

write_config() {
  mkdir -p "$ETC" "$STATE_DIR" "$PID_DIR" "$SPOOL_CTLD" "$SPOOL_D" "$LOG_DIR" "$ETC/fakegpu"
  chown slurm:slurm "$SPOOL_CTLD" "$LOG_DIR"

  # munge key: Debian's postinst creates one; make one if it is missing.
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key

  local real_cpus cpus mem nodeline gresline="" extra=""
  real_cpus=$(hw_field CPUs)
  cpus=${SLURM_LOCAL_CPUS:-$real_cpus}
  mem=${SLURM_LOCAL_MEM_MB:-$(hw_field RealMemory)}
  if [ "$cpus" = "$real_cpus" ]; then
    nodeline="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=$(hw_field Boards) SocketsPerBoard=$(hw_field SocketsPerBoard) CoresPerSocket=$(hw_field CoresPerSocket) ThreadsPerCore=$(hw_field ThreadsPerCore) RealMemory=$mem"
  else
    # advertise more (or fewer) CPUs than the machine has
    nodeline="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem"
    extra="SlurmdParameters=config_overrides"
  fi
  if [ "$NGPUS" -gt 0 ]; then
    gresline="Gres=gpu:$GPU_TYPE:$NGPUS"
    # Fake GPUs. gres/gpu drops entries without File= ("Removing file-less GPU"), and
    # File= must stat() as a character/block device: symlinks to /dev/null do.
    # CUDA_VISIBLE_DEVICES is then set to the allocated indices (0, 1, ...).
    local i
    rm -f "$ETC"/fakegpu/nvidia*
    for ((i = 0; i < NGPUS; i++)); do ln -sfn /dev/null "$ETC/fakegpu/nvidia$i"; done
    cat > "$ETC/gres.conf" <<EOF
# generated by slurm-local.sh: $NGPUS fake GPUs (no hardware; /dev/null stand-ins)
AutoDetect=off
Name=gpu Type=$GPU_TYPE File=$ETC/fakegpu/nvidia[0-$((NGPUS - 1))]
EOF
  else
    rm -f "$ETC/gres.conf" "$ETC"/fakegpu/nvidia*
  fi

  local proctrack="ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity"
  if [ "$CGROUP" = 1 ]; then
    proctrack="ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity"
    cat > "$ETC/cgroup.conf" <<EOF
# generated by slurm-local.sh
CgroupPlugin=autodetect
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainDevices=no
EOF
  else
    rm -f "$ETC/cgroup.conf"
  fi

  local acct
  if [ "$ACCOUNTING" = slurmdbd ]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    # AccountingStorageTRES=gres/gpu would be fatal here ("slurmdbd is required").
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi

  cat > "$ETC/slurm.conf.new" <<EOF
# generated by slurm-local.sh -- single-node test cluster on localhost
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
# default: no cgroups needed (works in containers/VMs without a cgroup tree);
# SLURM_LOCAL_CGROUP=1 switches to cgroup tracking + memory enforcement
$proctrack
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs without --mem must not grab the whole node's memory (the default)
DefMemPerCPU=1024
# reject impossible requests at sbatch time instead of leaving them PENDING forever
EnforcePartLimits=ALL
# squeue keeps finished jobs this long; the snakemake plugin's squeue mode needs
# MinJobAge >= 3 * init-seconds-before-status-checks
MinJobAge=300
KillWait=$KILLWAIT
InactiveLimit=0
Waittime=0
MailProg=/bin/true
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
GresTypes=gpu
$extra
$nodeline $gresline State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
  mv "$ETC/slurm.conf.new" "$ETC/slurm.conf"

  if [ "$ACCOUNTING" = slurmdbd ]; then
    cat > "$ETC/slurmdbd.conf" <<EOF
# generated by slurm-local.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$ETC/slurmdbd.conf"; chmod 0600 "$ETC/slurmdbd.conf"   # slurmdbd insists
  fi
}

config_hash() {
  local f
  for f in "$ETC/slurm.conf" "$ETC/gres.conf" "$ETC/slurmdbd.conf" "$ETC/cgroup.conf"; do if [ -f "$f" ]; then cat "$f"; fi; done | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------- daemons
start_munge() {
  is_alive munged && { log "munged already running (pid $(recorded_pid munged))"; return 0; }
  foreign_check munged
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged            # forks into the background
  record_from_pidfile munged /run/munge/munged.pid
  wait_for "munge" bash -c 'munge -n | unmunge'
}

start_mariadb() {
  if ! is_alive mariadb; then
    foreign_check mariadb
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    rm -f /run/mysqld/mysqld.pid
    # mariadbd does not daemonize; setsid detaches it from this shell's session.
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      --bind-address=127.0.0.1 --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
      >>"$LOG_DIR/mariadb.log" 2>&1 </dev/null &
    record_from_pidfile mariadb /run/mysqld/mysqld.pid
  else
    log "mariadbd already running (pid $(recorded_pid mariadb))"
  fi
  wait_for "mariadb" mysqladmin ping
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  is_alive slurmdbd && { log "slurmdbd already running (pid $(recorded_pid slurmdbd))"; return 0; }
  foreign_check slurmdbd
  rm -f /run/slurmdbd.pid      # a pre-created empty pidfile makes slurmdbd complain
  /usr/sbin/slurmdbd           # daemonizes
  record_from_pidfile slurmdbd /run/slurmdbd.pid
  wait_for "slurmdbd" sacctmgr -n show cluster
}

start_slurmctld() {
  is_alive slurmctld && { log "slurmctld already running (pid $(recorded_pid slurmctld))"; return 0; }
  foreign_check slurmctld
  rm -f /run/slurmctld.pid     # a fatal start leaves a stale pidfile behind
  /usr/sbin/slurmctld          # daemonizes
  record_from_pidfile slurmctld /run/slurmctld.pid
  wait_for "slurmctld" bash -c 'scontrol ping | grep -q UP'
}

start_slurmd() {
  is_alive slurmd && { log "slurmd already running (pid $(recorded_pid slurmd))"; return 0; }
  foreign_check slurmd
  rm -f /run/slurmd.pid
  # -N: the node is called "localhost" whatever the machine's hostname is
  /usr/sbin/slurmd -N "$NODE"  # daemonizes
  record_from_pidfile slurmd /run/slurmd.pid
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

wait_node_idle() {
  local i st
  for ((i = 0; i < TIMEOUT * 2; i++)); do
    st=$(node_state)
    case "$st" in
      idle|mixed|allocated) log "node $NODE is $st"; return 0 ;;
      drain*|down*|inval*|fail*)
        # e.g. left drained by an earlier config; ReturnToService=2 handles plain DOWN
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  scontrol show node "$NODE" >&2 || true
  die "node $NODE not idle (state: ${st:-?}); see $LOG_DIR/slurmd.log and slurmctld.log"
}

setup_accounts() {
  [ "$ACCOUNTING" = slurmdbd ] || return 0
  # slurmctld registers the cluster in slurmdbd by itself
  wait_for "cluster registration" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
  if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i -Q add account "$ACCOUNT" Description=tests Organization=tests >/dev/null
  fi
  local u
  for u in root $EXTRA_USERS; do
    if ! sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" format=user | grep -qx "$u"; then
      sacctmgr -i -Q add user "$u" Account="$ACCOUNT" >/dev/null
    fi
  done
  log "account '$ACCOUNT' has users: root $EXTRA_USERS"
}

do_down() {
  if is_alive slurmctld; then
    local jobs; jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      log "cancelling jobs: $(echo $jobs)"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 40; i++)); do [ -z "$(squeue -h -t R,CG,PD 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  local d
  for d in slurmd slurmctld slurmdbd mariadb munged; do stop_one "$d"; done
  rm -f "$STATE_DIR/config.sha256"
}

do_up() {
  local t0=$SECONDS
  install_packages
  local old_hash; old_hash=$(cat "$STATE_DIR/config.sha256" 2>/dev/null || true)
  write_config
  local new_hash; new_hash=$(config_hash)
  if [ -n "$old_hash" ] && [ "$old_hash" != "$new_hash" ]; then
    log "configuration changed: restarting slurm daemons"
    stop_one slurmd; stop_one slurmctld; stop_one slurmdbd
  fi
  if [ "$ACCOUNTING" = none ]; then stop_one slurmdbd; fi   # switched modes
  start_munge
  if [ "$ACCOUNTING" = slurmdbd ]; then start_mariadb; start_slurmdbd; fi
  start_slurmctld
  start_slurmd
  wait_node_idle
  setup_accounts
  echo "$new_hash" > "$STATE_DIR/config.sha256"
  log "cluster up in $((SECONDS - t0))s (accounting: $ACCOUNTING, gpus: $NGPUS, cgroup: $CGROUP)"
  sinfo -N -o '%N %P %T %c %m %G' >&2
}

do_status() {
  local d
  for d in munged mariadb slurmdbd slurmctld slurmd; do
    if is_alive "$d"; then echo "$d: running, pid $(recorded_pid "$d")"; else echo "$d: not running"; fi
  done
  sinfo -N -o '%N %P %T %c %m %G' 2>/dev/null || true
}

do_purge() {
  do_down
  # Drop the accounting DB through SQL. Deleting /var/lib/mysql/slurm_acct_db by hand
  # leaves InnoDB dictionary entries behind, and the next slurmdbd then dies with
  # "Table ... table_defs_table already exists" / "Unable to initialize accounting_storage/mysql".
  if [ -x /usr/sbin/mariadbd ] && [ -d /var/lib/mysql/slurm_acct_db ]; then
    log "dropping database slurm_acct_db"
    start_mariadb
    mysql -e "DROP DATABASE IF EXISTS slurm_acct_db;"
    stop_one mariadb
  fi
  log "removing configuration and state"
  rm -f "$ETC/slurm.conf" "$ETC/gres.conf" "$ETC/slurmdbd.conf" "$ETC/cgroup.conf"
  rm -rf "$ETC/fakegpu" "${SPOOL_CTLD:?}"/* "${SPOOL_D:?}"/* "$STATE_DIR"
  rm -f "$LOG_DIR"/*.log
}

do_selftest() {
  # test what is running, whatever SLURM_LOCAL_* say now
  [ -f "$ETC/slurm.conf" ] || die "no $ETC/slurm.conf: run '$0 up' first"
  if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$ETC/slurm.conf"; then ACCOUNTING=slurmdbd; else ACCOUNTING=none; fi
  if grep -q '^ProctrackType=proctrack/cgroup' "$ETC/slurm.conf"; then CGROUP=1; else CGROUP=0; fi
  NGPUS=$(find "$ETC/fakegpu" -name 'nvidia*' 2>/dev/null | wc -l)
  local dir i; dir=$(mktemp -d -t slurm-selftest.XXXXXX); cd "$dir"
  log "selftest in $dir"
  sinfo
  local j
  sbatch --wait -Q -o ok.out --cpus-per-task=1 --mem=100 -t 1 --wrap 'hostname; srun -n1 true' \
    || die "simple batch job failed"
  srun -n1 -t 1 --mem=50 true || die "srun failed"
  if [ "$NGPUS" -gt 0 ]; then
    sbatch --wait -Q -o gpu.out -p gpu --gres=gpu:1 --mem=100 -t 1 --wrap 'echo "$CUDA_VISIBLE_DEVICES"' \
      || die "fake-GPU job failed"
    [ "$(cat gpu.out)" = 0 ] || [ "$(cat gpu.out)" = 1 ] || die "unexpected CUDA_VISIBLE_DEVICES: $(cat gpu.out)"
    if sbatch -Q --gres=gpu:$((NGPUS + 1)) --wrap true 2>/dev/null; then die "over-sized GPU request was accepted"; fi
  fi
  j=$(sbatch --parsable -o fail.out --mem=50 -t 1 --wrap 'exit 3')
  for ((i = 0; i < 60; i++)); do squeue -h -j "$j" -t PD,R,CG 2>/dev/null | grep -q . || break; sleep 0.5; done
  squeue -h -t all -j "$j" -o '%i|%T' | grep -q '|FAILED' || die "failing job not reported FAILED by squeue"
  if [ "$ACCOUNTING" = slurmdbd ]; then
    for ((i = 0; i < 20; i++)); do sacct -X -n -P -j "$j" -o State | grep -q FAILED && break; sleep 0.5; done
    sacct -X -n -P -j "$j" -o JobIDRaw,State,ExitCode | grep -q "^$j|FAILED|3:0" || die "sacct did not report the failure"
  fi
  if [ "$CGROUP" = 1 ]; then
    j=$(sbatch --parsable -o oom.out --mem=100 -t 1 --wrap 'python3 -c "a = bytearray(400 * 2**20)"')
    for ((i = 0; i < 60; i++)); do squeue -h -j "$j" -t PD,R,CG 2>/dev/null | grep -q . || break; sleep 0.5; done
    squeue -h -t all -j "$j" -o '%T' | grep -q OUT_OF_MEMORY || die "cgroup memory limit not enforced"
  fi
  log "selftest passed"
  rm -rf "$dir"
}

case "${1:-up}" in
  up) do_up ;;
  down) do_down ;;
  purge) do_purge ;;
  status) do_status ;;
  selftest) do_selftest ;;
  *) echo "usage: $0 up|down|purge|status|selftest" >&2; exit 2 ;;
esac
