//! Meters and bill lines: opening a meter when billable use starts, billing it up to a
//! time, closing it when use ends, and prepaid charges.

use super::Context;
use crate::state::State;
use corral_model::billing::{BillLine, BillSubject, Meter};
use corral_model::ids::{MeterId, PoolId, TenantId};
use corral_model::limits::MAX_BILL_LINES_RETAINED;
use corral_model::Event;

impl State {
    pub(crate) fn open_meter(
        &mut self,
        tenant: TenantId,
        pool: PoolId,
        subject: BillSubject,
        rate_micros_per_hour: u64,
        at_ms: u64,
    ) -> MeterId {
        self.counters.meter += 1;
        let id = MeterId(self.counters.meter);
        let meter = Meter {
            id,
            tenant,
            pool,
            subject,
            rate_micros_per_hour,
            started_at_ms: at_ms,
            billed_until_ms: at_ms,
            billed_micros: 0,
        };
        self.meters.insert(id, meter);
        id
    }

    /// Bill `meter` from where it was billed last up to `until_ms`. Returns the amount.
    pub(crate) fn bill_meter(&mut self, meter_id: MeterId, until_ms: u64) -> u64 {
        let Some(meter) = self.meters.get_mut(&meter_id) else {
            unreachable!("billing meter {meter_id} that does not exist");
        };
        if until_ms <= meter.billed_until_ms {
            return 0;
        }
        let amount = meter.accrued_micros(until_ms) - meter.accrued_micros(meter.billed_until_ms);
        let line = BillLine {
            tenant: meter.tenant,
            pool: meter.pool,
            subject: meter.subject,
            meter: Some(meter_id),
            from_ms: meter.billed_until_ms,
            to_ms: until_ms,
            amount_micros: amount,
        };
        meter.billed_until_ms = until_ms;
        meter.billed_micros += amount;
        assert_eq!(
            meter.billed_micros,
            meter.accrued_micros(until_ms),
            "meter lines must add up to its accrual"
        );
        if amount > 0 {
            self.add_bill_line(line);
        }
        amount
    }

    /// Bill the meter up to now and remove it.
    pub(crate) fn close_meter(&mut self, context: &mut Context, meter_id: MeterId) {
        let amount = self.bill_meter(meter_id, context.at_ms);
        let Some(meter) = self.meters.remove(&meter_id) else {
            unreachable!("closing meter {meter_id} that does not exist");
        };
        if amount > 0 {
            context.emit(
                Some(meter.tenant),
                Event::Billed {
                    tenant: meter.tenant,
                    pool: meter.pool,
                    amount_micros: amount,
                },
            );
        }
    }

    pub(crate) fn charge_prepaid(
        &mut self,
        context: &mut Context,
        pool: PoolId,
        tenant: TenantId,
        from_ms: u64,
        to_ms: u64,
        amount_micros: u64,
    ) {
        self.add_bill_line(BillLine {
            tenant,
            pool,
            subject: BillSubject::PrepaidPeriod,
            meter: None,
            from_ms,
            to_ms,
            amount_micros,
        });
        context.emit(
            Some(tenant),
            Event::PrepaidCharged {
                pool,
                amount_micros,
                paid_until_ms: to_ms,
            },
        );
    }

    fn add_bill_line(&mut self, line: BillLine) {
        *self.billed_micros_total.entry(line.tenant).or_insert(0) += line.amount_micros;
        self.bill_lines.push_back(line);
        while self.bill_lines.len() > MAX_BILL_LINES_RETAINED {
            if let Some(oldest) = self.bill_lines.pop_front() {
                *self.folded_billed_micros.entry(oldest.tenant).or_insert(0) +=
                    oldest.amount_micros;
            }
        }
    }
}
