# testbed-summary: xenrpc client without a server: gntalloc/evtchn/xenbus self-test in a Linux guest, attach/detach tree and permissions, clear errors
# testbed-needs: client
# testbed-timeout: 420
#
# No service VM here: dom0 (domain 0) stands in as the server domain of the attach, so the
# toolstack side (attach, list, detach) and the client's errors without a server are checked
# on their own. tests/testbed/client-calls.sh adds the service VM.

tb_client_cfg client /run/client.cfg

tb_stage create-client
xl create /run/client.cfg || tb_fail "xl create client failed"
client=$(xl domid client) || tb_fail "xl domid client failed"
echo "TESTBED: domain client is domid $client"
tb_stream_console client

tb_stage selftest-devices
tb_wait_console client "client-guest: ready" 180
tb_expect_console client "selftest-devices: PASS"
tb_expect_console client "client-guest: rc=0 for: xenrpc selftest-devices"

tb_stage attach
fe=/local/domain/$client/device/xenrpc/0
be=/local/domain/0/backend/xenrpc/$client/0
xenrpc attach 0 "$client" 0 || tb_fail "xenrpc attach 0 $client 0 failed"
echo "--- xenstore-ls -p /local/domain/$client/device"
xenstore-ls -p "/local/domain/$client/device"
echo "--- xenstore-ls -p /local/domain/0/backend"
xenstore-ls -p /local/domain/0/backend
# perm_of DIR KEY: the "(...)" permission list xenstore-ls -p prints for DIR/KEY.
perm_of() {
    xenstore-ls -p "$1" | awk -v k="$2" '$1 == k { print $NF }'
}
for key in backend backend-id state; do
    p=$(perm_of "$fe" "$key")
    [ "$p" = "(n$client,r0)" ] || tb_fail "$fe/$key has permissions '$p', expected (n$client,r0)"
done
p=$(perm_of "/local/domain/$client/device/xenrpc" 0)
[ "$p" = "(n$client,r0)" ] || tb_fail "$fe has permissions '$p', expected (n$client,r0)"
for key in frontend frontend-id online state; do
    p=$(perm_of "$be" "$key")
    [ "$p" = "(n0,r$client)" ] || tb_fail "$be/$key has permissions '$p', expected (n0,r$client)"
done
[ "$(xenstore-read "$fe/backend")" = "$be" ] || tb_fail "$fe/backend is not $be"
[ "$(xenstore-read "$fe/backend-id")" = 0 ] || tb_fail "$fe/backend-id is not 0"
[ "$(xenstore-read "$be/frontend")" = "$fe" ] || tb_fail "$be/frontend is not $fe"
[ "$(xenstore-read "$be/frontend-id")" = "$client" ] || tb_fail "$be/frontend-id is not $client"
[ "$(xenstore-read "$be/online")" = 1 ] || tb_fail "$be/online is not 1"
[ "$(xenstore-read "$fe/state")" = 1 ] || tb_fail "$fe/state is not 1"

tb_stage attach-refusals
out=$(xenrpc attach 0 "$client" 0 2>&1) && tb_fail "a second attach succeeded"
echo "$out" | grep -q "already exists" || tb_fail "second attach: unexpected message: $out"
out=$(xenrpc attach 0 4242 0 2>&1) && tb_fail "attach to a missing domain succeeded"
echo "$out" | grep -q "does not exist" || tb_fail "missing domain: unexpected message: $out"

tb_stage list
xenrpc list || tb_fail "xenrpc list failed"
xenrpc --json list | grep -q "\"client\": $client" || tb_fail "xenrpc --json list does not show client $client"

tb_stage guest-without-server
xenstore-write "/local/domain/$client/data/xenrpc-test" no-server || tb_fail "cannot write the guest's plan"
tb_wait_console client "client-guest: plan no-server done" 120
tb_expect_console client "rc=0 for: xenrpc list --no-services"
tb_expect_console client "rc=1 for: xenrpc call --connect-timeout-ms 3000 echo.ping"
tb_expect_console client "did not reach InitWait"
# A malformed call is refused before anything connects (fields need the server's signatures).
tb_expect_console client "rc=2 for: xenrpc call arith"
# The client restarted the handshake (Initialising) and gave up cleanly: no keys of a half
# connection stay behind.
[ "$(xenstore-read "$fe/state")" = 1 ] || tb_fail "$fe/state is '$(xenstore-read "$fe/state")' after the failed connect"

tb_stage detach
out=$(xenrpc detach --timeout-ms 2000 0 "$client" 0 2>&1) && tb_fail "detach succeeded although no server closed"
echo "$out" | grep -q "did not close" || tb_fail "detach without server: unexpected message: $out"
[ "$(xenstore-read "$be/online")" = 0 ] || tb_fail "$be/online is not 0 after detach asked the server to close"
[ "$(xenstore-read "$be/state")" = 5 ] || tb_fail "$be/state is not 5 (Closing) after detach"
xenrpc detach --force --timeout-ms 1000 0 "$client" 0 || tb_fail "detach --force failed"
xenstore-exists "$fe" && tb_fail "$fe still exists after detach"
xenstore-exists "$be" && tb_fail "$be still exists after detach"
out=$(xenrpc detach 0 "$client" 0 2>&1) && tb_fail "detaching twice succeeded"
echo "$out" | grep -q "not attached" || tb_fail "second detach: unexpected message: $out"

tb_stage shutdown
timeout 120 xl shutdown -w client || tb_fail "xl shutdown -w client failed or took over 120s"
# Also gives xl the moment it needs to forget the domain before we look.
tb_expect_console client "linux-guest: powering off"
tb_expect_gone client

tb_pass
