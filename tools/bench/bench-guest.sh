# testbed-summary: guest benchmark: a Linux client guest times raw event round trips to the service VM, null calls (1 and 8 in flight) and out-of-line echo (4 KiB at 1 and 8 in flight, 64 KiB), five rounds each, against the service VM and its unprotected build (handlers in kernel mode) side by side (run by `cargo xtask bench-guest`, which prints the table)
# testbed-needs: kernel unprotected client
# testbed-timeout: 1200
#
# Not a test: it asserts nothing about speed. The guest runs its "bench" plan
# (tests/testbed/support/client-guest-init.sh), printing each result as a `BENCH-JSON` line.

tb_client_cfg client /run/client.cfg

tb_stage create-server
xl create tools/xenrpc.cfg || tb_fail "xl create tools/xenrpc.cfg failed"
server=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
tb_stream_console xenrpc
tb_wait_console xenrpc "xenrpc: ready" 120
# The baseline: the same services, handlers in kernel mode (a test image only).
xl create tools/xenrpc.cfg 'name="xenrpc-unprotected"' 'kernel="build/xenrpc-unprotected.elf"' ||
    tb_fail "xl create of the unprotected build failed"
unprotected=$(xl domid xenrpc-unprotected) || tb_fail "xl domid xenrpc-unprotected failed"
tb_stream_console xenrpc-unprotected
tb_wait_console xenrpc-unprotected "xenrpc: ready" 120
tb_expect_console xenrpc-unprotected "UNPROTECTED build"

tb_stage create-client
xl create /run/client.cfg || tb_fail "xl create client failed"
client=$(xl domid client) || tb_fail "xl domid client failed"
tb_stream_console client
tb_wait_console client "client-guest: ready" 240

tb_stage attach
xenrpc attach "$server" "$client" 0 || tb_fail "xenrpc attach $server $client 0 failed"
xenrpc attach "$unprotected" "$client" 1 || tb_fail "xenrpc attach $unprotected $client 1 failed"
xenstore-write "/local/domain/$client/data/xenrpc-test" bench || tb_fail "cannot write the guest's plan"

tb_stage bench
tb_wait_console client "client-guest: plan bench done" 1000
grep -q "BENCH-FAILED" "$(tb_console_log client)" && tb_fail "a bench run failed (see the client's console)"

tb_stage shutdown
xl destroy client || tb_fail "xl destroy client failed"
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
timeout 60 xl shutdown -w xenrpc-unprotected ||
    tb_fail "xl shutdown -w xenrpc-unprotected failed or took over 60s"
tb_expect_gone xenrpc
tb_expect_gone xenrpc-unprotected

tb_pass
