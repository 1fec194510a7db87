//! Domain control through xenstore: `xl shutdown` / `xl reboot` write `control/shutdown`, whose
//! watch powers the VM off (or reboots it) after running the registered shutdown hooks (the
//! RPC service closes its connections there). The request is acknowledged by clearing the node,
//! as Linux does, so the toolstack sees it was taken.

use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;
use xen_abi::xenstore::XsErrno;

use super::hypercall;
use super::xenstore::{self, XsError};
use crate::log;

const SHUTDOWN_NODE: &str = "control/shutdown";
const SHUTDOWN_TOKEN: &str = "xenrpc-control-shutdown";

/// Where the boot self-tests report their verdict for the toolstack (the testbed reads it).
const SELFTEST_NODE: &str = "data/xenrpc-selftest";

/// What `control/shutdown` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// `poweroff` or `halt`.
    PowerOff,
    /// `reboot`.
    Reboot,
}

impl ShutdownRequest {
    /// Interprets the node's value; `None` for "nothing requested" or an unsupported request.
    pub fn parse(value: &str) -> Option<ShutdownRequest> {
        match value {
            "poweroff" | "halt" => Some(ShutdownRequest::PowerOff),
            "reboot" => Some(ShutdownRequest::Reboot),
            _ => None,
        }
    }
}

static SHUTDOWN_HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Adds a function to run (in registration order) before the VM powers off or reboots.
pub fn on_shutdown(hook: fn()) {
    SHUTDOWN_HOOKS.lock().push(hook);
}

/// Watches `control/shutdown`. Needs xenstore (domU).
pub fn init() -> Result<(), XsError> {
    xenstore::watch(
        SHUTDOWN_NODE,
        SHUTDOWN_TOKEN,
        Arc::new(|_| check_shutdown_request()),
    )
}

/// Reads `control/shutdown` and acts on it.
fn check_shutdown_request() {
    let value = match xenstore::read_text(SHUTDOWN_NODE) {
        Ok(value) => value,
        // The node appears only when the toolstack writes it.
        Err(e) if e.is(XsErrno::Enoent) => return,
        Err(e) => {
            log!("control: cannot read {SHUTDOWN_NODE}: {e}");
            return;
        }
    };
    if value.is_empty() {
        return;
    }
    let Some(request) = ShutdownRequest::parse(&value) else {
        log!("control: ignoring unsupported shutdown request '{value}'");
        return;
    };
    // Acknowledge in a transaction so a request written meanwhile is not wiped unseen.
    let ack = xenstore::transaction(|tx| {
        let current = xenstore::read_text_in(tx, SHUTDOWN_NODE)?;
        xenstore::write_in(tx, SHUTDOWN_NODE, b"")?;
        Ok(current)
    });
    match ack {
        Ok(current) if ShutdownRequest::parse(&current) == Some(request) => {}
        Ok(current) => log!("control: request changed to '{current}' while acknowledging"),
        Err(e) => log!("control: acknowledging the shutdown request failed: {e}"),
    }
    log!("control: shutdown request '{value}'");
    let hooks: Vec<fn()> = SHUTDOWN_HOOKS.lock().clone();
    for hook in hooks {
        hook();
    }
    match request {
        ShutdownRequest::PowerOff => crate::power_off(),
        ShutdownRequest::Reboot => {
            log!("rebooting");
            let e = hypercall::shutdown(xen_sys::SHUTDOWN_reboot);
            crate::fatal(format_args!("SCHEDOP_shutdown(reboot) returned {e}"));
        }
    }
}

/// Publishes the boot self-test verdict at `data/xenrpc-selftest` (`pass` or `fail`).
pub fn publish_selftest_verdict(passed: bool) -> Result<(), XsError> {
    xenstore::write(SELFTEST_NODE, if passed { b"pass" } else { b"fail" })
}
