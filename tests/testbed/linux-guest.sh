# testbed-summary: checks the testbed itself with a Linux PV domU: xl create, console capture, xenstore, shutdown
# testbed-needs: linux-guest
# testbed-timeout: 480
#
# The same steps as domu.sh with a guest whose behaviour is known (the dom0's own Linux kernel
# and a busybox initramfs, tests/testbed/support/linux-guest-*.sh). When domu fails and this
# passes, the fault is in the service VM, not in the testbed.

cat >/run/linux-guest.cfg <<CFG
name = "linux-guest"
type = "pv"
kernel = "/testbed/linux-guest/vmlinuz"
ramdisk = "/testbed/linux-guest/initrd.cpio"
extra = "console=hvc0 loglevel=4"
memory = 256
vcpus = 1
on_crash = "preserve"
CFG

tb_stage create
t_create=$(tb_uptime)
xl create /run/linux-guest.cfg || tb_fail "xl create failed"
domid=$(xl domid linux-guest) || tb_fail "xl domid linux-guest failed"
tb_stream_console linux-guest

tb_stage wait-ready
tb_wait_console linux-guest "linux-guest: ready" 300
tb_time "xl create -> linux-guest: ready" "$t_create" "$(tb_uptime)"

tb_stage xenstore-probe-key
key=/local/domain/$domid/data/testbed-probe
value=$(xenstore-read "$key") || tb_fail "xenstore-read $key failed (key missing?)"
[ "$value" = "written-by-domu" ] || tb_fail "$key is '$value', expected 'written-by-domu'"

tb_stage shutdown
t_shutdown=$(tb_uptime)
timeout 120 xl shutdown -w linux-guest || tb_fail "xl shutdown -w linux-guest failed or took over 120s"
tb_time "xl shutdown -> domain gone" "$t_shutdown" "$(tb_uptime)"

tb_stage powering-off-line
tb_expect_console linux-guest "linux-guest: powering off"

tb_stage domain-gone
tb_expect_gone linux-guest

tb_pass
