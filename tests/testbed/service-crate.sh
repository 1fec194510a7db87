# testbed-summary: a service crate of its own (examples/counter, made a service VM image by `cargo xtask build --services`) boots from its generated xl config as its own domain, serves its service (and no built-in one) to dom0 attached as a client, and shuts down cleanly
# testbed-needs: examples client
# testbed-timeout: 300
#
# Sourced by the testbed's dom0 /init in /testbed, which mirrors the repository:
# build/counter-service.cfg boots build/counter-service.elf, exactly as a user would.

tb_stage create
t_create=$(tb_uptime)
xl create build/counter-service.cfg || tb_fail "xl create build/counter-service.cfg failed"
server=$(xl domid counter-service) || tb_fail "xl domid counter-service failed"
echo "TESTBED: domain counter-service is domid $server"
tb_stream_console counter-service

tb_stage wait-ready
tb_wait_console counter-service "xenrpc: ready" 120
tb_time "xl create -> xenrpc: ready" "$t_create" "$(tb_uptime)"
tb_expect_console counter-service "xenrpc: rpc: serving counter, introspection; "
# A production boot goes straight to serving.
tb_expect_console counter-service "xenrpc: selftest: skipped"

# Dom0 attached as a client: introspection lists the crate's service, and a built-in service of
# the stock image is unknown here.
tb_stage call
xenrpc attach "$server" 0 0 || tb_fail "xenrpc attach $server 0 0 failed"
LIMITS="--connect-timeout-ms 30000 --timeout-ms 30000"
out=$(xenrpc describe $LIMITS 2>&1) || tb_fail "describe failed: $out"
echo "TESTBED: describe answered: $(echo "$out" | tr '\n' ';')"
echo "$out" | grep -qx "1024 counter v1" || tb_fail "describe does not list counter: $out"
echo "$out" | grep -qx "  3 get_blob ({ value: u32 }) -> ({ value: u32 }, bytes)" ||
    tb_fail "describe does not show get_blob's signature: $out"
# Generic calls reach the crate's methods, resolved from introspection.
out=$(xenrpc call $LIMITS counter.incr 5 2>&1) || tb_fail "counter.incr 5 failed: $out"
[ "$out" = 5 ] || tb_fail "counter.incr 5 answered '$out', expected 5"
out=$(xenrpc call $LIMITS counter.incr value=2 2>&1) || tb_fail "counter.incr value=2 failed: $out"
[ "$out" = 7 ] || tb_fail "counter.incr value=2 answered '$out', expected 7"
out=$(xenrpc call $LIMITS counter.get_blob 10000 --out /tmp/blob 2>&1) || tb_fail "get_blob failed: $out"
[ "$(wc -c </tmp/blob)" = 10000 ] || tb_fail "get_blob wrote $(wc -c </tmp/blob) bytes, expected 10000"
echo "TESTBED: counter.get_blob 10000 answered: $(echo "$out" | tr '\n' ';')"
out=$(xenrpc call $LIMITS arith.add 40 2 2>&1) && tb_fail "arith.add answered in an image without it: $out"
echo "$out" | grep -q 'unknown service "arith"' || tb_fail "arith.add: unexpected error: $out"

tb_stage shutdown
t_shutdown=$(tb_uptime)
timeout 60 xl shutdown -w counter-service || tb_fail "xl shutdown -w counter-service failed or took over 60s"
tb_time "xl shutdown -> domain gone" "$t_shutdown" "$(tb_uptime)"

tb_stage powering-off-line
tb_expect_console counter-service "xenrpc: powering off"

tb_stage domain-gone
tb_expect_gone counter-service

tb_pass
