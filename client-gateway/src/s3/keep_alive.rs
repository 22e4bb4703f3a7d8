//! CompleteMultipartUpload answered in time, as S3 does: the gateway reads every part
//! back to hash the whole object, which for a large object takes longer than clients
//! wait for a first byte (the AWS SDKs' read timeout is 60 s). If the work is not done
//! within `--s3-complete-keepalive-after` (1 s), the answer starts: status 200 and the XML declaration at
//! once, then a space every 100 ms (s3s's keep-alive body, the output's `future`) until
//! the result follows, or an `<Error>` document inside the 200, which SDKs look for
//! (botocore and the AWS CLI treat it as the error it names).
//!
//! The work runs in a task of its own, so it finishes even if the client goes away
//! meanwhile (a retried Complete then finds the object done). Because the status sent
//! is not the outcome, the response carries a [`Deferred`] for the
//! [`super::observe`] middleware, which counts and audits the request once the
//! outcome is known.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use http::StatusCode;
use s3s::dto::CompleteMultipartUploadOutput;
use s3s::{S3Error, S3Response, S3Result};
use tokio::sync::oneshot;
use tracing::warn;

use crate::gateway::audit::Audited;

/// How a deferred completion ended: its status and what its audit line names.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: StatusCode,
    pub audited: Option<Audited>,
}

/// A response extension: the outcome of a completion whose answer started before it
/// was known (see the [module docs](self)); taken once by the middleware.
#[derive(Clone, Default)]
pub struct Deferred(Arc<Mutex<Option<oneshot::Receiver<Outcome>>>>);

impl Deferred {
    /// The outcome's receiver; `None` if already taken.
    pub fn take(&self) -> Option<oneshot::Receiver<Outcome>> {
        self.0
            .lock()
            .expect("deferred lock is never poisoned")
            .take()
    }
}

type Answer = S3Result<S3Response<CompleteMultipartUploadOutput>>;

fn outcome(answer: &Answer) -> Outcome {
    match answer {
        Ok(resp) => Outcome {
            status: StatusCode::OK,
            audited: resp.extensions.get::<Audited>().copied(),
        },
        Err(e) => Outcome {
            status: e
                .status_code()
                .or_else(|| e.code().status_code())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            audited: None,
        },
    }
}

/// Runs `work` (the slow half of a completion: hashing and committing) and answers with
/// its result if it is done within `within`, else with a 200 whose body keeps
/// the connection alive until the result is ready.
pub async fn answer_in_time<F>(within: Duration, work: F) -> Answer
where
    F: Future<Output = Answer> + Send + 'static,
{
    let (tell, told) = oneshot::channel();
    let mut task = tokio::spawn(async move {
        let answer = work.await;
        let _ = tell.send(outcome(&answer));
        answer
    });
    let joined = match tokio::time::timeout(within, &mut task).await {
        Ok(joined) => return joined.unwrap_or_else(|e| Err(lost(e))),
        Err(_) => task,
    };
    let future = async move {
        joined
            .await
            .unwrap_or_else(|e| Err(lost(e)))
            .map(|resp| resp.output)
    }
    .boxed();
    let mut resp = S3Response::new(CompleteMultipartUploadOutput {
        future: Some(future),
        ..Default::default()
    });
    resp.extensions
        .insert(Deferred(Arc::new(Mutex::new(Some(told)))));
    Ok(resp)
}

/// The body of a deferred answer with one XML declaration: s3s (0.14) serializes an
/// error that follows the keep-alive whitespace with a declaration of its own, after
/// the one the body began with, which XML parsers (botocore's among them) reject.
pub fn one_declaration(body: axum::body::Body) -> axum::body::Body {
    let mut first = true;
    let frames = body.into_data_stream().map(move |frame| {
        let data = frame?;
        if std::mem::take(&mut first) {
            return Ok(data);
        }
        match data
            .strip_prefix(b"<?xml")
            .map(|rest| rest.windows(2).position(|w| w == b"?>"))
        {
            Some(Some(end)) => Ok(data.slice(b"<?xml".len() + end + 2..)),
            _ => Ok::<_, axum::Error>(data),
        }
    });
    axum::body::Body::from_stream(frames)
}

fn lost(e: tokio::task::JoinError) -> S3Error {
    warn!(error = %e, "a multipart completion's task failed");
    S3Error::internal_error(e)
}
