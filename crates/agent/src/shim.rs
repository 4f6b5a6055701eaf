//! The replica shim (`corral agent-shim --exit-file F --log-file L -- argv...`): a tiny
//! supervisor between the agent and a workload, so that a replica outlives an agent
//! crash and its exit code is still known afterwards.
//!
//! The agent starts the shim as the leader of a new session (so of a new process group)
//! with SIGTERM, SIGINT and SIGCHLD blocked. The shim
//! - joins the replica's cgroup (`--cgroup-procs`, one file per v1 controller) first
//!   thing, so that nothing of the workload ever runs outside it; a shim that cannot
//!   join does not run the workload;
//! - starts the workload as the replica's user (`--uid`/`--gid`: no supplementary
//!   groups, `no_new_privs`, umask 077) while it stays root itself, so the workload can
//!   neither signal it nor touch the exit file;
//! - appends the workload's stdout and stderr to the log file (opened with `O_APPEND`,
//!   so the agent's copy-and-truncate rotation works while it writes);
//! - runs the workload in its own process group (the workload inherits it), with an
//!   empty signal mask and default signal dispositions;
//! - on SIGTERM or SIGINT from anyone but itself, forwards SIGTERM to the whole process
//!   group — the workload and whatever it started — and keeps waiting instead of dying;
//! - when the workload ends, writes its exit code (128 + signal when a signal ended it)
//!   to the exit file atomically (not durably: see `files::replace_atomic`), then exits
//!   with that code.
//!
//! A workload that cannot be started is reported as 127 (not found) or 126 (any other
//! reason), with the reason in its log, as a shell would.

use crate::files::replace_atomic;
use crate::process::exit_code_of;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the shim was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimOptions {
    /// Where the exit code is written.
    pub exit_file: PathBuf,
    /// Where stdout and stderr are appended.
    pub log_file: PathBuf,
    /// The workload's argv (the first element is the program).
    pub command: Vec<OsString>,
    /// `cgroup.procs` files the shim writes its pid to before starting the workload.
    pub cgroup_procs: Vec<PathBuf>,
    /// The uid and gid the workload runs as; None: the shim's own.
    pub user: Option<(u32, u32)>,
}

/// At most this many `--cgroup-procs` (one per v1 controller).
const MAX_CGROUP_FILES: usize = 16;

/// Parses `--exit-file F --log-file L [--cgroup-procs F]... [--uid N --gid N] --
/// argv...` (the shim's arguments after its subcommand name).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<ShimOptions, String> {
    let mut args = args.into_iter();
    let mut exit_file = None;
    let mut log_file = None;
    let mut cgroup_procs = Vec::new();
    let (mut uid, mut gid) = (None, None);
    let number = |value: Option<OsString>, name: &str| -> Result<u32, String> {
        value
            .as_ref()
            .and_then(|value| value.to_str())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{name} needs a number"))
    };
    loop {
        let Some(arg) = args.next() else {
            return Err("missing `-- <command>...`".to_string());
        };
        match arg.to_str() {
            Some("--") => break,
            Some("--exit-file") => exit_file = args.next().map(PathBuf::from),
            Some("--log-file") => log_file = args.next().map(PathBuf::from),
            Some("--cgroup-procs") if cgroup_procs.len() < MAX_CGROUP_FILES => cgroup_procs.push(
                PathBuf::from(args.next().ok_or("--cgroup-procs needs a file")?),
            ),
            Some("--uid") => uid = Some(number(args.next(), "--uid")?),
            Some("--gid") => gid = Some(number(args.next(), "--gid")?),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let user = match (uid, gid) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".to_string()),
    };
    let command: Vec<OsString> = args.collect();
    Ok(ShimOptions {
        exit_file: exit_file.ok_or("--exit-file is required")?,
        log_file: log_file.ok_or("--log-file is required")?,
        command: if command.is_empty() {
            return Err("the command after `--` is empty".to_string());
        } else {
            command
        },
        cgroup_procs,
        user,
    })
}

/// Runs the workload to its end and records its exit code; returns that code (the
/// shim's own exit code). Must run on the process's only thread (the CLI calls it
/// before starting any runtime), since it waits for signals with `sigtimedwait`.
pub fn run(options: &ShimOptions) -> i32 {
    let signals = blocked_signals();
    let code = supervise(options, &signals);
    // Atomic, not durable: see `replace_atomic` for why an exit code needs no fsync.
    if let Err(error) = replace_atomic(&options.exit_file, format!("{code}\n").as_bytes()) {
        append_note(
            &options.log_file,
            &format!(
                "corral shim: cannot write the exit code to {}: {error}",
                options.exit_file.display()
            ),
        );
    }
    code
}

fn supervise(options: &ShimOptions, signals: &libc::sigset_t) -> i32 {
    // SAFETY: getpid has no preconditions.
    let own_pid = unsafe { libc::getpid() };
    for procs in &options.cgroup_procs {
        if let Err(error) = std::fs::write(procs, own_pid.to_string()) {
            append_note(
                &options.log_file,
                &format!(
                    "corral shim: cannot join the cgroup {}: {error}",
                    procs.display()
                ),
            );
            return 126;
        }
    }
    // No link is followed: the log's directory is the agent's, but refuse anyway.
    let log = match OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&options.log_file)
    {
        Ok(log) => log,
        Err(error) => {
            eprintln!(
                "corral shim: cannot open {}: {error}",
                options.log_file.display()
            );
            return 126;
        }
    };
    let (stdout, stderr) = match (log.try_clone(), log.try_clone()) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(error), _) | (_, Err(error)) => {
            append_note(&options.log_file, &format!("corral shim: {error}"));
            return 126;
        }
    };
    let (program, arguments) = match options.command.split_first() {
        Some(split) => split,
        None => return 126,
    };
    let mut command = Command::new(program);
    command
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if let Some((uid, gid)) = options.user {
        // The standard library drops the supplementary groups (setgroups(0)) before
        // setgid and setuid when no groups are given, as here.
        command.uid(uid).gid(gid);
    }
    let confined = options.user.is_some();
    // The workload starts with default signal handling: nothing blocked (the shim's
    // mask would otherwise be inherited) and nothing ignored that a launcher ignored;
    // a confined one also with `no_new_privs` (no setuid binary gives it root back)
    // and umask 077.
    // SAFETY: runs in the forked child before exec and calls only async-signal-safe
    // functions (sigemptyset, pthread_sigmask, signal, prctl, umask).
    unsafe {
        command.pre_exec(move || {
            if confined {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::umask(0o077);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for signal in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGPIPE,
                libc::SIGCHLD,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = writeln!(
                &log,
                "corral shim: cannot start {}: {error}",
                Path::new(program).display()
            );
            return if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    drop(log);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exit_code_of(status),
            Ok(None) => {}
            Err(error) => {
                append_note(&options.log_file, &format!("corral shim: wait: {error}"));
                return 128;
            }
        }
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set, info and timeout pointers are valid for the call.
        let signal = unsafe { libc::sigtimedwait(signals, &mut info, &timeout) };
        if signal == libc::SIGTERM || signal == libc::SIGINT {
            // SAFETY: si_pid is valid for signals sent by kill(2), which these are.
            let sender = unsafe { info.si_pid() };
            if sender != own_pid {
                // SAFETY: kill(0, ..) signals the shim's own process group.
                unsafe { libc::kill(0, libc::SIGTERM) };
            }
        }
    }
}

/// Blocks the signals the shim waits for, first thing after exec, and returns their set.
/// (A SIGTERM in the microseconds before ends the shim without an exit file; the agent
/// was ending it anyway and records 137.)
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn append_note(log_file: &Path, note: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log_file) {
        let _ = writeln!(file, "{note}");
    } else {
        eprintln!("{note}");
    }
}

/// Reads an exit file written by [`run`]: None when absent or unreadable.
pub(crate) fn read_exit_file(path: &Path) -> Option<i32> {
    let contents = crate::files::read_small(path).ok()?;
    std::str::from_utf8(&contents).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_parse_with_the_command_after_the_separator() {
        let options = parse_args(os(&[
            "--exit-file",
            "/x/exit",
            "--log-file",
            "/x/log",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]))
        .unwrap();
        assert_eq!(options.exit_file, PathBuf::from("/x/exit"));
        assert_eq!(options.log_file, PathBuf::from("/x/log"));
        assert_eq!(options.command, os(&["sh", "-c", "exit 3"]));
        assert_eq!((options.cgroup_procs.len(), options.user), (0, None));
        let confined = parse_args(os(&[
            "--exit-file",
            "e",
            "--log-file",
            "l",
            "--cgroup-procs",
            "/cg/a/cgroup.procs",
            "--cgroup-procs",
            "/cg/b/cgroup.procs",
            "--uid",
            "200001",
            "--gid",
            "200001",
            "--",
            "true",
        ]))
        .unwrap();
        assert_eq!(confined.cgroup_procs.len(), 2);
        assert_eq!(confined.user, Some((200_001, 200_001)));
        assert!(parse_args(os(&[
            "--exit-file",
            "e",
            "--log-file",
            "l",
            "--uid",
            "5",
            "--",
            "true"
        ]))
        .is_err());
        assert!(parse_args(os(&[
            "--exit-file",
            "e",
            "--log-file",
            "l",
            "--uid",
            "x",
            "--gid",
            "1",
            "--",
            "true"
        ]))
        .is_err());
        assert!(parse_args(os(&["--exit-file", "e", "--log-file", "l", "--"])).is_err());
        assert!(parse_args(os(&["--log-file", "l", "--", "true"])).is_err());
        assert!(parse_args(os(&["--bogus"])).is_err());
    }

    #[test]
    fn exit_files_hold_one_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        assert_eq!(read_exit_file(&path), None);
        std::fs::write(&path, "143\n").unwrap();
        assert_eq!(read_exit_file(&path), Some(143));
        std::fs::write(&path, "nonsense").unwrap();
        assert_eq!(read_exit_file(&path), None);
    }
}
