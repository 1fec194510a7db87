# testbed-summary: the peers of the benchmarks between two Linux guests: over the virtual network (netback and a bridge in dom0, netfront in the guests) a server guest serves SunRPC (libtirpc) and gRPC (tonic), and over libxenvchan (grants and an event channel, no network) it serves the client guest's domain; the client guest calls each of them (null calls, and echoes of 4 KiB and 64 KiB with every answer checked, one and 4 in flight; each libxenvchan run a new vchan), and a call to a port or a vchan nobody serves fails with a clear error
# testbed-needs: net
# testbed-timeout: 420

tb_net_up
tb_client_cfg peer-server /run/peer-server.cfg net
tb_client_cfg client /run/client.cfg net

tb_stage create-guests
xl create /run/peer-server.cfg || tb_fail "xl create peer-server failed"
server=$(xl domid peer-server) || tb_fail "xl domid peer-server failed"
tb_stream_console peer-server
xl create /run/client.cfg || tb_fail "xl create client failed"
client=$(xl domid client) || tb_fail "xl domid client failed"
tb_stream_console client
xenstore-write "/local/domain/$server/data/net-ip" 10.99.0.2 \
    "/local/domain/$client/data/net-ip" 10.99.0.3 || tb_fail "cannot write the guests' addresses"
tb_wait_console peer-server "client-guest: ready" 300
tb_wait_console client "client-guest: ready" 300

tb_stage serve
xenstore-write "/local/domain/$server/data/vchan-client" "$client" ||
    tb_fail "cannot write the server guest's vchan client"
xenstore-write "/local/domain/$server/data/xenrpc-test" peer-server ||
    tb_fail "cannot write the server guest's plan"
tb_wait_console peer-server "client-guest: peers serving" 60
tb_expect_console peer-server "eth0 up at 10.99.0.2"
tb_wait_console peer-server "client-guest: vchan serving domain $client" 60

tb_stage calls
xenstore-write "/local/domain/$client/data/xenrpc-test" steps || tb_fail "cannot write the client's plan"
n=0
# peer:address (libxenvchan's: the server's domain).
for peer in sunrpc-tcp:10.99.0.2:7001 grpc:10.99.0.2:7002 "vchan:$server"; do
    for args in "--calls 20" "--calls 20 --size 4096" "--calls 10 --size 65536" \
        "--calls 40 --size 4096 --in-flight 4"; do
        n=$((n + 1))
        # Unquoted on purpose: a list of words.
        tb_step_send client "$client" "$n" xenrpc-peer bench "${peer%%:*}" "${peer#*:}" $args
        tb_step_wait client "$client" "$n" 120
        [ "$TB_STEP_RC" = 0 ] || tb_fail "xenrpc-peer bench ${peer%%:*} $args failed: $TB_STEP_OUT"
        case $TB_STEP_OUT in
        *'"ok":true'*) ;;
        *) tb_fail "xenrpc-peer bench ${peer%%:*} $args printed no result: $TB_STEP_OUT" ;;
        esac
    done
done

tb_stage refused
n=$((n + 1))
tb_step_send client "$client" "$n" xenrpc-peer bench sunrpc-tcp 10.99.0.2:7009 --calls 1
tb_step_wait client "$client" "$n" 60
[ "$TB_STEP_RC" = 1 ] || tb_fail "a call to a port nobody serves: rc=$TB_STEP_RC: $TB_STEP_OUT"
case $TB_STEP_OUT in
*"Connection refused"*) echo "TESTBED: refused as expected: $TB_STEP_OUT" ;;
*) tb_fail "a call to a port nobody serves did not say so: $TB_STEP_OUT" ;;
esac
n=$((n + 1))
tb_step_send client "$client" "$n" xenrpc-peer bench vchan "$server:/local/domain/$server/data/nobody" --calls 1
tb_step_wait client "$client" "$n" 60
[ "$TB_STEP_RC" = 1 ] || tb_fail "a call to a vchan nobody serves: rc=$TB_STEP_RC: $TB_STEP_OUT"
case $TB_STEP_OUT in
*"libxenvchan could not connect to domain $server"*) echo "TESTBED: refused as expected: $TB_STEP_OUT" ;;
*) tb_fail "a call to a vchan nobody serves did not say so: $TB_STEP_OUT" ;;
esac
n=$((n + 1))
tb_step_send client "$client" "$n" end

tb_stage shutdown
xl destroy client || tb_fail "xl destroy client failed"
xl destroy peer-server || tb_fail "xl destroy peer-server failed"
tb_expect_gone client
tb_expect_gone peer-server
tb_pass
