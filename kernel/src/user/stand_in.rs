//! The kernel-side stand-in for one of a domain's services: what the kernel's registry holds.
//! Its `handle` exports the call through the gate, runs the domain's entry in user mode, and
//! imports the checked reply; an exit that is not the entry's return is one failed call.

use xenrpc_proto::service::gate::{self, GateCall, GateReply};
use xenrpc_proto::{AccessCheck, CallContext, PeerId, ServiceHandler, ServiceInfo, Status};

use super::domain::{Domain, WINDOW_BYTES};
use super::UserExit;
use crate::log;

/// One service of a domain, as the kernel's registry sees it.
pub struct StandIn {
    domain: &'static Domain,
    slot: u32,
    info: &'static ServiceInfo,
    access: Option<AccessCheck>,
}

impl StandIn {
    /// The service in `slot` of `domain`'s handler table.
    pub fn new(
        domain: &'static Domain,
        slot: u32,
        info: &'static ServiceInfo,
        access: Option<AccessCheck>,
    ) -> Self {
        StandIn {
            domain,
            slot,
            info,
            access,
        }
    }

    /// The service's access check, as its set registered it.
    pub fn access(&self) -> Option<AccessCheck> {
        self.access
    }

    fn method_name(&self, method: u32) -> &'static str {
        self.info
            .methods
            .iter()
            .find(|m| m.id == method)
            .map_or("?", |m| m.name)
    }

    /// Logs the fault that ended `call`, then counts it (which may reset the domain: the
    /// panic message is read before).
    fn report(&self, call: &CallContext<'_>, exit: &UserExit) {
        let message = match exit {
            UserExit::Panicked { .. } => alloc::format!(": {}", self.domain.panic_message()),
            _ => alloc::string::String::new(),
        };
        let line = alloc::format!(
            "rpc: handler fault in {}.{} (dom{}): {exit}{message}",
            self.info.name,
            self.method_name(call.method()),
            call.peer().0,
        );
        let n = self.domain.fault_count() + 1;
        log!("{line}; {n} in domain {}", self.domain.index);
        self.domain.fault();
    }
}

impl ServiceHandler for StandIn {
    fn info(&self) -> &'static ServiceInfo {
        self.info
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        let gate = self.domain.gate;
        // SAFETY: the gate's memory is the kernel's; user mode does not run while the kernel
        // does (one vCPU), so these are the only references to it.
        let (args, result) = unsafe {
            (
                core::slice::from_raw_parts_mut(gate.windows as *mut u8, WINDOW_BYTES),
                core::slice::from_raw_parts_mut(
                    (gate.windows + WINDOW_BYTES as u64) as *mut u8,
                    WINDOW_BYTES,
                ),
            )
        };
        let mut record = GateCall::zeroed();
        if let Err(status) = gate::export(call, self.slot, &mut record, args, WINDOW_BYTES) {
            return status;
        }
        let exit = self.domain.run(&record);
        let (status, dirty) = match exit {
            UserExit::Returned(_) => {
                // SAFETY: the reply page is ours; user mode is not running.
                let reply = unsafe { core::ptr::read_volatile(gate.reply as *const GateReply) };
                let status = gate::import(call, &record, &reply, result);
                let written = (reply.ool_written as usize).min(record.result_capacity as usize);
                (status, written)
            }
            UserExit::BudgetExceeded { .. } => {
                self.report(call, &exit);
                (Status::BudgetExceeded, record.result_capacity as usize)
            }
            _ => {
                self.report(call, &exit);
                (Status::HandlerFault, record.result_capacity as usize)
            }
        };
        // Nothing of this call stays for the next, whoever's it is.
        args[..record.args_len as usize].fill(0);
        result[..dirty].fill(0);
        status
    }

    fn forget_peer(&mut self, peer: PeerId) {
        let exit = self.domain.run(&gate::export_forget_peer(self.slot, peer));
        if !matches!(exit, UserExit::Returned(_)) {
            log!(
                "rpc: handler fault in {} forgetting dom{}: {exit}; {} in domain {}",
                self.info.name,
                peer.0,
                self.domain.fault_count() + 1,
                self.domain.index
            );
            self.domain.fault();
        }
    }
}
