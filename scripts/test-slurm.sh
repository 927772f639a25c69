#!/usr/bin/env bash
# `sambench slurm` on a real Slurm: starts a single-node cluster on this machine (as root, no
# systemd: munge and the Slurm daemons started by hand, stopped by their PIDs at the end, whatever
# happens), then
#   1. submits suites/quick.toml (at 6 epochs a run) as 3 shards and checks that the merged database holds exactly the
#      runs of a plain local `sambench run` of the suite, with identical final metrics and epochs;
#   2. submits it again into a new folder, cancels shard 2 (scancel) once it has finished a run
#      and sends shard 3 what Slurm sends before a time limit (SIGTERM to the batch shell), checks
#      that the merge took every finished run and listed the stopped shards' unfinished ones (as
#      interrupted, never failed), then runs the same `sambench slurm --submit` again and checks
#      that the suite completes, identical to the local run.
# Usage: scripts/test-slurm.sh [SAMBENCH_BINARY]   (default .build/release/sambench). Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(readlink -f "${1:-.build/release/sambench}")
[ -x "$BIN" ] || { echo "test-slurm: no sambench binary at $BIN (swift build -c release first)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-slurm: starts Slurm's daemons, so it runs as root"; exit 1; }
command -v sqlite3 >/dev/null || { echo "test-slurm: needs sqlite3"; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

W=$(mktemp -d /tmp/sambench-slurm.XXXXXX)
# The quick suite at 6 epochs a run instead of its 40: what is tested is the sharding, the
# merge and the resubmission, not the training, and it runs the suite four times over.
SUITE=$W/quick.toml
sed 's/^epochs = .*/epochs = 6/' suites/quick.toml > "$SUITE"
grep -q '^epochs = 6$' "$SUITE" || { echo "test-slurm: suites/quick.toml has no top-level epochs line to shorten"; exit 1; }
R=$W/cluster
mkdir -p "$R"/{munge,state,spool,log}
chmod 755 "$W" "$R"   # munged runs as munge and must reach its folder
step() { echo "test-slurm: $*"; }
fail() {
    echo "test-slurm: FAILED: $*"
    for f in "$W"/*/logs/*.out "$R"/log/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done
    exit 1
}
stop_daemons() {
    local status=$?
    for p in "$R/slurmd.pid" "$R/slurmctld.pid" "$R/munge/munged.pid"; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
    done
    # Wait for them to go (a daemon left behind would hold the ports for the next run).
    for _ in $(seq 50); do
        alive=0
        for p in "$R/slurmd.pid" "$R/slurmctld.pid" "$R/munge/munged.pid"; do
            [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    [ $status = 0 ] && rm -rf "$W"
    exit $status
}
trap stop_daemons EXIT

# --- munge: its own key and socket; the folder owned by munge and world-executable.
chown munge:munge "$R/munge"; chmod 755 "$R/munge"
dd if=/dev/urandom of="$R/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$R/munge/munge.key"; chmod 400 "$R/munge/munge.key"
runuser -u munge -- /usr/sbin/munged --key-file="$R/munge/munge.key" --socket="$R/munge/munge.socket.2" \
    --pid-file="$R/munge/munged.pid" --log-file="$R/munge/munged.log" --seed-file="$R/munge/munged.seed"

# --- one node with this machine's CPUs, one partition.
H=$(hostname -s)
cat > "$R/slurm.conf" <<CONF
ClusterName=sambenchci
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$R/munge/munge.socket.2
StateSaveLocation=$R/state
SlurmdSpoolDir=$R/spool
SlurmctldPidFile=$R/slurmctld.pid
SlurmdPidFile=$R/slurmd.pid
SlurmctldLogFile=$R/log/slurmctld.log
SlurmdLogFile=$R/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$R/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 120); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.5; done
[ "$(sinfo -h -o %T 2>/dev/null)" = idle ] || fail "the Slurm node did not come up"
step "single-node Slurm up ($(sinfo -h -o '%P %D nodes, %c CPUs'))"

# Waits until no job is queued or running (bounded only as a guard against a hang).
wait_jobs() {
    for _ in $(seq 1800); do
        [ -z "$(squeue -h -o %i)" ] && return 0
        sleep 0.5
    done
    squeue; fail "jobs still queued after 15 minutes"
}

# Same runs (all done), identical final metrics and epochs (timings aside): a query that counts
# every row of one database missing from the other, both ways, must give 0.
same_as_local() {
    local db=$1
    local epochs="run_key, stage, epoch, lr, train_loss, train_accuracy, perturbed_loss, corrupted_noisy_accuracy, corrupted_clean_accuracy, validation_loss, validation_accuracy, test_loss, test_accuracy"
    local diff
    diff=$(sqlite3 "$db" "ATTACH '$W/local.sqlite' AS l; SELECT
        (SELECT count(*) FROM (SELECT key, status, epochs_done FROM runs EXCEPT SELECT key, status, epochs_done FROM l.runs))
      + (SELECT count(*) FROM (SELECT key, status, epochs_done FROM l.runs EXCEPT SELECT key, status, epochs_done FROM runs))
      + (SELECT count(*) FROM (SELECT * FROM metrics EXCEPT SELECT * FROM l.metrics))
      + (SELECT count(*) FROM (SELECT * FROM l.metrics EXCEPT SELECT * FROM metrics))
      + (SELECT count(*) FROM (SELECT $epochs FROM epochs EXCEPT SELECT $epochs FROM l.epochs))
      + (SELECT count(*) FROM (SELECT $epochs FROM l.epochs EXCEPT SELECT $epochs FROM epochs))
      + (SELECT count(*) FROM (SELECT run_key, labels_sha256, realised_rate FROM noise EXCEPT SELECT run_key, labels_sha256, realised_rate FROM l.noise))")
    [ "$diff" = 0 ] || fail "$db differs from the local run in $diff rows"
    [ "$(sqlite3 "$db" "SELECT count(*) FROM runs WHERE status = 'done'")" = 18 ] || fail "$db does not hold the 18 runs done"
}

cd "$W"
step "the reference: a plain local run of the suite (one thread per run, as the shards)"
"$BIN" run "$SUITE" --db "$W/local.sqlite" --checkpoints "$W/ck-local" --threads 1 --quiet

step "1. three shards through Slurm"
"$BIN" slurm "$SUITE" --shards 3 --cpus-per-task 1 --out "$W/a" --db "$W/a.sqlite" --submit | tee "$W/a-submit.txt"
grep -q "submitted shards 1-3 as job array" "$W/a-submit.txt" || fail "no job array submitted"
wait_jobs
same_as_local "$W/a.sqlite"
grep -q "suite quick: 18 of 18 runs finished" "$W"/a/logs/merge.*.out || fail "the merge job did not report the suite complete"
step "   merged database identical to the local run: 18 runs, metrics and epochs"

step "2. three shards; shard 2 cancelled (scancel) and shard 3 sent Slurm's time-limit signal, each once it has finished a run"
"$BIN" slurm "$SUITE" --shards 3 --cpus-per-task 1 --out "$W/b" --db "$W/b.sqlite" --submit | tee "$W/b-submit.txt"
ARRAY=$(sed -n 's/.* as job array \([0-9][0-9]*\).*/\1/p' "$W/b-submit.txt")
[ -n "$ARRAY" ] || fail "no job array id printed"
# Waits for a progress point, not a delay: shard $1's database holds a finished run.
wait_for_a_run() {
    local n=0
    for _ in $(seq 3000); do
        n=$(sqlite3 "$W/b/shard-$1.sqlite" "SELECT count(*) FROM runs WHERE status = 'done'" 2>/dev/null || echo 0)
        [ "${n:-0}" -ge 1 ] && return 0
        sleep 0.2
    done
    fail "shard $1 never finished a run"
}
wait_for_a_run 2
scancel "${ARRAY}_2"
# What --signal=B:TERM@120 does two minutes before the time limit: SIGTERM to the batch shell
# (the runner) alone.
wait_for_a_run 3
scancel --batch --signal=TERM "${ARRAY}_3"
wait_jobs
done_b=$(sqlite3 "$W/b.sqlite" "SELECT count(*) FROM runs WHERE status = 'done'")
for k in 2 3; do
    left=$(sqlite3 "$W/b/shard-$k.sqlite" "SELECT count(*) FROM runs WHERE status != 'done'")
    [ "$left" -gt 0 ] || fail "shard $k finished before it was stopped; nothing was tested"
    [ "$(sqlite3 "$W/b/shard-$k.sqlite" "SELECT count(*) FROM runs WHERE status IN ('running', 'failed')")" = 0 ] \
        || fail "stopped shard $k left runs running or failed, not interrupted or pending"
    [ "$(sqlite3 "$W/b/shard-$k.sqlite" "SELECT count(*) FROM runs WHERE status = 'interrupted'")" -ge 1 ] \
        || fail "stopped shard $k has no interrupted run"
done
# Every run of shard 1 and every finished run of the others is in the merge, done.
for k in 1 2 3; do
    missing=$(sqlite3 "$W/b.sqlite" "ATTACH '$W/b/shard-$k.sqlite' AS s; SELECT count(*) FROM s.runs WHERE status = 'done' AND key NOT IN (SELECT key FROM runs WHERE status = 'done')")
    [ "$missing" = 0 ] || fail "shard $k: $missing finished runs missing from the merge"
done
[ "$(sqlite3 "$W/b/shard-1.sqlite" "SELECT count(*) FROM runs WHERE status != 'done'")" = 0 ] || fail "shard 1 did not finish"
MERGE_LOG=$(ls "$W"/b/logs/merge.*.out)
grep -q "shard-2.sqlite: .*interrupted" "$MERGE_LOG" && grep -q "shard-3.sqlite: .*interrupted" "$MERGE_LOG" \
    || fail "the merge did not list the stopped shards' runs"
grep -q "not finished: interrupted: " "$MERGE_LOG" || fail "the merge did not list the unfinished runs"
grep -q "suite quick: $done_b of 18 runs finished" "$MERGE_LOG" || fail "the merge did not report the suite incomplete"
step "   merged $done_b of 18 runs; the merge job's log:"
sed 's/^/     | /' "$MERGE_LOG"

step "3. the same command again completes the suite"
"$BIN" slurm "$SUITE" --shards 3 --cpus-per-task 1 --out "$W/b" --db "$W/b.sqlite" --submit | tee "$W/b-again.txt"
grep -q "submitted shards 2,3 (1 of 3 have finished)" "$W/b-again.txt" || fail "the resubmission did not submit shards 2 and 3 alone"
wait_jobs
same_as_local "$W/b.sqlite"
step "   merged database identical to the local run"
step "PASS"
