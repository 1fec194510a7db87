# testbed-summary: dom0 plays a hostile client of the service VM (bad protocol, bogus grant reference, garbage event channel, a toolstack entry naming the wrong frontend, a handshake left half done, a never-attached device, requests it must refuse, an event storm, a ring index out of range, a client killed mid-call so its pages are revoked while mapped) and a greedy one (full rings of 1 MiB one-way calls, state churn, a log flood with the console stalled, a ping flood, too many devices, kv filled to the quota and the VM's budget); a tenant guest's kv namespace is freed when its domain goes and a restored domain with the same domid finds it empty: each is refused, throttled or ended, logged and counted, and real calls keep working
# testbed-needs: kernel client
# testbed-timeout: 900
#
# Dom0 is a domain like any other: attached as a client (domid 0) it can call the service VM
# with the `xenrpc` CLI (its attacks with `xenrpc-hostile`), and it can write whatever it likes
# into its own frontend directories.
# Each hostile device uses its own devid, so each expected server line is unique in the log.

# The kv budget of the whole VM is lowered to 360 KiB (the default is a quarter of the kv
# domain's heap, ~379 KiB in 16 MiB) so that two tenants exhaust it: one at its 256 KiB quota,
# the other at the budget.
KV_BUDGET=368640

tb_stage create-server
xl create tools/xenrpc.cfg "extra=\"kv-budget=$KV_BUDGET\"" || tb_fail "xl create tools/xenrpc.cfg failed"
server=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
echo "TESTBED: domain xenrpc is domid $server"
tb_stream_console xenrpc
tb_wait_console xenrpc "xenrpc: ready" 120
tb_expect_console xenrpc "rpc: kv budget $KV_BUDGET bytes, "

# A Linux client guest, the second tenant (kv stages, domid reuse): it boots (30-60 s under
# TCG) while dom0 runs the stages before those. 128 MiB keeps its save image small.
tb_client_cfg tenant /run/tenant.cfg
sed -i 's/^memory = .*/memory = 128/' /run/tenant.cfg
xl create -e /run/tenant.cfg || tb_fail "xl create -e tenant failed"
tenant=$(xl domid tenant) || tb_fail "xl domid tenant failed"
echo "TESTBED: domain tenant is domid $tenant"
tb_stream_console tenant
tenant_step=0
LIMITS="--connect-timeout-ms 30000 --timeout-ms 30000"

# tenant_expect RC OUTPUT ARGS...: the tenant runs `xenrpc ARGS` (its next step); exit status
# and output must be exactly RC and OUTPUT.
tenant_expect() {
    t_rc=$1
    t_out=$2
    shift 2
    tenant_run "$@"
    tb_step_check tenant "$t_rc" "$t_out"
}

# tenant_run ARGS...: the tenant runs `xenrpc ARGS` (or ARGS, a `xenrpc-hostile ...` command
# line); TB_STEP_RC and TB_STEP_OUT hold the answer.
tenant_run() {
    tenant_step=$((tenant_step + 1))
    t_cmd=$1
    shift
    tb_step_send tenant "$tenant" "$tenant_step" "$t_cmd" $LIMITS "$@"
    tb_step_wait tenant "$tenant" "$tenant_step" 180
}

# latency LABEL OUTPUT: reports the p50 and p99 of a `xenrpc bench` output; sets P50 (µs).
latency() {
    l_line=$(echo "$2" | grep "latency µs: p50") || tb_fail "$1: no latency line in: $2"
    P50=$(echo "$l_line" | sed 's/.*p50 \([0-9.]*\),.*/\1/')
    echo "TESTBED: LATENCY $1: $(echo "$l_line" | sed 's/.*p50 \([0-9.]*\), p90 [0-9.]*, p99 \([0-9.]*\).*/p50 \1 µs, p99 \2 µs/')"
}

fe() { echo "/local/domain/0/device/xenrpc/$1"; }
be() { echo "/local/domain/$server/backend/xenrpc/0/$1"; }

# be_state_is DEVID STATE SECONDS: the backend state must reach STATE in time.
be_state_is() {
    _i=0
    while [ "$_i" -lt $(($3 * 5)) ]; do
        [ "$(xenstore-read "$(be "$1")/state" 2>/dev/null)" = "$2" ] && return 0
        _i=$((_i + 1))
        sleep 0.2
    done
    tb_fail "backend state of device $1 is '$(xenstore-read "$(be "$1")/state" 2>/dev/null)', expected $2"
}

# A real call from dom0 as an attached client: must answer correctly, before and after the abuse.
check_serving() {
    out=$(xenrpc call --devid 0 arith.add 40 2 2>&1) || tb_fail "real call failed: $out"
    echo "$out" | grep -q '42' || tb_fail "arith.add 40 2 answered: $out"
    echo "TESTBED: real call answered: $(echo "$out" | tr '\n' ' ')"
}

tb_stage real-client
xenrpc attach "$server" 0 0 || tb_fail "xenrpc attach $server 0 0 failed"
check_serving

tb_stage never-attached
if out=$(xenrpc call --devid 9 --connect-timeout-ms 5000 echo.ping 2>&1); then
    tb_fail "a never-attached device got an answer: $out"
fi
echo "$out" | grep -q "not attached" || tb_fail "never-attached device: unexpected error: $out"
echo "TESTBED: never-attached device refused: $out"

# hostile_frontend STAGE DEVID PROTOCOL INDEX-REF EVENT-CHANNEL REASON: attaches DEVID, lets
# the server offer it (InitWait), publishes the given values as Initialised, and expects the
# server to refuse with REASON and close the device.
hostile_frontend() {
    tb_stage "$1"
    xenrpc attach "$server" 0 "$2" || tb_fail "attach devid $2 failed"
    be_state_is "$2" 2 30
    xenstore-write "$(fe "$2")/protocol" "$3" "$(fe "$2")/index-ref" "$4" \
        "$(fe "$2")/event-channel" "$5" "$(fe "$2")/state" 3
    tb_wait_console xenrpc "rpc: dom0/$2: closed: refused: $6" 30
    be_state_is "$2" 6 30
}

hostile_frontend bad-protocol 1 xenrpc/9 8 5 "protocol: unsupported protocol"
hostile_frontend bogus-grant-reference 2 xenrpc/1 1000000 5 "mapping the index page failed"
hostile_frontend garbage-event-channel 3 xenrpc/1 8 12abc "event-channel: not a plain decimal number"

tb_stage reconnect-after-refusal
# The refused device starts over with a good handshake: the CLI does it (FE Initialising first).
out=$(xenrpc call --devid 3 echo.echo_inline second-chance 2>&1) || tb_fail "reconnect on devid 3 failed: $out"
echo "$out" | grep -q 'second-chance' || tb_fail "echo after reconnect answered: $out"
tb_wait_console xenrpc "rpc: dom0/3: client reconnecting" 30

tb_stage wrong-frontend-entry
# A backend entry whose frontend-id names another domain than its path, written by dom0 with
# dom0's own permissions (the service VM may not even write its state there): the server
# never follows it, says why, and goes on.
xenstore-write "$(be 4)/frontend-id" 7 "$(be 4)/frontend" /local/domain/7/device/xenrpc/4 "$(be 4)/state" 1
tb_wait_console xenrpc "rpc: dom0/4: refused: frontend-id 7 does not match entry 0" 30
check_serving

tb_stage half-done-handshake
xenrpc attach "$server" 0 5 || tb_fail "attach devid 5 failed"
be_state_is 5 2 30
# Device 5 is left in Initialising for good; the server must go on serving everyone else.
check_serving

tb_stage event-storm
# A connected client raises its event thousands of times with no requests behind them: the
# server ends that connection (and only that one) and counts it.
xenrpc attach "$server" 0 6 || tb_fail "attach devid 6 failed"
out=$(xenrpc-hostile event-storm --devid 6 --timeout-ms 30000 --seconds 120 2>&1) ||
    tb_fail "the server did not end the storming connection: $out"
echo "TESTBED: $out"
tb_wait_console xenrpc "rpc: dom0/6: closed: event storm: " 30
be_state_is 6 6 30
check_serving

tb_stage bad-requests
# Requests the server can read but must refuse each get their status, over the same connection,
# and a good call after them is answered: nothing here breaks the connection.
out=$(xenrpc-hostile bad-requests --devid 0 2>&1) || tb_fail "bad requests: $out"
echo "$out" | sed 's/^/TESTBED: /'
for line in "unknown service: server answered UnknownService" \
    "unknown method: server answered UnknownMethod" \
    "wrong version: server answered VersionMismatch" \
    "arguments of the wrong size: server answered BadArguments" \
    "deadline long past (1 ns of Xen system time): server answered DeadlineExceeded" \
    "deadline learned from the server's clock, 1 s ago: server answered DeadlineExceeded" \
    "then arith.add 40 2 on the same connection: 42"; do
    echo "$out" | grep -qxF "$line" || tb_fail "bad requests: no line '$line' in: $out"
done

tb_stage bad-ring-index
# A connected client publishes a response consumer index far beyond its ring: the server
# breaks that connection (a protocol violation, counted), unmaps it, and serves everyone else.
xenrpc attach "$server" 0 8 || tb_fail "attach devid 8 failed"
out=$(xenrpc-hostile bad-index --devid 8 --timeout-ms 30000 2>&1) ||
    tb_fail "the server did not close a connection with a broken ring: $out"
echo "TESTBED: $out"
tb_wait_console xenrpc "rpc: dom0/8: closed: protocol violation: RspConsOutOfRange" 30
be_state_is 8 6 30
check_serving

tb_stage killed-client
# A client process is killed mid-bench: its kernel revokes the pages the server still maps
# (gntalloc defers freeing them), clears the byte the client registered and raises the event.
# The server ends the connection at once, though the frontend still says Connected.
xenrpc attach "$server" 0 7 || tb_fail "attach devid 7 failed"
xenrpc bench --devid 7 --calls 1000000 --timeout-ms 30000 >/tmp/bench7.log 2>&1 &
bench_pid=$!
be_state_is 7 4 60
sleep 2
held=$(tb_grants_mapped 0 "$server")
echo "TESTBED: the service VM maps $held of dom0's grants during the bench"
# Ring (5 pages with the default 32 slots) and data (16): the dump must see them, or the
# zero counts below prove nothing.
[ "$held" -ge 21 ] || tb_fail "Xen's grant-table dump shows $held of dom0's grants mapped by the service VM during a bench"
kill -9 "$bench_pid" || tb_fail "the bench on devid 7 ended before it was killed: $(cat /tmp/bench7.log)"
wait "$bench_pid" 2>/dev/null
tb_wait_console xenrpc "rpc: dom0/7: closed: client let go of its pages" 30
be_state_is 7 6 30
held=$(tb_grants_mapped 0 "$server")
[ "$held" = 0 ] || tb_fail "the service VM still maps $held of dom0's grants after the killed client's connection closed"
[ "$(xenstore-read "$(fe 7)/state")" = 4 ] || tb_fail "frontend 7 is not left at Connected"
# The same device serves the next process.
out=$(xenrpc call --devid 7 arith.add 1 2 2>&1) || tb_fail "call after the kill failed: $out"
echo "$out" | grep -q '3' || tb_fail "arith.add 1 2 after the kill answered: $out"
check_serving

tb_stage greedy-one-way
# A client that plays by the rules greedily: its ring always full of one-way echo_ool calls
# that each move 1 MiB in and 1 MiB out (the most a call may). The server gives it one
# budget per pass and serves the honest bench on device 0 in between.
out=$(xenrpc bench --devid 0 --calls 500 --timeout-ms 30000 2>&1) || tb_fail "honest bench alone failed: $out"
latency "honest null call alone" "$out"
p50_alone=$P50
xenrpc attach "$server" 0 11 || tb_fail "attach devid 11 failed"
xenrpc-hostile greedy --devid 11 --data-pages 512 --seconds 60 --timeout-ms 30000 >/tmp/greedy.log 2>&1 &
greedy_pid=$!
be_state_is 11 4 60
sleep 3
out=$(xenrpc bench --devid 0 --calls 500 --timeout-ms 30000 2>&1) || tb_fail "honest bench beside the greedy client failed: $out"
latency "honest null call beside greedy 1 MiB one-way calls" "$out"
kill -0 "$greedy_pid" 2>/dev/null || tb_fail "the greedy client ended before the honest bench did: $(cat /tmp/greedy.log)"
wait "$greedy_pid" || tb_fail "the greedy client failed: $(cat /tmp/greedy.log)"
echo "TESTBED: $(cat /tmp/greedy.log)"
grep -q "the server kept serving the connection" /tmp/greedy.log || tb_fail "greedy: $(cat /tmp/greedy.log)"
check_serving

tb_stage state-churn
# A connected client rewrites its frontend state Initialising / Initialised in a loop, each
# Initialised an invitation to map its connection again: the server steps that device only,
# at a bounded rate (the excess is throttled and counted), and a bench on device 0 that spans
# the churn is served throughout.
xenrpc attach "$server" 0 12 || tb_fail "attach devid 12 failed"
# About 30 s of calls at the latency measured alone: the bench must span the 15 s churn.
calls=$(awk -v p="$p50_alone" 'BEGIN { print int(30e6 / (p > 1 ? p : 1)) }')
xenrpc bench --devid 0 --calls "$calls" --timeout-ms 30000 >/tmp/churn-bench.log 2>&1 &
bench_pid=$!
be_state_is 0 4 60
out=$(xenrpc-hostile state-churn --devid 12 --seconds 15 2>&1) || tb_fail "state churn: $out"
echo "TESTBED: $out"
kill -0 "$bench_pid" 2>/dev/null || tb_fail "the bench on device 0 ended before the churn did ($calls calls): make it longer"
wait "$bench_pid" || tb_fail "the bench on device 0 failed during the churn: $(cat /tmp/churn-bench.log)"
latency "honest null call during the state churn" "$(cat /tmp/churn-bench.log)"
# The churned device is not wedged: the next client on it is served.
out=$(xenrpc call --devid 12 arith.add 1 2 2>&1) || tb_fail "call on the churned device failed: $out"
echo "$out" | grep -q '3' || tb_fail "arith.add 1 2 on the churned device answered: $out"
check_serving

tb_stage log-flood
# xenconsoled is stopped, so the console ring fills; a client makes the server log as fast
# as it can (connections opened and closed). The server drops console lines (counted) instead
# of waiting for the ring, rate-limits the client's lines, and keeps serving.
consoled=$(pidof xenconsoled) || tb_fail "xenconsoled is not running"
kill -STOP "$consoled"
xenrpc attach "$server" 0 13 || tb_fail "attach devid 13 failed"
out=$(xenrpc-hostile reconnect --devid 13 --count 60 --timeout-ms 30000 2>&1) ||
    { kill -CONT "$consoled"; tb_fail "reconnect loop failed with the console stalled: $out"; }
echo "TESTBED: $out"
check_serving
# Calls were served with the console stalled; the console counted what it dropped.
totals=$(xenstore-read "/local/domain/$server/data/xenrpc-totals")
echo "TESTBED: totals with the console stalled: $totals"
kill -CONT "$consoled"
echo "$totals" | grep -q " console_dropped=[1-9]" || tb_fail "the stalled console dropped no lines: $totals"
echo "$totals" | grep -q " log_suppressed=[1-9]" || tb_fail "no log lines of the flood were suppressed: $totals"
# Once xenconsoled has emptied the ring, the console says what it dropped (unprompted).
tb_wait_console xenrpc "console: dropped " 60
check_serving

tb_stage ping-flood
# A connected client raises its ping port thousands of times without waiting for the bounce:
# the server bounces at most once per pass and ends the connection as a ping storm.
xenrpc attach "$server" 0 14 || tb_fail "attach devid 14 failed"
out=$(xenrpc-hostile ping-flood --devid 14 --burst 5000 --timeout-ms 30000 --seconds 120 2>&1) ||
    tb_fail "the server did not end the ping-flooding connection: $out"
echo "TESTBED: $out"
tb_wait_console xenrpc "rpc: dom0/14: closed: ping storm: " 30
be_state_is 14 6 30
check_serving

tb_stage device-cap
# A domain may have 16 devices: dom0 adds entries until it has 20, and the 4 past the cap are
# refused (BE Closed), counted, while device 0 keeps serving.
devid=15
while [ "$(xenstore-list "/local/domain/$server/backend/xenrpc/0" | wc -l)" -lt 20 ]; do
    xenrpc attach "$server" 0 "$devid" || tb_fail "attach devid $devid failed"
    devid=$((devid + 1))
done
tb_wait_console xenrpc "already has 16 devices" 30
check_serving
for d in $(seq 15 $((devid - 1))); do
    xenrpc detach --force "$server" 0 "$d" >/dev/null 2>&1 || tb_fail "detach devid $d failed"
done

tb_stage kv-tenant-quota
# The tenant guest fills its kv namespace: its quota (256 KiB) binds, Busy, the VM alive.
tb_wait_console tenant "client-guest: ready" 300
xenstore-write "/local/domain/$tenant/data/xenrpc-test" steps || tb_fail "cannot write the tenant's plan"
xenrpc attach "$server" "$tenant" 0 || tb_fail "xenrpc attach $server $tenant 0 failed"
tenant_expect 0 "" call kv.put secret --data tenant-secret
tenant_run "xenrpc-hostile kv-fill"
case $TB_STEP_RC:$TB_STEP_OUT in "0:kv-fill: stored "*" values of 4096 bytes, then the server answered Busy") ;;
*) tb_fail "tenant kv-fill: rc=$TB_STEP_RC, output '$TB_STEP_OUT'" ;; esac
tenant_stored=$(echo "$TB_STEP_OUT" | sed 's/kv-fill: stored \([0-9]*\) .*/\1/')
tenant_expect 0 "found=1
len=13
tenant-secret" call kv.get secret

tb_stage kv-global-budget
# dom0, the second tenant, fills from two connections: the VM's budget (360 KiB, of which the
# tenant holds its quota) binds before dom0's own quota, Busy on both connections.
out=$(xenrpc-hostile kv-fill --devid 0 2>&1) || tb_fail "dom0 kv-fill: $out"
echo "TESTBED: dom0: $out"
dom0_stored=$(echo "$out" | sed 's/kv-fill: stored \([0-9]*\) .*/\1/')
[ "$dom0_stored" -lt "$tenant_stored" ] ||
    tb_fail "dom0 stored $dom0_stored values, the tenant $tenant_stored: the VM's budget did not bind first"
# A second connection of dom0: overwriting its values fits (same footprint), one more does not.
xenrpc attach "$server" 0 10 || tb_fail "attach devid 10 failed"
out=$(xenrpc-hostile kv-fill --devid 10 2>&1) || tb_fail "dom0 kv-fill on a second connection: $out"
echo "TESTBED: second connection of dom0: $out"
[ "$out" = "kv-fill: stored $dom0_stored values of 4096 bytes, then the server answered Busy" ] ||
    tb_fail "a second connection past the VM's kv budget: $out"
check_serving

tb_stage kv-release
# The tenant's domain goes (`xl save -D`: saved, then destroyed): its namespace is freed, so
# dom0 can now store up to its own quota.
xl save -D tenant /tmp/tenant.save || tb_fail "xl save -D tenant failed"
tb_expect_gone tenant
tb_wait_console xenrpc "rpc: dom$tenant: tenant released (domain gone), kv namespace freed" 60
out=$(xenrpc-hostile kv-fill --devid 0 2>&1) || tb_fail "dom0 kv-fill after the release: $out"
echo "TESTBED: dom0 after the release: $out"
dom0_after=$(echo "$out" | sed 's/kv-fill: stored \([0-9]*\) .*/\1/')
[ "$dom0_after" -gt "$dom0_stored" ] ||
    tb_fail "dom0 stored $dom0_after values after the release, $dom0_stored before: the tenant's bytes did not come back"
xenrpc detach --force "$server" "$tenant" 0 >/dev/null 2>&1 || tb_fail "detach of the saved tenant's device failed"

tb_stage domid-reuse
# A domain with the tenant's domid (restored from its save image: libxl keeps the id) is a
# new tenant: it finds nothing of what the old one stored. libxl refuses a domid used in the
# last 60 s; its record of them is cleared first.
tb_expect_domid_free "$tenant"
rm -f /var/run/xen/domid-history
xl restore -e /tmp/tenant.save || tb_fail "xl restore tenant failed"
rm -f /tmp/tenant.save
[ "$(xl domid tenant)" = "$tenant" ] || tb_fail "the restored tenant is domid $(xl domid tenant), not $tenant"
xenrpc attach "$server" "$tenant" 0 || tb_fail "xenrpc attach $server $tenant 0 after the restore failed"
tenant_expect 0 "found=0
len=0" call kv.get secret
tenant_expect 0 "written=0
total=0
bytes=0" call kv.list 0
tenant_expect 0 "" call kv.put secret --data new-tenant
tenant_expect 0 "found=1
len=10
new-tenant" call kv.get secret

tb_stage totals
# The service VM publishes its totals (its console's `rpc: totals:` lines are within each
# device's log budget, so the published ones are the record); `xenrpc list` prints them.
out=$(xenrpc list --no-services 2>&1) || tb_fail "xenrpc list failed: $out"
totals=$(echo "$out" | grep "^server $server totals: ") || tb_fail "xenrpc list shows no totals: $out"
echo "TESTBED: $totals"
for want in "refused_frontend=1 refused_connect=3 " "broken=1 client_let_go=1 event_storms=1 ping_storms=1 refused_cap=4 " \
    "tenants_released=1 "; do
    case $totals in *"$want"*) ;; *) tb_fail "the totals lack '$want': $totals" ;; esac
done
for counted in throttled log_suppressed console_dropped; do
    echo "$totals" | grep -q " $counted=[1-9]" || tb_fail "the totals count no $counted: $totals"
done

tb_stage server-alive
grep -q "^xenrpc: FATAL" "$(tb_console_log xenrpc)" && tb_fail "the service VM printed a FATAL line"
xl destroy tenant || tb_fail "xl destroy tenant failed"
tb_expect_gone tenant
tb_wait_console xenrpc "rpc: dom$tenant: tenant released (domain gone), kv namespace freed" 60
xenrpc detach --force "$server" "$tenant" 0 >/dev/null 2>&1
# Every connection above has ended, however it ended: none of dom0's grants stays mapped.
held=$(tb_grants_mapped 0 "$server")
[ "$held" = 0 ] || tb_fail "the service VM still maps $held of dom0's grants with no connection up"
[ -n "$(tb_domain_state xenrpc)" ] || tb_fail "the service VM is gone"

tb_stage shutdown
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
tb_expect_console xenrpc "rpc: all clients closed"
tb_expect_gone xenrpc

tb_pass
