#!/bin/sh
# /init of the testbed's Linux dom0 (busybox initramfs assembled by `cargo xtask testbed`).
# Brings up what `xl` needs, then runs /testbed/scenario.sh and prints exactly one verdict
# line on the console (Xen's serial line): `TESTBED: PASS <name>` or `TESTBED: FAIL <name> <stage>`.
export PATH=/bin:/usr/bin:/usr/lib/xen-4.17/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Without devpts xenconsoled cannot create guest ttys and `xl create` times out.
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Keep kernel messages from interleaving with the testbed's lines (warnings still show).
echo 4 >/proc/sys/kernel/printk

. /testbed/lib.sh
TB_SCENARIO=$(cat /testbed/name)
echo "TESTBED: INIT $(tb_uptime)"

tb_stage load-xen-modules
for m in xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs; do
    insmod "/modules/$m.ko" || tb_fail "insmod $m failed"
done
mount -t xenfs xenfs /proc/xen || tb_fail "mount xenfs failed"

tb_stage start-xen-daemons
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/log/xen/console
ln -s /run /var/run
xenstored --pid-file=/run/xenstored.pid || tb_fail "xenstored failed to start"
xen-init-dom0 || tb_fail "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xenconsoled.pid ||
    tb_fail "xenconsoled failed to start"
tb_time "dom0 init -> daemons up" "$(tb_uptime_at_init)" "$(tb_uptime)"

tb_stage scenario
# A subshell: the scenario's `exit` (via tb_pass/tb_fail) ends it, not /init.
(TB_IN_SCENARIO=1 && cd /testbed && . /testbed/scenario.sh)
status=$?
if [ ! -e /run/testbed-verdict ]; then
    TB_STAGE=$(cat /run/testbed-stage)
    tb_fail "the scenario ended (status $status) without calling tb_pass or tb_fail"
fi
tb_poweroff
