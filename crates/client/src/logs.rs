//! [`CorralClient::job_logs`]: a replica's output, streamed from its node's agent
//! through the managers.

use crate::client::CorralClient;
use crate::error::ClientError;
use crate::pb;
use tonic::codec::Streaming;

impl CorralClient {
    /// Opens the log stream of one replica. With `follow`, it stays open until the
    /// replica's process exits. Chunks are raw bytes as the process wrote them.
    pub async fn job_logs(
        &self,
        request: pb::JobLogsRequest,
    ) -> Result<Streaming<pb::JobLogsChunk>, ClientError> {
        let response = self
            .call_with(request, false, |mut admin, request| async move {
                admin.job_logs(request).await
            })
            .await?;
        Ok(response.into_inner())
    }
}
