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
for module in /modules/xen-evtchn.ko /modules/xen-gntalloc.ko; do
    insmod "$module" || echo "client-guest: insmod $module failed"
done

run() {
    echo "client-guest: \$ xenrpc $*"
    xenrpc "$@"
    echo "client-guest: rc=$? for: xenrpc $*"
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
bench)
    # `cargo xtask bench-guest` (tools/bench/bench-guest.sh): rounds of the same runs against
    # the service VM (device 0) and its unprotected build (device 1, handlers in kernel mode),
    # alternating, each result one line `BENCH-JSON <round>|<label>@<build>|<json>` for the
    # xtask to tabulate.
    for round in 1 2 3 4 5; do
        for run in "null-1:--calls 1000 --event-ping" "null-8:--calls 2000 --in-flight 8" \
            "echo-4k:--calls 1000 --size 4096" \
            "echo-4k-8:--calls 1000 --size 4096 --in-flight 8 --data-pages 64" \
            "echo-64k:--calls 300 --size 65536 --data-pages 32"; do
            label=${run%%:*}
            for device in 0:protected 1:unprotected; do
                build=${device#*:}
                # Unquoted on purpose: a list of words.
                if out=$(xenrpc --json bench --devid ${device%%:*} ${run#*:} 2>/tmp/bench.err); then
                    echo "BENCH-JSON $round|$label@$build|$(printf '%s' "$out" | tr -d '\n')"
                else
                    echo "BENCH-FAILED $round $label@$build: $out $(cat /tmp/bench.err)"
                fi
            done
        done
    done
    ;;
steps)
    # dom0 hands out one command at a time (tests/testbed/support/lib.sh, tb_step_*):
    # data/xenrpc-step/<n> holds the words after `xenrpc` for step n = 1, 2, ..., or a whole
    # `xenrpc-hostile ...` command line (the attacks are a binary of their own); "end" stops.
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
        xenrpc-hostile | "xenrpc-hostile "*) program= ;;
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
