//! Cluster alarms (`corral_model::alarm`): raised by a replica's own loops, disarmed by
//! the platform admin.

use super::{require_admin, require_system, Context, Handled};
use crate::state::State;
use corral_model::alarm::{Alarm, AlarmKind, MAX_ALARMS, MAX_ALARM_DETAIL_BYTES};
use corral_model::{Event, Rejection};

impl State {
    pub(super) fn alarm_raise(
        &mut self,
        context: &mut Context,
        replica: u64,
        kind: AlarmKind,
        detail: &str,
    ) -> Handled {
        require_system(context.principal)?;
        if replica == 0 {
            return Err(Rejection::invalid(
                "replica",
                "an alarm names the replica that raised it",
            ));
        }
        if detail.len() > MAX_ALARM_DETAIL_BYTES {
            return Err(Rejection::invalid(
                "detail",
                format!("at most {MAX_ALARM_DETAIL_BYTES} bytes"),
            ));
        }
        if self
            .alarms
            .iter()
            .any(|alarm| alarm.replica == replica && alarm.kind == kind)
        {
            // Raised already: it stands until disarmed, as first raised.
            return Ok(None);
        }
        if self.alarms.len() >= MAX_ALARMS {
            return Err(Rejection::limit("alarms held at once", MAX_ALARMS));
        }
        self.alarms.push(Alarm {
            replica,
            kind,
            raised_at_ms: context.at_ms,
            detail: detail.to_string(),
        });
        self.alarms.sort_by_key(|alarm| (alarm.replica, alarm.kind));
        context.emit(None, Event::AlarmRaised { replica, kind });
        Ok(None)
    }

    pub(super) fn alarm_disarm(&mut self, context: &mut Context, replica: Option<u64>) -> Handled {
        require_admin(context.principal)?;
        let (disarmed, kept): (Vec<Alarm>, Vec<Alarm>) = std::mem::take(&mut self.alarms)
            .into_iter()
            .partition(|alarm| replica.is_none_or(|replica| alarm.replica == replica));
        self.alarms = kept;
        for alarm in disarmed {
            context.emit(
                None,
                Event::AlarmDisarmed {
                    replica: alarm.replica,
                    kind: alarm.kind,
                },
            );
        }
        Ok(None)
    }

    /// The alarms in force, by replica and kind.
    pub fn alarms(&self) -> &[Alarm] {
        &self.alarms
    }

    /// The first alarm in force of `kind`, if any.
    pub fn alarm_of_kind(&self, kind: AlarmKind) -> Option<&Alarm> {
        self.alarms.iter().find(|alarm| alarm.kind == kind)
    }
}
