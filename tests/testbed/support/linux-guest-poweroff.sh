#!/bin/sh
# /sbin/poweroff of the testbed's Linux domU: the kernel runs it when the toolstack asks the
# domain to shut down. Say so on the console, then power off for real.
echo "linux-guest: powering off" >/dev/console
sync
exec /bin/poweroff -f
