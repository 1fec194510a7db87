#!/bin/sh
# /init of the xenrpc client guest (tests/testbed/client-*.sh): a Linux PV domU carrying the
# `xenrpc` binary. It self-tests the Xen devices, then waits for dom0 to name a plan in
# data/xenrpc-test and runs it, printing each command's exit status for the scenario to check.
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# The kernel's time from entry to its first user process (bench-guest's Linux boot-to-ready).
echo "client-guest: init at uptime $(cut -d' ' -f1 /proc/uptime)s"
# gntdev maps other domains' grants: a libxenvchan client's rings (xenrpc-peer).
for module in /modules/xen-evtchn.ko /modules/xen-gntalloc.ko /modules/xen-gntdev.ko; do
    insmod "$module" || echo "client-guest: insmod $module failed"
done

run() {
    echo "client-guest: \$ xenrpc $*"
    xenrpc "$@"
    echo "client-guest: rc=$? for: xenrpc $*"
}

# The virtual network (a scenario with `testbed-needs: net`): eth0 at the address dom0 wrote
# to data/net-ip.
net_up() {
    address=$(xenstore-read data/net-ip 2>/dev/null) || { echo "client-guest: no data/net-ip"; return 1; }
    insmod /modules/xen-netfront.ko || { echo "client-guest: insmod xen-netfront failed"; return 1; }
    tries=0
    until [ -e /sys/class/net/eth0 ]; do
        sleep 0.2
        tries=$((tries + 1))
        [ $tries -ge 150 ] && { echo "client-guest: no eth0 within 30s"; return 1; }
    done
    ip link set lo up && ip addr add "$address/24" dev eth0 && ip link set eth0 up ||
        { echo "client-guest: cannot bring up eth0 at $address"; return 1; }
    echo "client-guest: eth0 up at $address"
}

# mark TEXT: with dom0 measuring each domain's CPU time (bench-guest: data/cpu-watch), tells
# it where the runs are ("start LABEL", "end LABEL") and waits for it to have sampled, so the
# sample brackets the run and the run does not share the CPU with the sampling.
mark() {
    [ -n "$cpu_watch" ] || return 0
    xenstore-write data/bench-mark "$1"
    tries=0
    until [ "$(xenstore-read data/bench-ack 2>/dev/null)" = "$1" ]; do
        sleep 0.1
        tries=$((tries + 1))
        [ $tries -ge 300 ] && { echo "client-guest: dom0 did not sample for '$1'"; return 0; }
    done
}

# peer_run ROUND LABEL NAME KIND ADDRESS ARGS...: one `xenrpc-peer bench` run of a peer beside
# xenrpc's (plan bench), printed as one `BENCH-JSON` line as for xenrpc, labelled LABEL@NAME.
peer_run() {
    round=$1 label=$2 name=$3 kind=$4 address=$5
    shift 5
    mark "start $round|$label@$name"
    if out=$(xenrpc-peer bench "$kind" "$address" "$@" 2>/tmp/peer.err); then
        mark "end $round|$label@$name"
        echo "BENCH-JSON $round|$label@$name|$out"
    else
        echo "BENCH-FAILED $round $label@$name: $out $(cat /tmp/peer.err)"
    fi
}

run selftest-devices
echo "client-guest: ready"

# A relative xenstore path is under this domain's home; dom0 writes the plan there.
waited=0
until plan=$(xenstore-read data/xenrpc-test 2>/dev/null); do
    sleep 1
    waited=$((waited + 1))
    if [ $waited -ge 600 ]; then
        echo "client-guest: no plan from dom0 within 600s"
        plan=none
        break
    fi
done
echo "client-guest: plan $plan"
# A guest on the virtual network (dom0 gave it an address) brings it up first.
if xenstore-read data/net-ip >/dev/null 2>&1; then
    net_up || echo "client-guest: no network"
fi
case $plan in
no-server)
    run list --no-services
    run call --connect-timeout-ms 3000 echo.ping
    run call arith
    ;;
calls)
    run list
    run call echo.ping
    run call arith.add 40 2
    run call arith.div 1 0
    run call echo.echo_inline hello-xenrpc
    run call echo.echo_ool --data out-of-line-hello
    run --json describe
    run call kv.put greeting --data hello-kv
    run call kv.get greeting
    run call kv.list 0
    run call kv.delete greeting
    run stats --probe 200
    run bench --calls 2000
    run bench --calls 2000 --in-flight 8
    run bench --calls 500 --size 4096
    run bench --calls 200 --size 65536 --data-pages 32
    run bench --calls 1000 --event-ping
    ;;
peer-server)
    # The peers' servers for bench-guest's client guest: SunRPC and gRPC on the virtual
    # network, libxenvchan to the client's domain (data/vchan-client) at data/xenrpc-vchan.
    if [ -e /sys/class/net/eth0 ]; then
        xenrpc-peer serve sunrpc-tcp 0.0.0.0:7001 &
        xenrpc-peer serve grpc 0.0.0.0:7002 &
        sleep 2
        echo "client-guest: peers serving"
    else
        echo "client-guest: peers not serving"
    fi
    if vchan_client=$(xenstore-read data/vchan-client 2>/dev/null); then
        xenrpc-peer serve vchan "$vchan_client" &
        # Offered once libxenvchan's entries are there.
        tries=0
        until xenstore-read data/xenrpc-vchan/event-channel >/dev/null 2>&1; do
            sleep 0.2
            tries=$((tries + 1))
            [ $tries -ge 150 ] && break
        done
        if [ $tries -lt 150 ]; then
            echo "client-guest: vchan serving domain $vchan_client"
        else
            echo "client-guest: vchan not serving"
        fi
    fi
    ;;
bench)
    # `cargo xtask bench-guest` (tools/bench/bench-guest.sh): rounds of the same runs against
    # the service VM (device 0) and its unprotected build (device 1, handlers in kernel mode),
    # alternating, each result one line `BENCH-JSON <round>|<label>@<build>|<json>` for the
    # xtask to tabulate; with a peer server guest (data/peer-address), the same calls to
    # SunRPC and gRPC there, over the virtual network, and with its domain (data/peer-domid)
    # to libxenvchan there.
    peer=$(xenstore-read data/peer-address 2>/dev/null) && { [ -e /sys/class/net/eth0 ] || peer=; }
    peer_domid=$(xenstore-read data/peer-domid 2>/dev/null) || peer_domid=
    cpu_watch=$(xenstore-read data/cpu-watch 2>/dev/null)
    for round in 1 2 3 4 5; do
        # label:xenrpc's arguments:SunRPC's and gRPC's (fewer calls: over the network in TCG
        # each takes about ten times as long):libxenvchan's (xenrpc's calls, its 8 in flight
        # on its one vchan as xenrpc's are on its one ring).
        # "ping" times raw event round trips to the service VM (its calls are not tabulated):
        # a run of its own, so that every other run's CPU figure is its calls' alone.
        for run in "ping:--calls 1000 --event-ping::" "null-1:--calls 1000:--calls 200:--calls 1000" \
            "null-8:--calls 2000 --in-flight 8:--calls 400 --in-flight 8:--calls 2000 --in-flight 8" \
            "echo-4k:--calls 1000 --size 4096:--calls 200 --size 4096:--calls 1000 --size 4096" \
            "echo-4k-8:--calls 1000 --size 4096 --in-flight 8 --data-pages 64:--calls 400 --size 4096 --in-flight 8:--calls 1000 --size 4096 --in-flight 8" \
            "echo-64k:--calls 300 --size 65536 --data-pages 32:--calls 100 --size 65536:--calls 300 --size 65536" \
            "echo-64b:--calls 1000 --size 64:--calls 200 --size 64:--calls 1000 --size 64" \
            "echo-64b-8:--calls 1000 --size 64 --in-flight 8:--calls 400 --size 64 --in-flight 8:--calls 1000 --size 64 --in-flight 8" \
            "echo-64k-8:--calls 300 --size 65536 --in-flight 8 --data-pages 256:--calls 100 --size 65536 --in-flight 8:--calls 300 --size 65536 --in-flight 8"; do
            label=${run%%:*}
            rest=${run#*:}
            run=${rest%%:*}
            rest=${rest#*:}
            peer_args=${rest%%:*}
            vchan_args=${rest#*:}
            for device in 0:protected 1:unprotected; do
                build=${device#*:}
                # Unquoted on purpose: a list of words.
                mark "start $round|$label@$build"
                if out=$(xenrpc --json bench --devid ${device%%:*} $run 2>/tmp/bench.err); then
                    mark "end $round|$label@$build"
                    echo "BENCH-JSON $round|$label@$build|$(printf '%s' "$out" | tr -d '\n')"
                else
                    echo "BENCH-FAILED $round $label@$build: $out $(cat /tmp/bench.err)"
                fi
            done
            # Unquoted on purpose: lists of words.
            if [ -n "$peer" ] && [ -n "$peer_args" ]; then
                peer_run "$round" "$label" sunrpc sunrpc-tcp "$peer:7001" $peer_args
                peer_run "$round" "$label" grpc grpc "$peer:7002" $peer_args
            fi
            if [ -n "$peer_domid" ] && [ -n "$vchan_args" ]; then
                peer_run "$round" "$label" vchan vchan "$peer_domid" $vchan_args
            fi
        done
    done
    ;;
steps)
    # dom0 hands out one command at a time (tests/testbed/support/lib.sh, tb_step_*):
    # data/xenrpc-step/<n> holds the words after `xenrpc` for step n = 1, 2, ..., or a whole
    # `xenrpc-hostile ...` or `xenrpc-peer ...` command line (programs of their own); "end"
    # stops.
    # The answer goes to data/xenrpc-result/<n>/out (output, both streams) and .../rc, so dom0
    # can compare it exactly; rc is written last and marks the step done.
    set -f
    n=1
    while :; do
        until step=$(xenstore-read data/xenrpc-step/$n 2>/dev/null); do
            sleep 0.5
        done
        [ "$step" = end ] && break
        case $step in
        xenrpc-hostile | "xenrpc-hostile "* | xenrpc-peer | "xenrpc-peer "*) program= ;;
        *) program=xenrpc ;;
        esac
        echo "client-guest: step $n: \$ ${program:+$program }$step"
        # Unquoted on purpose: the step is a list of words (globbing is off).
        out=$($program $step 2>&1)
        rc=$?
        printf '%s\n' "$out"
        echo "client-guest: step $n: rc=$rc"
        xenstore-write -R -- data/xenrpc-result/$n/out "$(printf '%s' "$out" | head -c 3000)" ||
            echo "client-guest: step $n: cannot write the output"
        xenstore-write data/xenrpc-result/$n/rc "$rc" || echo "client-guest: step $n: cannot write rc"
        n=$((n + 1))
    done
    set +f
    ;;
esac
echo "client-guest: plan $plan done"
# `xl shutdown` makes the kernel run /sbin/poweroff.
while :; do sleep 3600; done
