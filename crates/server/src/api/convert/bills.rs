//! Bills: the list query from the API, and a `BillSummary` as the API's response with
//! each line's subject as readable text.

use super::ids::optional_id;
use super::status::invalid_argument;
use corral_model::billing::{BillLine, BillSubject};
use corral_model::TenantId;
use corral_state::{BillQuery, BillSummary};
use corral_wire::pb;
use tonic::Status;

/// Tenant 0 is every tenant in scope; `to_ms` 0 is no upper bound, otherwise it must be
/// after `from_ms`.
pub fn bill_query_from_proto(request: &pb::ListBillsRequest) -> Result<BillQuery, Status> {
    let to_ms = (request.to_ms != 0).then_some(request.to_ms);
    if to_ms.is_some_and(|to_ms| to_ms <= request.from_ms) {
        return Err(invalid_argument(
            "to_ms",
            "must be after from_ms (or 0 for no bound)",
        ));
    }
    Ok(BillQuery {
        tenant: optional_id(request.tenant, TenantId),
        from_ms: request.from_ms,
        to_ms,
    })
}

/// e.g. `job-3 rank 0 on node-5`, `node node-5`, `prepaid period`.
pub fn bill_subject_text(subject: &BillSubject) -> String {
    match subject {
        BillSubject::JobReplica { job, rank, node } => format!("{job} rank {rank} on {node}"),
        BillSubject::Node { node } => format!("node {node}"),
        BillSubject::PrepaidPeriod => "prepaid period".to_string(),
    }
}

pub fn bill_line_to_proto(line: &BillLine) -> pb::BillLine {
    pb::BillLine {
        tenant: line.tenant.0,
        pool: line.pool.0,
        subject: bill_subject_text(&line.subject),
        from_ms: line.from_ms,
        to_ms: line.to_ms,
        amount_micros: line.amount_micros,
    }
}

pub fn bill_summary_to_proto(summary: &BillSummary) -> pb::ListBillsResponse {
    pb::ListBillsResponse {
        lines: summary.lines.iter().map(bill_line_to_proto).collect(),
        window_total_micros: summary.window_total_micros,
        lifetime_total_micros: summary.lifetime_total_micros,
        truncated: summary.truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_model::{JobId, NodeId, PoolId};

    #[test]
    fn bill_queries() {
        let request = pb::ListBillsRequest {
            tenant: 2,
            from_ms: 10,
            to_ms: 0,
            ..Default::default()
        };
        assert_eq!(
            bill_query_from_proto(&request).unwrap(),
            BillQuery {
                tenant: Some(TenantId(2)),
                from_ms: 10,
                to_ms: None
            }
        );
        let backwards = pb::ListBillsRequest {
            from_ms: 10,
            to_ms: 5,
            ..Default::default()
        };
        assert!(bill_query_from_proto(&backwards)
            .unwrap_err()
            .message()
            .starts_with("invalid to_ms:"));
    }

    #[test]
    fn summaries_keep_totals_and_render_subjects() {
        let line = BillLine {
            tenant: TenantId(1),
            pool: PoolId(2),
            subject: BillSubject::JobReplica {
                job: JobId(3),
                rank: 0,
                node: NodeId(5),
            },
            meter: None,
            from_ms: 0,
            to_ms: 60_000,
            amount_micros: 1_500,
        };
        let summary = BillSummary {
            lines: vec![line],
            window_total_micros: 1_500,
            lifetime_total_micros: 9_000,
            truncated: true,
        };
        let proto = bill_summary_to_proto(&summary);
        assert_eq!(proto.lines[0].subject, "job-3 rank 0 on node-5");
        assert_eq!(proto.lines[0].amount_micros, 1_500);
        assert_eq!(
            (proto.window_total_micros, proto.lifetime_total_micros),
            (1_500, 9_000)
        );
        assert!(proto.truncated);
        assert_eq!(
            bill_subject_text(&BillSubject::Node { node: NodeId(5) }),
            "node node-5"
        );
        assert_eq!(
            bill_subject_text(&BillSubject::PrepaidPeriod),
            "prepaid period"
        );
    }
}
