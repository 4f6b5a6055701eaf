//! Conversions that let the client's typed methods take the obvious argument: a job id for
//! `get_job`, a `JobSpec` for `submit_job`, and so on.

use crate::pb;

/// `From<u64>` for request messages that name one object by id (with default read
/// options where the message has them).
macro_rules! from_id {
    ($($request:ident { $field:ident }),* $(,)?) => {
        $(
            impl From<u64> for pb::$request {
                #[allow(clippy::needless_update)]
                fn from(id: u64) -> pb::$request {
                    pb::$request { $field: id, ..Default::default() }
                }
            }
        )*
    };
}

from_id! {
    DeleteTenantRequest { tenant },
    DeleteNetworkRequest { network },
    GetPoolRequest { pool },
    DeletePoolRequest { pool },
    RenewPoolRequest { pool },
    NodeRef { node },
    GetNodeRequest { node },
    DrainNodeRequest { node },
    JobRef { job },
    GetJobRequest { job },
    RemoveReplicaRequest { id },
    WatchRequest { from_index },
}

impl From<pb::JobSpec> for pb::SubmitJobRequest {
    fn from(spec: pb::JobSpec) -> pb::SubmitJobRequest {
        pb::SubmitJobRequest { spec: Some(spec) }
    }
}

impl From<Vec<pb::JobSpec>> for pb::SubmitJobsRequest {
    fn from(specs: Vec<pb::JobSpec>) -> pb::SubmitJobsRequest {
        pb::SubmitJobsRequest { specs }
    }
}

impl pb::ReadOptions {
    /// Read options asking for a local (possibly stale) read when `stale` is true, or
    /// none (a linearizable read) otherwise.
    pub fn stale(stale: bool) -> Option<pb::ReadOptions> {
        stale.then_some(pb::ReadOptions { stale: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_specs_convert_to_requests() {
        assert_eq!(
            pb::GetJobRequest::from(42),
            pb::GetJobRequest {
                job: 42,
                read: None,
                reveal_secrets: false,
            }
        );
        assert_eq!(
            pb::DeletePoolRequest::from(3),
            pb::DeletePoolRequest {
                pool: 3,
                force: false
            }
        );
        let spec = pb::JobSpec {
            name: "a".into(),
            ..Default::default()
        };
        assert_eq!(pb::SubmitJobRequest::from(spec.clone()).spec, Some(spec));
        assert_eq!(pb::ReadOptions::stale(false), None);
    }

    #[test]
    fn messages_read_json_with_defaults_and_reject_unknown_fields() {
        let spec: pb::JobSpec = serde_json::from_str(
            r#"{"name":"x","per_replica":{"cpu_millicores":500},"environment":{"A":"1"}}"#,
        )
        .unwrap();
        assert_eq!(spec.name, "x");
        assert_eq!(spec.per_replica.unwrap().cpu_millicores, 500);
        assert_eq!(spec.environment["A"], "1");
        let error = serde_json::from_str::<pb::JobSpec>(r#"{"nmae":"x"}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `nmae`"),
            "{error}"
        );
        let json = serde_json::to_value(pb::Ack { index: 7 }).unwrap();
        assert_eq!(json, serde_json::json!({"index": 7}));
    }
}
