# testbed-summary: the example MAC service (examples/mac-service, a crate of its own made an image by `cargo xtask build --services`) boots with a key the toolstack provisions in xenstore, which it takes out; for two client guests a MAC made for one verifies for it and not for the other, the key never comes back, `xenrpc describe` lists the service and generic `xenrpc call` reaches it
# testbed-needs: examples client
# testbed-timeout: 600
#
# The toolstack's side of provisioning: `xl create -p` (paused), the key (hex) written to the
# VM's xenstore node data/xenrpc/secret/mac-key, readable by dom0 and the VM only, then
# `xl unpause`. The VM reads the node once and removes it.

tb_client_cfg client-a /run/client-a.cfg
tb_client_cfg client-b /run/client-b.cfg
LIMITS="--connect-timeout-ms 30000 --timeout-ms 30000"
# "xenrpc mac-service testbed key!!": 32 bytes; neither form may ever show up again.
KEY_TEXT="xenrpc mac-service testbed key!!"
KEY=78656e727063206d61632d736572766963652074657374626564206b65792121
MSG=pay-10-coins-to-carol

tb_stage provision
t_create=$(tb_uptime)
xl create -p build/mac-service.cfg || tb_fail "xl create -p build/mac-service.cfg failed"
server=$(xl domid mac-service) || tb_fail "xl domid mac-service failed"
echo "TESTBED: domain mac-service is domid $server"
secret_dir=/local/domain/$server/data/xenrpc
xenstore-write "$secret_dir/secret/mac-key" "$KEY" || tb_fail "cannot provision the key"
xenstore-chmod -r "$secret_dir" "n$server" || tb_fail "cannot restrict the key to the VM"
tb_stream_console mac-service
xl unpause mac-service || tb_fail "xl unpause mac-service failed"

tb_stage wait-ready
tb_wait_console mac-service "xenrpc: ready" 120
tb_time "xl create -> xenrpc: ready" "$t_create" "$(tb_uptime)"
tb_expect_console mac-service "rpc: secret mac-key taken from xenstore (32 bytes), node removed"
tb_expect_console mac-service "rpc: mac: using the provisioned 32-byte key"
tb_expect_console mac-service "rpc: serving mac, introspection; "
if xenstore-read "$secret_dir/secret/mac-key" >/dev/null 2>&1; then
    tb_fail "the key is still in xenstore after the VM took it"
fi

tb_stage create-clients
t_boot=$(tb_uptime)
create_client a
create_client b
client_ready a
client_ready b
tb_time "two client guests booted" "$t_boot" "$(tb_uptime)"
xenrpc attach "$server" "$id_a" 0 || tb_fail "xenrpc attach $server $id_a 0 failed"
xenrpc attach "$server" "$id_b" 0 || tb_fail "xenrpc attach $server $id_b 0 failed"

tb_stage describe
MAC="1100 mac v1
  1 sign ({}, bytes) -> ({ tag: [u8; 32] })
  2 verify ({ tag: [u8; 32] }, bytes) -> ({ valid: u32 })
  3 key_info ({}) -> ({ fingerprint: [u8; 8], provisioned: u32, reserved: u32 })"
expect_both 0 "$MAC" "$MAC" describe mac

tb_stage per-client-keys
# sign_as GUEST: client-GUEST's MAC of $MSG (a 32-byte tag, printed as hex).
sign_as() {
    step "$1" call mac.sign --data "$MSG"
    answer "$1"
    case $TB_STEP_RC:$TB_STEP_OUT in
    0:hex:????????????????????????????????????????????????????????????????) ;;
    *) tb_fail "client-$1: mac.sign: rc=$TB_STEP_RC, output '$TB_STEP_OUT'" ;;
    esac
}
sign_as a
tag_a=$TB_STEP_OUT
sign_as b
tag_b=$TB_STEP_OUT
[ "$tag_a" != "$tag_b" ] || tb_fail "client-a and client-b got the same MAC: $tag_a"
expect a 0 1 call mac.verify "tag=$tag_a" --data "$MSG"
expect b 0 0 call mac.verify "tag=$tag_a" --data "$MSG"
expect b 0 1 call mac.verify "tag=$tag_b" --data "$MSG"
expect a 0 0 call mac.verify "tag=$tag_b" --data "$MSG"
expect a 0 0 call mac.verify "tag=$tag_a" --data pay-99-coins-to-carol
# The same message signed again: the same MAC (one key per client, kept while it lives).
sign_as a
[ "$TB_STEP_OUT" = "$tag_a" ] || tb_fail "client-a's second MAC differs: $TB_STEP_OUT vs $tag_a"

tb_stage key-never-returned
step a call mac.key_info
step b call mac.key_info
answer a
info_a=$TB_STEP_OUT
answer b
[ "$TB_STEP_OUT" = "$info_a" ] || tb_fail "key_info differs between clients: '$info_a' vs '$TB_STEP_OUT'"
case $info_a in
"fingerprint=hex:"????????????????"${TB_NL}provisioned=1${TB_NL}reserved=0") ;;
*) tb_fail "mac.key_info answered '$info_a'" ;;
esac
for seen in "$info_a" "$tag_a" "$tag_b" "$(cat "$(tb_console_log mac-service)")"; do
    case $seen in
    *"$KEY"* | *"$KEY_TEXT"*) tb_fail "the key came back out of the VM: $seen" ;;
    esac
done

tb_stage shutdown
xl destroy client-a || tb_fail "xl destroy client-a failed"
xl destroy client-b || tb_fail "xl destroy client-b failed"
tb_expect_gone client-a
tb_expect_gone client-b
timeout 60 xl shutdown -w mac-service || tb_fail "xl shutdown -w mac-service failed or took over 60s"
tb_expect_gone mac-service

tb_pass
