#!/bin/sh
# /init of the Linux domU that tests/testbed/linux-guest.sh uses to check the testbed.
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "linux-guest: init"
# A relative xenstore path is under this domain's home, /local/domain/<domid>.
if xenstore-write data/testbed-probe written-by-domu; then
    echo "linux-guest: ready"
else
    echo "linux-guest: xenstore-write failed"
fi
# `xl shutdown` makes the kernel run /sbin/poweroff (see linux-guest-poweroff.sh).
while :; do sleep 3600; done
