#!/bin/sh
# The testbed's vif hotplug script (dom0 is busybox: Xen's vif-bridge is bash). libxl runs it
# as `vif-testbed online|offline` (add|remove for a tap) with $vif the backend interface
# (vifD.N) and $XENBUS_PATH its backend directory; the bridge is the one the vif spec names.
bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null || echo xenbr0)
case $1 in
online | add)
    brctl addif "$bridge" "$vif" && ip link set "$vif" up ||
        { echo "vif-testbed: cannot put $vif on $bridge" >&2; exit 1; }
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
offline | remove)
    brctl delif "$bridge" "$vif" 2>/dev/null
    xenstore-rm "$XENBUS_PATH/hotplug-status" 2>/dev/null
    ;;
esac
exit 0
