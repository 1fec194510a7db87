# Helpers for testbed scenario scripts (sourced by /init in the testbed's dom0; busybox sh).
# Protocol with `cargo xtask testbed` (lines on the dom0 console = Xen's serial line):
#   TESTBED: INIT <uptime>          dom0 /init started
#   TESTBED: STAGE <name>           a new stage began (a failure is reported against it)
#   TESTBED: TIME <label> <secs>s   a timing to report
#   TESTBED: REASON <text>          why the scenario is about to fail
#   TESTBED: PASS <scenario>        verdict
#   TESTBED: FAIL <scenario> <stage>
#   GUEST <domain>| <text>          a line of a guest's console (xenconsoled's log)

TB_STAGE=init
TB_NL='
'
TB_CONSOLE_DIR=/var/log/xen/console
TB_INIT_UPTIME=$(cut -d' ' -f1 /proc/uptime)

# tb_client_cfg NAME FILE [net]: writes the xl config of a Linux client guest called NAME
# (the image built for the testbed, carrying the `xenrpc` CLI) to FILE; with `net`, a vif on
# the testbed's bridge (a scenario with `testbed-needs: net`, after tb_net_up).
tb_client_cfg() {
    cat >"$2" <<CFG
name = "$1"
type = "pv"
kernel = "/testbed/client-guest/vmlinuz"
ramdisk = "/testbed/client-guest/initrd.cpio"
extra = "console=hvc0 loglevel=4"
memory = 256
vcpus = 1
on_crash = "preserve"
CFG
    if [ "${3:-}" = net ]; then
        echo "vif = ['bridge=xenbr0,script=/testbed/net/vif-testbed']" >>"$2"
    fi
}

# tb_net_up: the virtual network: netback, and a bridge xenbr0 that every guest's vif joins
# (the vif-testbed hotplug script). Guests take their address from data/net-ip (their init
# brings up eth0), dom0 has none: the guests talk among themselves.
tb_net_up() {
    for m in llc stp bridge xen-netback; do
        insmod "/testbed/net/$m.ko" || tb_fail "insmod $m failed"
    done
    brctl addbr xenbr0 || tb_fail "brctl addbr xenbr0 failed"
    # No spanning tree (the default) and no forwarding delay: a port forwards as soon as it
    # joins (busybox's brctl has no setfd: sysfs).
    echo 0 >/sys/class/net/xenbr0/bridge/forward_delay || tb_fail "cannot clear xenbr0's forward delay"
    ip link set xenbr0 up || tb_fail "ip link set xenbr0 up failed"
}

# Client guests driven step by step (support/client-guest-init.sh, plan "steps"): guest X is
# the domain client-X (its config written by tb_client_cfg to /run/client-X.cfg), its domid in
# $id_X and its step count in $n_X; every command gets the scenario's $LIMITS.

# create_client GUEST: starts client-GUEST and streams its console.
# `-e`: no monitoring daemon (this scenario destroys its clients itself). Without it, the
# third `xl create` of a run failed with "domain monitoring daemonizing child ... died due to
# fatal signal Segmentation fault" (xl 4.17 in the testbed's dom0; cause not found).
create_client() {
    xl create -e "/run/client-$1.cfg" || tb_fail "xl create -e client-$1 failed"
    c_id=$(xl domid "client-$1") || tb_fail "xl domid client-$1 failed"
    eval "id_$1=$c_id; n_$1=0"
    echo "TESTBED: domain client-$1 is domid $c_id"
    tb_stream_console "client-$1"
}

# client_ready GUEST: waits for client-GUEST's boot and starts its steps plan.
client_ready() {
    tb_wait_console "client-$1" "client-guest: ready" 300
    tb_expect_console "client-$1" "selftest-devices: PASS"
    eval "r_id=\$id_$1"
    xenstore-write "/local/domain/$r_id/data/xenrpc-test" steps ||
        tb_fail "cannot write the plan of client-$1"
}

# step GUEST COMMAND ARGS...: hands the next step (`xenrpc COMMAND $LIMITS ARGS`) to
# client-GUEST (a, b or c).
step() {
    s_guest=$1
    s_command=$2
    shift 2
    eval "s_id=\$id_$s_guest; s_n=\$((n_$s_guest + 1)); n_$s_guest=\$s_n"
    tb_step_send "client-$s_guest" "$s_id" "$s_n" "$s_command" $LIMITS "$@"
}

# answer GUEST [SECONDS]: waits for client-GUEST's last step (TB_STEP_RC, TB_STEP_OUT).
answer() {
    eval "s_id=\$id_$1; s_n=\$n_$1"
    tb_step_wait "client-$1" "$s_id" "$s_n" "${2:-120}"
}

# expect GUEST RC OUTPUT ARGS...: one step, its exit status and exact output checked.
expect() {
    e_guest=$1
    e_rc=$2
    e_out=$3
    shift 3
    step "$e_guest" "$@"
    answer "$e_guest"
    tb_step_check "client-$e_guest" "$e_rc" "$e_out"
}

# expect_both RC OUT_A OUT_B ARGS...: the same command on client-a and client-b at once.
expect_both() {
    b_rc=$1
    b_out_a=$2
    b_out_b=$3
    shift 3
    step a "$@"
    step b "$@"
    answer a
    tb_step_check client-a "$b_rc" "$b_out_a"
    answer b
    tb_step_check client-b "$b_rc" "$b_out_b"
}

# tb_grants_mapped GRANTER MAPPER: how many entries of GRANTER's grant table MAPPER holds mapped
# right now, from Xen's own grant-table dump (debug key 'g', read back with `xl dmesg`). Active
# entries are printed as "[0xREF]  MAPPER MFN PIN ..." under "grant-table for remote dGRANTER".
tb_grants_mapped() {
    xl dmesg -c >/dev/null
    xl debug-keys g || tb_fail "xl debug-keys g failed"
    _i=0
    until xl dmesg | grep -q "gnttab_usage_print_all \] done"; do
        _i=$((_i + 1))
        [ "$_i" -lt 50 ] || tb_fail "Xen's grant-table dump did not finish"
        sleep 0.1
    done
    xl dmesg | awk -v granter="$1" -v mapper="$2" '
        { sub(/^\(XEN\) /, "") }
        /grant-table for remote d/ { table = $4; sub(/^d/, "", table) }
        /^\[0x[0-9a-f]+\]/ && table == granter && $2 == mapper { n++ }
        END { print n + 0 }'
}

tb_uptime() { cut -d' ' -f1 /proc/uptime; }
tb_uptime_at_init() { echo "$TB_INIT_UPTIME"; }

tb_stage() {
    TB_STAGE=$1
    # /init reads it back if the scenario's subshell ends without a verdict.
    echo "$1" >/run/testbed-stage
    echo "TESTBED: STAGE $1"
}

# tb_time LABEL START END: prints END-START (uptime seconds).
tb_time() {
    echo "TESTBED: TIME $1 $(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2fs", b - a }')"
}

# Let the console streamers (busybox tail -F polls once a second) catch up, so the host's
# guest logs are complete at the verdict.
tb_settle() { sleep 2; }

tb_fail() {
    echo "TESTBED: REASON $*"
    tb_settle
    echo fail >/run/testbed-verdict
    echo "TESTBED: FAIL $TB_SCENARIO $TB_STAGE"
    # In the scenario's subshell `exit` ends the scenario; /init itself powers off instead.
    # (Called inside $(...) or a pipeline, it would only end that inner subshell.)
    [ -n "$TB_IN_SCENARIO" ] || tb_poweroff
    exit 1
}

tb_pass() {
    tb_settle
    echo pass >/run/testbed-verdict
    echo "TESTBED: PASS $TB_SCENARIO"
    exit 0
}

tb_poweroff() {
    sync
    poweroff -f
}

tb_console_log() { echo "$TB_CONSOLE_DIR/guest-$1.log"; }

# tb_stream_console DOMAIN: copies the guest's console log to our console, line by line,
# prefixed so the host can split it into its own log file.
tb_stream_console() {
    (
        tail -n +1 -F "$(tb_console_log "$1")" 2>/dev/null | while IFS= read -r line; do
            echo "GUEST $1| $line"
        done
    ) &
}

# tb_domain_state DOMAIN: prints xl's state column (e.g. "-b----"), nothing if no such domain.
tb_domain_state() {
    xl list "$1" 2>/dev/null | awk 'NR == 2 { print $5 }'
}

# tb_wait_console DOMAIN TEXT SECONDS: waits for a console line containing TEXT. Fails at
# once on a FATAL line, when the domain crashes or disappears, or after SECONDS.
tb_wait_console() {
    _log=$(tb_console_log "$1")
    _start=$(tb_uptime)
    _n=0
    while :; do
        if [ -f "$_log" ]; then
            grep -qF -- "$2" "$_log" && return 0
            grep -q "^xenrpc: FATAL" "$_log" && tb_fail "guest $1 printed a FATAL line"
        fi
        _n=$((_n + 1))
        if [ $((_n % 10)) = 0 ]; then
            _state=$(tb_domain_state "$1")
            [ -n "$_state" ] || tb_fail "domain $1 is gone while waiting for '$2'"
            case $_state in *c*) tb_fail "domain $1 crashed while waiting for '$2'" ;; esac
            if awk -v a="$_start" -v b="$(tb_uptime)" -v l="$3" 'BEGIN { exit !(b - a > l) }'; then
                tb_fail "no '$2' on the console of $1 within $3s"
            fi
        fi
        sleep 0.2
    done
}

# tb_expect_console DOMAIN TEXT: TEXT must be in the guest's console log within 3 seconds
# (xenconsoled may still be writing out what the guest said last; the domain may be gone).
tb_expect_console() {
    _i=0
    while [ $_i -lt 15 ]; do
        grep -qF -- "$2" "$(tb_console_log "$1")" 2>/dev/null && return 0
        _i=$((_i + 1))
        sleep 0.2
    done
    tb_fail "no '$2' on the console of $1"
}

# tb_expect_gone DOMAIN [SECONDS]: the domain must be gone from xl's list within SECONDS
# (default 30). `xl shutdown -w` returns when the domain has shut down, but Xen and xl may list
# it (dying, then being reaped) a little longer: under load that once took long enough for a
# check made at once to fail.
tb_expect_gone() {
    _limit=${2:-30}
    _start=$(tb_uptime)
    while xl list | awk -v d="$1" 'NR > 1 && $1 == d { found = 1 } END { exit !found }'; do
        if awk -v a="$_start" -v b="$(tb_uptime)" -v l="$_limit" 'BEGIN { exit !(b - a > l) }'; then
            tb_fail "domain $1 still exists ${_limit}s after it shut down: $(xl list "$1" 2>&1 | tail -n 1)"
        fi
        sleep 0.2
    done
}

# tb_expect_domid_free DOMID [SECONDS]: no domain may hold DOMID within SECONDS (default 30),
# dying ones included (`xl list` shows them until Xen has released the domain).
tb_expect_domid_free() {
    _limit=${2:-30}
    _start=$(tb_uptime)
    while xl list | awk -v d="$1" 'NR > 1 && $2 == d { found = 1 } END { exit !found }'; do
        if awk -v a="$_start" -v b="$(tb_uptime)" -v l="$_limit" 'BEGIN { exit !(b - a > l) }'; then
            tb_fail "domid $1 is still taken ${_limit}s after its domain went: $(xl list 2>&1 | tail -n +2 | tr '\n' ';')"
        fi
        sleep 0.2
    done
}

# Steps on client guests running the "steps" plan (support/client-guest-init.sh): dom0 writes
# the words after `xenrpc` to data/xenrpc-step/<n>, the guest runs them and answers in
# data/xenrpc-result/<n>/{out,rc}. Steps handed to several guests run at the same time.

# tb_step_send DOMAIN DOMID N ARGS...: hands step N (`xenrpc ARGS`, or ARGS itself when it
# starts with `xenrpc-hostile` or `xenrpc-peer`) to guest DOMAIN.
tb_step_send() {
    _dom=$1
    _id=$2
    _n=$3
    shift 3
    xenstore-write "/local/domain/$_id/data/xenrpc-step/$_n" "$*" ||
        tb_fail "cannot hand step $_n to $_dom"
}

# tb_step_wait DOMAIN DOMID N SECONDS: waits for step N's answer and sets TB_STEP_CMD (the
# command line the guest ran), TB_STEP_RC and TB_STEP_OUT; prints it as a `TESTBED: CALL` line (the demo's summary).
# Fails at once when the domain crashes or disappears, or after SECONDS.
tb_step_wait() {
    _dir="/local/domain/$2/data/xenrpc-result/$3"
    _start=$(tb_uptime)
    _k=0
    until TB_STEP_RC=$(xenstore-read "$_dir/rc" 2>/dev/null); do
        _k=$((_k + 1))
        if [ $((_k % 10)) = 0 ]; then
            _state=$(tb_domain_state "$1")
            [ -n "$_state" ] || tb_fail "domain $1 is gone while waiting for step $3"
            case $_state in *c*) tb_fail "domain $1 crashed while waiting for step $3" ;; esac
            if awk -v a="$_start" -v b="$(tb_uptime)" -v l="$4" 'BEGIN { exit !(b - a > l) }'; then
                tb_fail "no answer to step $3 from $1 within $4s"
            fi
        fi
        sleep 0.2
    done
    TB_STEP_OUT=$(xenstore-read -R "$_dir/out") || tb_fail "step $3 of $1: no output key"
    TB_STEP_CMD=$(xenstore-read "/local/domain/$2/data/xenrpc-step/$3")
    case $TB_STEP_CMD in
    xenrpc-hostile | "xenrpc-hostile "* | xenrpc-peer | "xenrpc-peer "*) ;;
    *) TB_STEP_CMD="xenrpc $TB_STEP_CMD" ;;
    esac
    # One line: output lines joined with " / " (in the shell: fewer processes to go wrong).
    _rest=$TB_STEP_OUT
    _joined=
    while :; do
        case $_rest in
        *"$TB_NL"*)
            _joined="$_joined${_rest%%"$TB_NL"*} / "
            _rest=${_rest#*"$TB_NL"}
            ;;
        *)
            _joined="$_joined$_rest"
            break
            ;;
        esac
    done
    echo "TESTBED: CALL $1 | $TB_STEP_CMD | rc=$TB_STEP_RC | $_joined"
}

# tb_step_check DOMAIN RC EXPECTED: the last waited step must have exited with RC and printed
# exactly EXPECTED.
tb_step_check() {
    [ "$TB_STEP_RC" = "$2" ] && [ "$TB_STEP_OUT" = "$3" ] && return 0
    tb_fail "$1: $TB_STEP_CMD: rc=$TB_STEP_RC, output '$TB_STEP_OUT'; expected rc=$2, output '$3'"
}
