//! What the phone page may read of, and do to, the running signer
//! ([`vmux_phone::SignerInfo`]).

use vmux_phone::{AgentView, Confirmed, RecentView, SignerInfo, Unpair};

use crate::approver::Approver;
use crate::audit::render;
use crate::server::Server;

impl<A: Approver + 'static> SignerInfo for Server<A> {
    fn name(&self) -> String {
        Server::name(self).to_owned()
    }

    fn locked(&self) -> bool {
        self.is_locked()
    }

    fn agents(&self) -> Vec<AgentView> {
        self.parts
            .paired
            .snapshot()
            .agents
            .into_iter()
            .map(|a| AgentView {
                id: a.id,
                name: vmux_proto::sanitize(&a.name),
                paired_at: a.paired_at,
                last_seen: Some(a.last_seen),
            })
            .collect()
    }

    fn recent(&self, n: usize) -> Vec<RecentView> {
        let Some(log) = &self.parts.audit else {
            return Vec::new();
        };
        log.recent(n)
            .into_iter()
            .map(|e| RecentView {
                time: e.time,
                summary: render(&e),
                phone: (!e.decided_by.is_empty()).then(|| vmux_proto::sanitize(&e.decided_by)),
                kind: vmux_proto::sanitize(&e.kind.to_string()),
                outcome: vmux_proto::sanitize(&e.outcome.to_string()),
            })
            .collect()
    }

    fn unpair(&self, agent: &Confirmed<Unpair>) -> Result<bool, String> {
        let id = agent.target();
        // The page names agents by their full id: no prefixes here.
        if !self
            .parts
            .paired
            .snapshot()
            .agents
            .iter()
            .any(|a| a.id == id)
        {
            return Ok(false);
        }
        Server::unpair(self, id)
            .map(|a| a.is_some())
            .map_err(|e| e.to_string())
    }
}
