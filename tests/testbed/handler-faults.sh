# testbed-summary: the fault-injection service (tests/faults-service, a test image only) runs its handlers in guest user mode, in a protection domain apart from a neighbour service; a client guest calls each fault (a smashed return address, stack overflow, writes to the argument window and to its own code, reads of kernel memory and of the neighbour's heap, a jump into its heap, a privileged instruction, a divide by zero, a panic, an endless loop, unbounded allocation): each is that one call's HandlerFault (the loop BudgetExceeded) with a log line naming the method, the fault, rip and cr2, the domain is reset to its clean copy (what the service kept is gone), introspection counts the faults, and after each an ordinary call from the same client and from a second one is answered
# testbed-needs: examples client
# testbed-timeout: 900

tb_client_cfg client-a /run/client-a.cfg
tb_client_cfg client-b /run/client-b.cfg
LIMITS="--connect-timeout-ms 30000 --timeout-ms 60000"
# Addresses the faults name: the gate's argument window (read-only to handlers,
# kernel/src/user/domain.rs), the image's first code page (read-only, the image is linked at
# 1 MiB) and the kernel heap at 15 MiB (not mapped for handlers at all).
ARGS_WINDOW=$((0x48000100000))
TEXT_START=$((0x100000))
KERNEL_HEAP=$((0xf00000))

tb_stage boot
t_create=$(tb_uptime)
xl create build/faults-service.cfg || tb_fail "xl create build/faults-service.cfg failed"
server=$(xl domid faults-service) || tb_fail "xl domid faults-service failed"
echo "TESTBED: domain faults-service is domid $server"
tb_stream_console faults-service
tb_wait_console faults-service "xenrpc: ready" 120
tb_time "xl create -> xenrpc: ready" "$t_create" "$(tb_uptime)"
tb_expect_console faults-service "rpc: serving faults, neighbour, introspection; "
tb_expect_console faults-service "user: domain 0 serves faults: heap "
tb_expect_console faults-service "user: domain 1 serves neighbour: heap "

tb_stage create-clients
create_client a
create_client b
client_ready a
client_ready b
xenrpc attach "$server" "$id_a" 0 || tb_fail "xenrpc attach $server $id_a 0 failed"
xenrpc attach "$server" "$id_b" 0 || tb_fail "xenrpc attach $server $id_b 0 failed"
expect_both 0 43 43 call faults.ok 42

# fault METHOD STATUS LOG [ARG]: client-a has faults keep a number, then its call of
# faults.METHOD is answered STATUS, the VM logs a line with LOG for it and resets the domain
# (the number is gone: the next `remember` finds 0), and both clients' ordinary calls are
# answered.
n_faults=0
fault() {
    f_method=$1
    f_status=$2
    f_log=$3
    shift 3
    expect a 0 0 call faults.remember 7
    expect a 1 "xenrpc: error: server answered $f_status" call "faults.$f_method" "$@"
    n_faults=$((n_faults + 1))
    f_line=
    f_i=0
    while [ -z "$f_line" ] && [ $f_i -lt 15 ]; do
        f_line=$(grep -F "rpc: handler fault in faults.$f_method (dom$id_a): " \
            "$(tb_console_log faults-service)" | grep -F -- "$f_log" |
            grep -F "; $n_faults in domain 0")
        f_i=$((f_i + 1))
        [ -n "$f_line" ] || sleep 0.2
    done
    [ -n "$f_line" ] || tb_fail "faults.$f_method: no log line with '$f_log' (fault $n_faults)"
    echo "TESTBED: faults.$f_method: $f_status; $(echo "$f_line" | sed 's/.*: handler fault in //')"
    f_resets=$(grep -cF "rpc: domain 0 (faults) reset to its clean copy after 1 fault" \
        "$(tb_console_log faults-service)")
    [ "$f_resets" = "$n_faults" ] ||
        tb_fail "faults.$f_method: $f_resets resets of domain 0 logged after $n_faults faults"
    expect_both 0 "$n_faults" "$n_faults" call faults.ok "$((n_faults - 1))"
}

tb_stage clean-copy
# What the service keeps stays between calls until a fault resets its domain.
expect a 0 0 call faults.remember 5
expect a 0 5 call faults.recall
expect b 0 5 call faults.remember 0

tb_stage neighbour
# The neighbour's secret is on its own heap, at an address the kernel maps and its domain
# maps, but not the faults domain.
step a call neighbour.secret_at
answer a
SECRET_AT=$TB_STEP_OUT
[ "$TB_STEP_RC" = 0 ] && [ -n "$SECRET_AT" ] || tb_fail "neighbour.secret_at: rc=$TB_STEP_RC '$SECRET_AT'"
SECRET=$((0x5ec2e7ed0b1ec7ed))
expect a 0 "$SECRET" call neighbour.secret
echo "TESTBED: the neighbour's secret is at $(printf %#x "$SECRET_AT")"

tb_stage faults
fault smash_return HandlerFault "page fault (vector 14) at rip=0x414141414141 cr2=0x414141414141"
fault overflow_stack HandlerFault "page fault (vector 14)"
fault write_at HandlerFault "cr2=0x48000100000" "$ARGS_WINDOW"
fault read_at HandlerFault "cr2=0xf00000" "$KERNEL_HEAP"
fault read_at HandlerFault "cr2=$(printf %#x "$SECRET_AT")" "$SECRET_AT"
expect_both 0 "$SECRET" "$SECRET" call neighbour.secret
fault write_at HandlerFault "cr2=0x100000" "$TEXT_START"
fault jump_into_data HandlerFault "page fault (vector 14)"
fault privileged HandlerFault "general protection fault (vector 13)"
fault divide_by_zero HandlerFault "divide error (vector 0)"
fault panic HandlerFault "panicked (rip=0x"
tb_expect_console faults-service ": faults.panic was called; $n_faults in domain 0"
fault spin BudgetExceeded "ran past its CPU budget"
fault allocate_without_bound HandlerFault "bytes failed; $((n_faults + 1)) in domain 0"
# The heap the last fault used up is whole again, and nothing kept survived.
expect a 0 0 call faults.recall
expect a 0 0 call faults.remember 9
expect a 0 9 call faults.recall
# The neighbour's domain never faulted.
if grep -qF "in domain 1" "$(tb_console_log faults-service)"; then
    tb_fail "a fault was counted in the neighbour's domain"
fi

tb_stage introspection
# Introspection counts the faults of the service, for the client that made them.
step a stats --probe 0
answer a
echo "$TB_STEP_OUT" | grep -F "server counters" | sed 's/^/TESTBED: client-a: /'
echo "$TB_STEP_OUT" | grep -qE "service 1200: [0-9]+ calls, $n_faults errors, $n_faults faults;" ||
    tb_fail "client-a's stats do not count $n_faults faults of service 1200: $TB_STEP_OUT"
echo "$TB_STEP_OUT" | grep -qE "service 1201: [0-9]+ calls, 0 errors, 0 faults;" ||
    tb_fail "client-a's stats count errors of the neighbour: $TB_STEP_OUT"
step b stats --probe 0
answer b
echo "$TB_STEP_OUT" | grep -qE "service 1200: [0-9]+ calls, 0 errors, 0 faults;" ||
    tb_fail "client-b's stats count faults it did not cause: $TB_STEP_OUT"

tb_stage shutdown
xl destroy client-a || tb_fail "xl destroy client-a failed"
xl destroy client-b || tb_fail "xl destroy client-b failed"
tb_expect_gone client-a
tb_expect_gone client-b
timeout 60 xl shutdown -w faults-service || tb_fail "xl shutdown -w faults-service failed or took over 60s"
tb_expect_gone faults-service

tb_pass
