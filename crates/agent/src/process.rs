//! Operating-system process primitives: reading `/proc/<pid>/stat`, telling whether a
//! recorded process is still the same one (pid plus start time, against pid reuse), and
//! sending signals to a process or a process group. The only `unsafe` code of the agent
//! outside the shim lives here, each call a plain libc function.

use std::io;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// One letter: R, S, D, Z (zombie), X (dead), T, ...
    pub(crate) state: char,
    pub(crate) parent_pid: i32,
    pub(crate) process_group: i32,
    pub(crate) session: i32,
    /// User plus system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Start time after boot, in clock ticks (field 22).
    pub(crate) start_ticks: u64,
    /// Resident set size, in pages.
    pub(crate) rss_pages: u64,
}

impl ProcStat {
    /// Whether the process has ended (a zombie waiting to be reaped counts as ended).
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted after the last
/// `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let field = |number: usize| fields.get(number - 3).copied();
    let number = |number: usize| field(number)?.parse::<u64>().ok();
    let signed = |number: usize| field(number)?.parse::<i32>().ok();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        parent_pid: signed(4)?,
        process_group: signed(5)?,
        session: signed(6)?,
        cpu_ticks: number(14)?.saturating_add(number(15)?),
        start_ticks: number(22)?,
        rss_pages: field(24)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// `/proc/<pid>/stat` of a process, or None when there is no such process.
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether the process `pid` started at `start_ticks` still runs (not a zombie). A
/// different start time means the pid was reused by another process.
pub(crate) fn is_alive(pid: u32, start_ticks: u64) -> bool {
    read_stat(pid).is_some_and(|stat| stat.start_ticks == start_ticks && !stat.is_dead())
}

/// Sends `signal` to one process.
pub(crate) fn signal_process(pid: u32, signal: i32) -> io::Result<()> {
    let pid = checked_pid(pid)?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to every process of the process group `group`.
pub(crate) fn signal_group(group: u32, signal: i32) -> io::Result<()> {
    let group = checked_pid(group)?;
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    let result = unsafe { libc::kill(-group, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A pid usable with kill(2): 0 and values beyond i32 would name other targets.
fn checked_pid(pid: u32) -> io::Result<i32> {
    match i32::try_from(pid) {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        )),
    }
}

/// Clock ticks per second (the unit of `/proc/<pid>/stat` times).
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// The memory page size in bytes (the unit of `rss_pages`).
pub(crate) fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// The exit code of a wait status: the code itself, or 128 + the signal that ended it.
pub(crate) fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let text = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 \
                    987654 10000000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                parent_pid: 1,
                process_group: 4242,
                session: 4242,
                cpu_ticks: 10,
                start_ticks: 987_654,
                rss_pages: 250,
            }
        );
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1 2").is_none());
    }

    #[test]
    fn the_own_process_is_alive_only_with_its_start_time() {
        let own = std::process::id();
        let stat = read_stat(own).unwrap();
        assert!(is_alive(own, stat.start_ticks));
        assert!(!is_alive(own, stat.start_ticks + 1));
        assert!(read_stat(u32::MAX).is_none());
    }

    #[test]
    fn signals_to_init_or_everyone_are_refused() {
        assert!(signal_process(0, 0).is_err());
        assert!(signal_process(1, 0).is_err());
        assert!(signal_group(u32::MAX, 0).is_err());
        assert!(signal_process(std::process::id(), 0).is_ok());
    }

    #[test]
    fn exit_codes_of_signalled_processes_are_128_plus_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code_of(std::process::ExitStatus::from_raw(9)), 137);
    }
}
