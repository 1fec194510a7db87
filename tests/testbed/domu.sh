# testbed-summary: the service VM boots as a PV domU via xl, self-tests (asked for with extra="selftest"; a production boot skips them), writes xenstore, shuts down cleanly
# testbed-needs: kernel
# testbed-timeout: 300
#
# Sourced by the testbed's dom0 /init (see support/lib.sh), in /testbed, which mirrors the
# repository: tools/xenrpc.cfg boots build/xenrpc.elf, exactly as a user would.

tb_stage create
t_create=$(tb_uptime)
xl create tools/xenrpc.cfg 'extra="selftest"' || tb_fail "xl create tools/xenrpc.cfg failed"
domid=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
echo "TESTBED: domain xenrpc is domid $domid"
tb_stream_console xenrpc

tb_stage wait-ready
tb_wait_console xenrpc "xenrpc: ready" 120
tb_time "xl create -> xenrpc: ready" "$t_create" "$(tb_uptime)"
tb_expect_console xenrpc "xenrpc: ready ("

# The guest writes data/xenrpc-selftest after its self-tests: reading it back from dom0 proves
# that its xenstore writes arrive.
tb_stage xenstore-selftest-key
key=/local/domain/$domid/data/xenrpc-selftest
value=$(xenstore-read "$key") || tb_fail "xenstore-read $key failed (key missing?)"
[ "$value" = pass ] || tb_fail "$key is '$value', expected 'pass'"

tb_stage shutdown
t_shutdown=$(tb_uptime)
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
tb_time "xl shutdown -> domain gone" "$t_shutdown" "$(tb_uptime)"

tb_stage powering-off-line
tb_expect_console xenrpc "xenrpc: powering off"

tb_stage domain-gone
tb_expect_gone xenrpc

tb_pass
