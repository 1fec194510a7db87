//! The kernel-side stand-in for one of a domain's services: what the kernel's registry holds.
//! It takes the calls of a connection in batches: exports them through the gate, runs the
//! domain's entry in user mode once per batch, and imports the checked replies; an exit that
//! is not the entry's return is one failed call, the one running then, and the calls after it
//! run in a fresh entry (`gate::run_batch`).

use xenrpc_proto::service::gate::{self, GateBatch, GateBatchReply};
use xenrpc_proto::{
    AccessCheck, BatchedCall, CallContext, PeerId, ServiceHandler, ServiceInfo, Status, MAX_BATCH,
};

use super::domain::Domain;
use super::UserExit;

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

    /// Answers the call a failed entry was running: logged, counted (which may reset the
    /// domain), `BudgetExceeded` or `HandlerFault`.
    fn failed(&self, call: &CallContext<'_>, exit: UserExit) -> Status {
        self.report(call, &exit);
        match exit {
            UserExit::BudgetExceeded { .. } => Status::BudgetExceeded,
            _ => Status::HandlerFault,
        }
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
        self.domain.fault(format_args!(
            "rpc: handler fault in {}.{} (dom{}): {exit}{message}",
            self.info.name,
            self.method_name(call.method()),
            call.peer().0,
        ));
    }
}

impl ServiceHandler for StandIn {
    fn info(&self) -> &'static ServiceInfo {
        self.info
    }

    fn handle(&mut self, call: &mut CallContext<'_>) -> Status {
        let (args, result) = self.domain.gate.windows();
        gate::run_one(
            call,
            self.slot,
            args,
            result,
            |batch, args, result| self.domain.run(batch, args, result),
            |call, exit| self.failed(call, exit),
        )
    }

    fn batch_limit(&self) -> usize {
        MAX_BATCH
    }

    fn handle_batch(&mut self, batch: &mut [BatchedCall<'_>]) {
        let (args, result) = self.domain.gate.windows();
        gate::run_batch(
            batch,
            self.slot,
            args,
            result,
            |batch, args, result| self.domain.run(batch, args, result),
            |call, exit| self.failed(call, exit),
        );
    }

    fn forget_peer(&mut self, peer: PeerId) {
        let mut batch = GateBatch::zeroed();
        batch.count = 1;
        batch.handler = self.slot;
        batch.calls[0] = gate::export_forget_peer(self.slot, peer);
        let (args, result) = self.domain.gate.windows();
        let (_, ran): (GateBatchReply, _) = self.domain.run(&batch, args, result);
        if let Err(exit) = ran {
            self.domain.fault(format_args!(
                "rpc: handler fault in {} forgetting dom{}: {exit}",
                self.info.name, peer.0,
            ));
        }
    }
}
