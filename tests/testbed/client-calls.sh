# testbed-summary: a Linux client guest attaches to the service VM and calls it with the xenrpc CLI (list, calls, errors, stats, bench), then detaches
# testbed-needs: kernel client
# testbed-timeout: 600
#
# End to end: the service VM (tools/xenrpc.cfg) and a Linux PV client guest carrying the
# `xenrpc` binary; dom0 attaches the guest, the guest runs its "calls" plan
# (tests/testbed/support/client-guest-init.sh) and prints each command's exit status.

tb_client_cfg client /run/client.cfg

tb_stage create-server
xl create tools/xenrpc.cfg || tb_fail "xl create tools/xenrpc.cfg failed"
server=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
echo "TESTBED: domain xenrpc is domid $server"
tb_stream_console xenrpc
tb_wait_console xenrpc "xenrpc: ready" 120

tb_stage create-client
xl create /run/client.cfg || tb_fail "xl create client failed"
client=$(xl domid client) || tb_fail "xl domid client failed"
echo "TESTBED: domain client is domid $client"
tb_stream_console client
tb_wait_console client "client-guest: ready" 180
tb_expect_console client "selftest-devices: PASS"

tb_stage attach
xenrpc attach "$server" "$client" 0 || tb_fail "xenrpc attach $server $client 0 failed"
xenstore-write "/local/domain/$client/data/xenrpc-test" calls || tb_fail "cannot write the guest's plan"

tb_stage guest-calls
t_calls=$(tb_uptime)
tb_wait_console client "client-guest: plan calls done" 360
tb_time "guest calls plan" "$t_calls" "$(tb_uptime)"
for cmd in "list" "call echo.ping" "call arith.add 40 2" "call echo.echo_inline hello-xenrpc" \
    "call echo.echo_ool --data out-of-line-hello" "--json describe" \
    "call kv.put greeting --data hello-kv" "call kv.get greeting" "call kv.list 0" \
    "call kv.delete greeting" \
    "stats --probe 200" "bench --calls 2000" "bench --calls 2000 --in-flight 8" \
    "bench --calls 500 --size 4096" "bench --calls 200 --size 65536 --data-pages 32" \
    "bench --calls 1000 --event-ping"; do
    tb_expect_console client "rc=0 for: xenrpc $cmd"
done
# A server-side error is an error with its status, not a hang or a crash.
tb_expect_console client "rc=1 for: xenrpc call arith.div 1 0"
tb_expect_console client "server answered BadArguments"
tb_expect_console client "server counters (all clients, since it started):"
tb_expect_console client "echo.echo_ool 65536 B: 200 calls"
tb_expect_console client "raw event round trip to the server (ping port, 1000 times)"
tb_expect_console xenrpc "data pages, ping port)"

tb_stage list
xenrpc list || tb_fail "xenrpc list failed"

tb_stage detach
xenrpc detach "$server" "$client" 0 || tb_fail "xenrpc detach failed (server did not close?)"
xenstore-exists "/local/domain/$client/device/xenrpc/0" && tb_fail "frontend directory still exists"
xenstore-exists "/local/domain/$server/backend/xenrpc/$client/0" && tb_fail "backend directory still exists"
held=$(tb_grants_mapped "$client" "$server")
[ "$held" = 0 ] || tb_fail "the service VM still maps $held of the client's grants after detach"

tb_stage shutdown
timeout 120 xl shutdown -w client || tb_fail "xl shutdown -w client failed or took over 120s"
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
tb_expect_console client "linux-guest: powering off"
tb_expect_console xenrpc "xenrpc: powering off"
tb_expect_gone client
tb_expect_gone xenrpc

tb_pass
