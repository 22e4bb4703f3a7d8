//! The bodies of the `Namenode` rpcs datanodes and operators call: registration,
//! heartbeats, block reports, leaving and decommission, and the cluster status, the
//! side of the service that checks a datanode's identity before it speaks.

use futures::StreamExt;
use kdfs_core::DatanodeId;
use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_proto::pb;
use kdfs_proto::tls::{self, PeerInfo};
use kdfs_proto::{transport, wire};
use tonic::{Request, Response, Status, Streaming};
use tracing::Span;

use super::convert::{block_entries, bounded, commands, deletes, failed_copies, wire_state};
use super::{MAX_REPORT_BLOCKS, NamenodeService, REPORT_CHUNK_TIMEOUT};
use crate::cluster::{Load, Registration};
use crate::namesystem::leaving::Verdict;

impl NamenodeService {
    pub(super) async fn serve_register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        let address = wire::address("address", &r.address)?;
        self.check_identity(peer.as_ref(), &id, Some(&address), "register")?;
        let reg = Registration {
            id: Some(id),
            cluster_id: bounded(&r.cluster_id, "cluster_id", 64)?,
            address: address.clone(),
            zone: bounded(&r.zone, "zone", 253)?,
            version: bounded(&r.version, "version", 64)?,
            pod_name: bounded(&r.pod_name, "pod_name", 253)?,
            node_name: bounded(&r.node_name, "node_name", 253)?,
            load: Load {
                capacity: r.capacity,
                used: r.used,
                available: r.available,
                in_flight: 0,
                blocks: 0,
                write_generation: r.write_generation,
            },
        };
        let cluster_id = self.ns.register(id, &reg)?;
        if peer.as_ref().and_then(PeerInfo::leaf).is_some() {
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded like the namenode's node table: forgotten nodes' names go.
            if identities.len() >= crate::cluster::MAX_DATANODES {
                identities.retain(|id, _| self.ns.knows(id));
            }
            identities.insert(id, tls::host_of(&address).to_owned());
        }
        Ok(Response::new(pb::RegisterResponse {
            cluster_id,
            heartbeat_interval_ms: self.ns.settings.heartbeat_interval.as_millis() as u64,
            block_report_interval_ms: self.ns.settings.block_report_interval.as_millis() as u64,
            block_keys: self.keys.all(),
            leader_term: self.term,
        }))
    }

    pub(super) async fn serve_heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "heartbeat")?;
        let failed = failed_copies(&r.failed_copies)?;
        let load = Load {
            capacity: r.capacity,
            used: r.used,
            available: r.available,
            in_flight: r.in_flight,
            blocks: r.blocks,
            write_generation: r.write_generation,
        };
        self.ns.copies_failed(&id, &failed);
        Ok(Response::new(match self.ns.heartbeat(&id, load) {
            Some(out) => pb::HeartbeatResponse {
                commands: commands(out, &self.keys, id),
                reregister: false,
                block_keys: self.keys.unless_current(r.newest_block_key),
                leader_term: self.term,
            },
            None => pb::HeartbeatResponse {
                commands: Vec::new(),
                reregister: true,
                block_keys: Vec::new(),
                leader_term: self.term,
            },
        }))
    }

    pub(super) async fn serve_full_block_report(
        &self,
        request: Request<Streaming<pb::FullBlockReportChunk>>,
    ) -> Result<Response<pb::FullBlockReportResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let mut stream = request.into_inner();
        let mut sender: Option<DatanodeId> = None;
        let mut blocks = Vec::new();
        let mut _permit = None;
        // Nothing is applied until the stream ended cleanly: a broken report changes
        // nothing.
        loop {
            let next = tokio::time::timeout(REPORT_CHUNK_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "no block report chunk for {REPORT_CHUNK_TIMEOUT:?}"
                    ))
                })?;
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk?;
            let id = wire::datanode_id("datanode_id", &chunk.datanode_id)?;
            match sender {
                None => {
                    Span::current().record("datanode", tracing::field::display(&id));
                    self.check_identity(peer.as_ref(), &id, None, "block-report")?;
                    // Refused before a single entry is buffered.
                    self.ns.check_reporter(&id)?;
                    _permit =
                        Some(
                            self.reports.clone().acquire_owned().await.map_err(|_| {
                                Status::unavailable("the namenode is shutting down")
                            })?,
                        );
                    sender = Some(id);
                }
                Some(s) if s != id => {
                    return Err(Status::invalid_argument(
                        "datanode_id differs between chunks of one report",
                    ));
                }
                Some(_) => {}
            }
            if chunk.blocks.len() > transport::MAX_REPORT_CHUNK
                || blocks.len() + chunk.blocks.len() > MAX_REPORT_BLOCKS
            {
                return Err(Status::invalid_argument("block report too large"));
            }
            blocks.reserve(chunk.blocks.len());
            for e in &chunk.blocks {
                blocks.push((wire::block_id("blocks.id", &e.id)?, e.length));
            }
        }
        let Some(id) = sender else {
            return Err(Status::invalid_argument(
                "empty block report stream: send at least one chunk",
            ));
        };
        let ns = self.ns.clone();
        // Applying a million entries takes a fraction of a second of CPU: keep it off
        // the async workers.
        let span = Span::current();
        let (accepted, dels) =
            tokio::task::spawn_blocking(move || span.in_scope(|| ns.full_report(&id, blocks)))
                .await
                .map_err(|e| Status::internal(format!("report task failed: {e}")))??;
        Ok(Response::new(pb::FullBlockReportResponse {
            accepted,
            commands: deletes(dels),
            leader_term: self.term,
        }))
    }

    pub(super) async fn serve_incremental_block_report(
        &self,
        request: Request<pb::IncrementalBlockReportRequest>,
    ) -> Result<Response<pb::IncrementalBlockReportResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "block-report")?;
        let added = block_entries("added.id", &r.added)?;
        let removed = wire::block_ids("removed", &r.removed)?;
        let corrupt = wire::block_ids("corrupt", &r.corrupt)?;
        let dels = self
            .ns
            .incremental_report(&id, &added, &removed, &corrupt)?;
        Ok(Response::new(pb::IncrementalBlockReportResponse {
            commands: deletes(dels),
            leader_term: self.term,
        }))
    }

    pub(super) async fn serve_cluster_info(
        &self,
        request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let ns = self.ns.clone();
        let limit = request.get_ref().node_limit as usize;
        let st = tokio::task::spawn_blocking(move || ns.status_limited(limit))
            .await
            .map_err(|e| Status::internal(format!("status task failed: {e}")))?;
        let s = &self.ns.settings;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ClusterInfoResponse {
            cluster_id: st.cluster_id,
            version: kdfs_core::VERSION.to_owned(),
            safe_mode: st.safe_mode,
            reported_fraction: st.reported_fraction,
            files: st.files,
            blocks: st.stats.blocks,
            bytes: st.bytes,
            under_replicated: st.stats.under_replicated,
            missing: st.stats.missing,
            replication: s.replication,
            min_replicas: s.min_replicas,
            block_size: s.block_size,
            live_datanodes: count(st.counts.live),
            registering_datanodes: count(st.counts.pending),
            stale_datanodes: count(st.counts.stale),
            dead_datanodes: count(st.counts.dead),
            decommissioning_datanodes: count(st.counts.decommissioning),
            maintenance_datanodes: count(st.counts.maintenance),
            unconfirmed_replicas: st.stats.unconfirmed,
            datanodes: st
                .nodes
                .iter()
                .map(|n| pb::DatanodeStatus {
                    id: n.node.id.to_string(),
                    address: n.node.address.clone(),
                    zone: n.node.zone.clone(),
                    state: wire_state(n.node.state) as i32,
                    capacity: n.node.load.capacity,
                    used: n.node.load.used,
                    available: n.node.load.available,
                    blocks: n.blocks,
                    in_flight: n.node.load.in_flight,
                    since_heartbeat_ms: n.since_heartbeat.as_millis() as u64,
                    version: n.node.version.clone(),
                })
                .collect(),
        }))
    }

    pub(super) async fn serve_leaving(
        &self,
        request: Request<pb::LeavingRequest>,
    ) -> Result<Response<pb::LeavingResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let id = wire::datanode_id("datanode_id", &request.get_ref().datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "leaving")?;
        let ns = self.ns.clone();
        let verdict = tokio::task::spawn_blocking(move || ns.leaving(&id))
            .await
            .map_err(|e| Status::internal(format!("leaving task failed: {e}")))??;
        Ok(Response::new(match verdict {
            Verdict::Restart => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Restart as i32,
                ..Default::default()
            },
            Verdict::Drain { blocks_left } => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Drain as i32,
                drained: blocks_left == 0,
                blocks_left,
            },
            Verdict::Wait => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Wait as i32,
                ..Default::default()
            },
        }))
    }

    pub(super) async fn serve_decommission_datanode(
        &self,
        request: Request<pb::DecommissionDatanodeRequest>,
    ) -> Result<Response<pb::DecommissionDatanodeResponse>, Status> {
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        let ns = self.ns.clone();
        let (state, blocks_left) =
            tokio::task::spawn_blocking(move || ns.operator_decommission(&id, r.cancel))
                .await
                .map_err(|e| Status::internal(format!("decommission task failed: {e}")))??;
        tracing::info!(
            target: AUDIT_TARGET,
            node = %id,
            cancel = r.cancel,
            state = state.as_str(),
            blocks_left,
            "datanode decommission requested"
        );
        Ok(Response::new(pb::DecommissionDatanodeResponse {
            state: wire_state(state) as i32,
            blocks_left,
        }))
    }

    /// Without HA this namenode is the only one, and so the leader (term 0); the HA
    /// group's own answer replaces this once `--peers` is given.
    pub(super) async fn serve_namenode_role(
        &self,
        _request: Request<pb::NamenodeRoleRequest>,
    ) -> Result<Response<pb::NamenodeRoleResponse>, Status> {
        Ok(Response::new(pb::NamenodeRoleResponse {
            id: 0,
            role: pb::RaftRole::Leader as i32,
            term: 0,
            leader_id: Some(0),
            leader_address: String::new(),
            commit_index: 0,
            applied_index: 0,
            peers: Vec::new(),
            ready: true,
        }))
    }
}
