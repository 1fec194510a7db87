# testbed-summary: guest benchmark: a Linux client guest times raw event round trips to the service VM, null calls and out-of-line echo of 64 B, 4 KiB and 64 KiB (1 and 8 in flight each), five rounds each, against the service VM and its unprotected build (handlers in kernel mode) side by side, and the same calls to the peers in a Linux server guest (SunRPC and gRPC over the virtual network, libxenvchan over grants and an event channel); boot to ready of the service VM beside a Linux guest's; the smallest memory at which the service VM serves 8 clients at once (run by `cargo xtask bench-guest`, which prints the table)
# testbed-needs: kernel unprotected net
# testbed-timeout: 3000
#
# Not a test: it asserts nothing about speed. The guest runs its "bench" plan
# (tests/testbed/support/client-guest-init.sh), printing each result as a `BENCH-JSON` line.

tb_net_up
tb_client_cfg client /run/client.cfg net
tb_client_cfg peer-server /run/peer-server.cfg net

# Boot to ready, for the service VM and a Linux guest alike: what `xl create` takes (the
# toolstack builds the domain), then what the guest takes from its entry to serving (its own
# clock: Xen system time in the service VM, /proc/uptime at init in Linux).
tb_stage create-server
created=$(tb_uptime)
xl create tools/xenrpc.cfg || tb_fail "xl create tools/xenrpc.cfg failed"
tb_time "service VM: xl create" "$created" "$(tb_uptime)"
server=$(xl domid xenrpc) || tb_fail "xl domid xenrpc failed"
tb_stream_console xenrpc
tb_wait_console xenrpc "xenrpc: ready" 120
ready_ms=$(sed -n 's/.*xenrpc: ready (\([0-9]*\) ms after entry).*/\1/p' "$(tb_console_log xenrpc)" | head -n 1)
[ -n "$ready_ms" ] || tb_fail "the service VM's ready line gives no time since entry"
echo "TESTBED: TIME service VM: entry -> ready $(awk -v ms="$ready_ms" 'BEGIN { printf "%.2fs", ms / 1000 }')"
# The baseline: the same services, handlers in kernel mode (a test image only).
xl create tools/xenrpc.cfg 'name="xenrpc-unprotected"' 'kernel="build/xenrpc-unprotected.elf"' ||
    tb_fail "xl create of the unprotected build failed"
unprotected=$(xl domid xenrpc-unprotected) || tb_fail "xl domid xenrpc-unprotected failed"
tb_stream_console xenrpc-unprotected
tb_wait_console xenrpc-unprotected "xenrpc: ready" 120
tb_expect_console xenrpc-unprotected "UNPROTECTED build"

tb_stage create-client
created=$(tb_uptime)
xl create /run/client.cfg || tb_fail "xl create client failed"
tb_time "Linux guest: xl create" "$created" "$(tb_uptime)"
client=$(xl domid client) || tb_fail "xl domid client failed"
tb_stream_console client
tb_wait_console client "client-guest: ready" 240
init_s=$(sed -n 's/.*client-guest: init at uptime \([0-9.]*\)s.*/\1/p' "$(tb_console_log client)" | head -n 1)
[ -n "$init_s" ] || tb_fail "the Linux guest's init line gives no uptime"
echo "TESTBED: TIME Linux guest: entry -> init ${init_s}s"

# The peers' server: a Linux guest on the virtual network serving SunRPC and gRPC, and a
# libxenvchan vchan to the client guest's domain.
tb_stage create-peer-server
xl create /run/peer-server.cfg || tb_fail "xl create peer-server failed"
peer_server=$(xl domid peer-server) || tb_fail "xl domid peer-server failed"
tb_stream_console peer-server
xenstore-write "/local/domain/$peer_server/data/net-ip" 10.99.0.2 \
    "/local/domain/$client/data/net-ip" 10.99.0.3 || tb_fail "cannot write the guests' addresses"
tb_wait_console peer-server "client-guest: ready" 240
xenstore-write "/local/domain/$peer_server/data/vchan-client" "$client" ||
    tb_fail "cannot write the peer server's vchan client"
xenstore-write "/local/domain/$peer_server/data/xenrpc-test" peer-server ||
    tb_fail "cannot write the peer server's plan"
tb_wait_console peer-server "client-guest: peers serving" 60
tb_wait_console peer-server "client-guest: vchan serving domain $client" 60

tb_stage attach
xenstore-write "/local/domain/$client/data/peer-address" 10.99.0.2 \
    "/local/domain/$client/data/peer-domid" "$peer_server" ||
    tb_fail "cannot write the client's peer address and domain"
xenrpc attach "$server" "$client" 0 || tb_fail "xenrpc attach $server $client 0 failed"
xenrpc attach "$unprotected" "$client" 1 || tb_fail "xenrpc attach $unprotected $client 1 failed"
# Each domain's CPU time around every run: the guest marks a run's start and end in
# data/bench-mark and waits for data/bench-ack; dom0 samples `xl vcpu-list` (0.1 s resolution)
# and prints `TESTBED: CPU <mark> <domain>=<seconds> ...` for the xtask to turn into CPU per
# call of each domain.
cpu_sample() {
    xl vcpu-list 2>/dev/null | awk 'NR > 1 { t[$1] += $6 } END { for (d in t) printf " %s=%.1f", d, t[d] }'
}
xenstore-write "/local/domain/$client/data/bench-mark" "" "/local/domain/$client/data/cpu-watch" 1 ||
    tb_fail "cannot set up the CPU watch"
(
    last=
    xenstore-watch "/local/domain/$client/data/bench-mark" | while read -r _; do
        mark=$(xenstore-read "/local/domain/$client/data/bench-mark" 2>/dev/null) || continue
        [ -n "$mark" ] && [ "$mark" != "$last" ] || continue
        echo "TESTBED: CPU $mark |$(cpu_sample)"
        xenstore-write "/local/domain/$client/data/bench-ack" "$mark"
        last=$mark
    done
) &
cpu_watcher=$!
xenstore-write "/local/domain/$client/data/xenrpc-test" bench || tb_fail "cannot write the guest's plan"

tb_stage bench
# Waits without tb_wait_console's five greps (and a `xl list` every other second) a second:
# dom0's CPU time is measured, and that polling would be most of it.
bench_log=$(tb_console_log client)
waited=0
until grep -qF "client-guest: plan bench done" "$bench_log"; do
    sleep 5
    waited=$((waited + 5))
    [ $waited -le 2400 ] || tb_fail "the bench plan did not finish within 2400 s"
    case $(tb_domain_state client) in '' | *c*) tb_fail "the client guest crashed or is gone" ;; esac
done
grep -q "BENCH-FAILED" "$(tb_console_log client)" && tb_fail "a bench run failed (see the client's console)"

kill "$cpu_watcher" 2>/dev/null

tb_stage shutdown
xl destroy client || tb_fail "xl destroy client failed"
xl destroy peer-server || tb_fail "xl destroy peer-server failed"
timeout 60 xl shutdown -w xenrpc || tb_fail "xl shutdown -w xenrpc failed or took over 60s"
timeout 60 xl shutdown -w xenrpc-unprotected ||
    tb_fail "xl shutdown -w xenrpc-unprotected failed or took over 60s"
tb_expect_gone xenrpc
tb_expect_gone xenrpc-unprotected

# The smallest `memory =` at which the service VM serves 8 clients at once: dom0 attached as
# 8 clients (devices 0-7), an out-of-line echo bench on every one of them at the same time,
# each answer checked by `xenrpc bench`. A size that does not boot, or fails a client, is
# reported with why; none of it fails the benchmark (it measures).
tb_stage memory
smallest=
for mib in 4 5 6 8 12 16; do
    name=xenrpc-mem-$mib
    if ! out=$(xl create tools/xenrpc.cfg "name=\"$name\"" "memory=$mib" 2>&1); then
        echo "TESTBED: TIME memory $mib MiB: xl create refused: $(echo "$out" | tail -n 1)"
        continue
    fi
    log=$(tb_console_log "$name")
    booted=
    for _ in $(seq 1 300); do
        grep -q "xenrpc: ready" "$log" 2>/dev/null && { booted=ready; break; }
        if grep -q "^xenrpc: FATAL" "$log" 2>/dev/null; then
            booted=$(grep -m 1 "^xenrpc: FATAL" "$log")
            break
        fi
        case $(tb_domain_state "$name") in '' | *c*) booted="crashed or gone"; break ;; esac
        sleep 0.2
    done
    verdict=${booted:-"no ready line within 60 s"}
    if [ "$booted" = ready ]; then
        vm=$(xl domid "$name")
        verdict="serves 8 clients"
        for dev in 0 1 2 3 4 5 6 7; do
            xenrpc attach "$vm" 0 "$dev" || verdict="attaching client $dev failed"
        done
        pids=
        for dev in 0 1 2 3 4 5 6 7; do
            timeout 300 xenrpc bench --devid "$dev" --calls 200 --size 4096 >"/tmp/mem-$dev.out" 2>&1 &
            pids="$pids $!"
        done
        dev=0
        for pid in $pids; do
            wait "$pid" || verdict="client $dev failed: $(tail -n 1 "/tmp/mem-$dev.out")"
            dev=$((dev + 1))
        done
        for dev in 0 1 2 3 4 5 6 7; do
            xenrpc detach --timeout-ms 5000 "$vm" 0 "$dev" >/dev/null 2>&1 ||
                xenrpc detach --force --timeout-ms 1000 "$vm" 0 "$dev" >/dev/null 2>&1
        done
    fi
    echo "TESTBED: TIME memory $mib MiB: $verdict"
    xl destroy "$name" >/dev/null 2>&1
    if [ "$verdict" = "serves 8 clients" ] && [ -z "$smallest" ]; then
        smallest=$mib
    fi
done
echo "TESTBED: TIME smallest memory serving 8 clients ${smallest:-none of 4-16 }MiB"

tb_pass
