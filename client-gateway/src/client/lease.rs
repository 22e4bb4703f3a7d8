//! An upload's lease on the namenode: renewed while the upload runs, and given back at
//! once (`AbandonUpload`) when the upload is dropped or fails, rather than left to
//! expire.

use std::time::Duration;

use kdfs_proto::namenodes::Retry;
use kdfs_proto::pb;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Client;

/// Lease renewals happen this many times per lease TTL.
const RENEWALS_PER_TTL: u32 = 3;

/// Sends `AbandonUpload` when dropped unless disarmed: the one place that makes a
/// dropped or failed upload release its lease at once.
pub(crate) struct AbandonOnDrop {
    pub(crate) client: Client,
    pub(crate) upload_id: String,
    pub(crate) armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let upload_id = std::mem::take(&mut self.upload_id);
        metrics::counter!("kdfs_gateway_uploads_abandoned_total").increment(1);
        rt.spawn(async move {
            let req = pb::AbandonUploadRequest {
                upload_id: upload_id.clone(),
            };
            let abandoned = client
                .namenode_call("AbandonUpload", Retry::Idempotent, req, |mut c, r| async move {
                    c.abandon_upload(r).await
                })
                .await;
            match abandoned {
                Ok(_) => debug!(upload = %upload_id, "upload abandoned"),
                Err(e) => {
                    warn!(upload = %upload_id, error = %e, "abandoning upload failed; its lease will expire")
                }
            }
        });
    }
}

/// Renews a lease every TTL/3 until cancelled.
pub(crate) async fn renew_lease(
    client: Client,
    upload_id: String,
    ttl: Duration,
    stop: CancellationToken,
) {
    let mut every = ttl / RENEWALS_PER_TTL;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let req = pb::RenewLeaseRequest {
            upload_id: upload_id.clone(),
        };
        let renewed = client
            .namenode_call(
                "RenewLease",
                Retry::Idempotent,
                req,
                |mut c, r| async move { c.renew_lease(r).await },
            )
            .await;
        match renewed {
            Ok(r) => {
                let ttl = Duration::from_millis(r.lease_ttl_ms.max(300));
                every = ttl / RENEWALS_PER_TTL;
            }
            Err(e) => warn!(upload = %upload_id, error = %e, "lease renewal failed"),
        }
    }
}
