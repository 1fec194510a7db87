# testbed-summary: dom0 plays a hostile client of the service VM (bad protocol, bogus grant reference, garbage event channel, a toolstack entry naming the wrong frontend, a handshake left half done, a never-attached device, requests it must refuse, an event storm, a ring index out of range, a client killed mid-call so its pages are revoked while mapped): each is refused or ended, logged and counted, and real calls keep working
# testbed-needs: kernel client
# testbed-timeout: 420
#
# Dom0 is a domain like any other: attached as a client (domid 0) it can call the service VM
# with the `xenrpc` CLI, and it can write whatever it likes into its own frontend directories.
# Each hostile device uses its own devid, so each expected server line is unique in the log.

tb_stage create-server
xl create tools/xenrpc.cfg || tb_fail "xl create tools/xenrpc.cfg failed"
server=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
echo "TESTBED: domain xenrpc is domid $server"
tb_stream_console xenrpc
tb_wait_console xenrpc "xenrpc: ready" 120

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
out=$(xenrpc hostile event-storm --devid 6 --timeout-ms 30000 --seconds 120 2>&1) ||
    tb_fail "the server did not end the storming connection: $out"
echo "TESTBED: $out"
tb_wait_console xenrpc "rpc: dom0/6: closed: event storm: " 30
be_state_is 6 6 30
check_serving

tb_stage bad-requests
# Requests the server can read but must refuse each get their status, over the same connection,
# and a good call after them is answered: nothing here breaks the connection.
out=$(xenrpc hostile bad-requests --devid 0 2>&1) || tb_fail "bad requests: $out"
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
# A connected client publishes a request index far beyond its ring: the server breaks that
# connection (a protocol violation, counted), unmaps it, and serves everyone else.
xenrpc attach "$server" 0 8 || tb_fail "attach devid 8 failed"
out=$(xenrpc hostile bad-index --devid 8 --timeout-ms 30000 2>&1) ||
    tb_fail "the server did not close a connection with a broken ring: $out"
echo "TESTBED: $out"
tb_wait_console xenrpc "rpc: dom0/8: closed: protocol violation: ReqProdOutOfRange" 30
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
tb_expect_console xenrpc "broken=1 client_let_go=1 event_storms=1"
check_serving
# The toolstack sees the same totals: the service VM publishes them, `xenrpc list` prints them.
out=$(xenrpc list --no-services 2>&1) || tb_fail "xenrpc list failed: $out"
echo "$out" | grep -q "^server $server totals: .*refused_frontend=1 refused_connect=3 .*broken=1 client_let_go=1 event_storms=1$" ||
    tb_fail "xenrpc list shows no totals with the refusals counted: $out"
echo "TESTBED: $(echo "$out" | grep "^server $server totals")"

tb_stage server-alive
grep -q "^xenrpc: FATAL" "$(tb_console_log xenrpc)" && tb_fail "the service VM printed a FATAL line"
# Every connection above has ended, however it ended: none of dom0's grants stays mapped.
held=$(tb_grants_mapped 0 "$server")
[ "$held" = 0 ] || tb_fail "the service VM still maps $held of dom0's grants with no connection up"
[ -n "$(tb_domain_state xenrpc)" ] || tb_fail "the service VM is gone"

tb_stage shutdown
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
tb_expect_console xenrpc "rpc: all clients closed"
tb_expect_gone xenrpc

tb_pass
