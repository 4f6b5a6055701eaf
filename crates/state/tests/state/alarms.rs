//! Cluster alarms: raised only by a replica's own loops, once per replica and kind,
//! bounded, disarmed by the platform admin (one replica's or all), kept in snapshots.

use corral_model::alarm::{AlarmKind, MAX_ALARMS, MAX_ALARM_DETAIL_BYTES};
use corral_model::{Command, Event, Principal};
use corral_state::testing::*;
use corral_state::State;

fn raise(replica: u64, detail: &str) -> Command {
    Command::AlarmRaise {
        replica,
        kind: AlarmKind::NoSpace,
        detail: detail.into(),
    }
}

#[test]
fn a_replica_raises_nospace_once_and_the_admin_disarms_it() {
    let mut fx = Fx::new();
    let applied = fx
        .apply(Principal::System, raise(2, "10 MiB free"))
        .unwrap();
    assert!(has_event(
        &applied,
        &Event::AlarmRaised {
            replica: 2,
            kind: AlarmKind::NoSpace
        }
    ));
    let raised_at_ms = fx.state.alarms()[0].raised_at_ms;
    // Raised again while in force: nothing changes, it keeps its first time.
    let again = fx.apply(Principal::System, raise(2, "5 MiB free")).unwrap();
    assert!(events(&again).is_empty());
    assert_eq!(fx.state.alarms().len(), 1);
    assert_eq!(fx.state.alarms()[0].raised_at_ms, raised_at_ms);
    assert_eq!(fx.state.alarms()[0].detail, "10 MiB free");
    fx.apply(Principal::System, raise(1, "1 MiB free")).unwrap();
    assert_eq!(
        fx.state
            .alarms()
            .iter()
            .map(|alarm| alarm.replica)
            .collect::<Vec<_>>(),
        [1, 2],
        "kept in replica order"
    );
    assert_eq!(
        fx.state.alarm_of_kind(AlarmKind::NoSpace).unwrap().replica,
        1
    );

    // Snapshots keep them.
    let restored = State::decode_snapshot(&fx.state.encode_snapshot()).unwrap();
    assert_eq!(restored.alarms(), fx.state.alarms());

    // One replica's, then the rest.
    let disarmed = fx
        .apply(
            Principal::PlatformAdmin,
            Command::AlarmDisarm { replica: Some(2) },
        )
        .unwrap();
    assert_eq!(
        events(&disarmed),
        [Event::AlarmDisarmed {
            replica: 2,
            kind: AlarmKind::NoSpace
        }]
    );
    assert_eq!(fx.state.alarms().len(), 1);
    fx.apply(
        Principal::PlatformAdmin,
        Command::AlarmDisarm { replica: None },
    )
    .unwrap();
    assert!(fx.state.alarms().is_empty());
    assert!(fx.state.alarm_of_kind(AlarmKind::NoSpace).is_none());
    // Nothing to disarm is not an error.
    fx.apply(
        Principal::PlatformAdmin,
        Command::AlarmDisarm { replica: None },
    )
    .unwrap();
}

#[test]
fn only_the_system_raises_and_only_the_admin_disarms() {
    let mut fx = Fx::new();
    let tenant = Principal::TenantAdmin(corral_model::TenantId(1));
    for principal in [Principal::PlatformAdmin, tenant.clone()] {
        expect_denied(&fx.apply(principal, raise(1, "x")).unwrap_err());
    }
    fx.apply(Principal::System, raise(1, "x")).unwrap();
    for principal in [Principal::System, tenant] {
        expect_denied(
            &fx.apply(principal, Command::AlarmDisarm { replica: None })
                .unwrap_err(),
        );
    }
    assert_eq!(fx.state.alarms().len(), 1, "refusals change nothing");
}

#[test]
fn bad_alarms_are_refused_and_the_count_is_bounded() {
    let mut fx = Fx::new();
    expect_invalid(
        &fx.apply(Principal::System, raise(0, "x")).unwrap_err(),
        "replica",
    );
    let long = "x".repeat(MAX_ALARM_DETAIL_BYTES + 1);
    expect_invalid(
        &fx.apply(Principal::System, raise(1, &long)).unwrap_err(),
        "detail",
    );
    for replica in 1..=MAX_ALARMS as u64 {
        fx.apply(Principal::System, raise(replica, "low")).unwrap();
    }
    expect_limit(
        &fx.apply(Principal::System, raise(MAX_ALARMS as u64 + 1, "low"))
            .unwrap_err(),
        "alarms held at once",
        MAX_ALARMS as u64,
    );
    assert_eq!(fx.state.alarms().len(), MAX_ALARMS);
}

#[test]
fn nospace_refuses_only_commands_that_add_work() {
    assert!(Command::TenantCreate {
        name: "t".into(),
        quota: Default::default(),
        may_use_high_priority: false,
        max_active_jobs: None,
    }
    .adds_work());
    assert!(!Command::MeterTick.adds_work());
    assert!(!Command::JobTerminate {
        job: corral_model::JobId(1)
    }
    .adds_work());
    assert!(!Command::AlarmDisarm { replica: None }.adds_work());
}
