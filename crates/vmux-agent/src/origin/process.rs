//! Who is asking: the requesting process and its parents, from the peer
//! credentials of the client connection (Linux `/proc`; elsewhere the
//! process is unknown).

/// Longest rendered chain, in characters.
const MAX_SHOWN: usize = 160;
/// Most processes shown in the chain.
const MAX_DEPTH: usize = 6;

/// A process as read from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its arguments (argv).
    pub argv: Vec<String>,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its session id.
    pub sid: u32,
    /// When it started, in clock ticks since boot: with the pid, what
    /// identifies one process over its life.
    pub start_time: u64,
}

/// Reads one process.
#[cfg(target_os = "linux")]
pub fn read(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ppid, sid, start_time) = parse_stat(&stat)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let argv = if argv.is_empty() {
        // Kernel threads and zombies: the command name from stat.
        vec![stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned()]
    } else {
        argv
    };
    Some(Proc {
        argv,
        ppid,
        sid,
        start_time,
    })
}

/// When the process `pid` started (clock ticks since boot), from
/// `/proc/PID/stat` alone: what identifies it, with its pid, for its
/// whole life. Unlike the command line, reading it never waits for the
/// process's memory map lock.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, _, t)| t)
}

/// When the process started (not available on this platform).
#[cfg(not(target_os = "linux"))]
pub fn start_time(_pid: u32) -> Option<u64> {
    None
}

/// What program a peer process runs, as far as the agent can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerProgram {
    /// The same executable as this process (the vmux program).
    ThisProgram,
    /// Another executable.
    Another,
    /// Not known: no pid, the process is gone or was replaced, or
    /// `/proc` did not answer.
    Unknown,
}

/// Whether the process `pid`, which started at `start_time`, runs the
/// executable this process runs, as the kernel names both
/// (`/proc/PID/exe`, which a process cannot change, unlike its argv).
/// The start time is checked after the executable is read, so a pid
/// reused in between is not taken for the process that connected.
pub fn program_of(pid: u32, start_time: u64) -> PeerProgram {
    let Some(theirs) = executable(pid) else {
        return PeerProgram::Unknown;
    };
    if self::start_time(pid) != Some(start_time) {
        return PeerProgram::Unknown;
    }
    let Some(ours) = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
    else {
        return PeerProgram::Unknown;
    };
    if same_executable(&theirs, &ours) {
        PeerProgram::ThisProgram
    } else {
        PeerProgram::Another
    }
}

/// Whether two `/proc/PID/exe` names are the same executable: the same
/// path, where either may have been replaced on disk since it started
/// (an upgrade), which the kernel marks with " (deleted)".
fn same_executable(a: &str, b: &str) -> bool {
    let path = |s: &str| s.strip_suffix(" (deleted)").unwrap_or(s).to_owned();
    !a.is_empty() && path(a) == path(b)
}

/// The process's executable as the kernel names it (`/proc/PID/exe`),
/// which the process cannot change (unlike its argv). Not sanitised: the
/// signer keys approval windows on it and sanitises it for display.
#[cfg(target_os = "linux")]
pub fn executable(pid: u32) -> Option<String> {
    let path = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(path.to_string_lossy().into_owned())
}

/// The process's executable (not available on this platform).
#[cfg(not(target_os = "linux"))]
pub fn executable(_pid: u32) -> Option<String> {
    None
}

/// Reads one process (not available on this platform).
#[cfg(not(target_os = "linux"))]
pub fn read(_pid: u32) -> Option<Proc> {
    None
}

/// Parent pid, session id and start time from `/proc/PID/stat`; the
/// command name in parentheses may hold spaces and `)`, so fields are
/// counted from the last `)` (field 3, the state, comes first; the start
/// time is field 22).
fn parse_stat(stat: &str) -> Option<(u32, u32, u64)> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().take(20).collect();
    let ppid = f.get(1)?.parse().ok()?;
    let sid = f.get(3)?.parse().ok()?;
    let start_time = f.get(19)?.parse().ok()?;
    Some((ppid, sid, start_time))
}

fn base(arg: &str) -> &str {
    arg.rsplit('/')
        .next()
        .unwrap_or(arg)
        .trim_start_matches('-')
}

/// The chain from `pid` up to its session leader (or pid 1), rendered like
/// `ssh git@example.org ← bash ← sshd`: the requester with its arguments,
/// its ancestors by name. `None` when not even the requester could be
/// read.
pub fn chain(pid: u32) -> Option<String> {
    chain_with(pid, read)
}

fn chain_with(pid: u32, read: impl Fn(u32) -> Option<Proc>) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = pid;
    for depth in 0..MAX_DEPTH {
        let Some(p) = read(cur) else { break };
        let name = p
            .argv
            .first()
            .map(|a| base(a).to_owned())
            .unwrap_or_default();
        if depth == 0 {
            let mut first = vec![name];
            first.extend(p.argv.iter().skip(1).cloned());
            parts.push(first.join(" "));
        } else {
            parts.push(name);
        }
        if cur == p.sid || p.ppid <= 1 {
            break;
        }
        cur = p.ppid;
    }
    let s = vmux_proto::sanitize(&parts.join(" ← "));
    if s.is_empty() {
        None
    } else if s.chars().count() > MAX_SHOWN {
        let cut: String = s.chars().take(MAX_SHOWN).collect();
        Some(format!("{cut}…"))
    } else {
        Some(s)
    }
}

/// The destination an `ssh` client's arguments name: `(user, host, port)`.
pub fn ssh_destination(argv: &[String]) -> Option<(Option<String>, String, u16)> {
    if argv.first().map(|a| base(a)) != Some("ssh") {
        return None;
    }
    let mut user = None;
    let mut port = 22u16;
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--" {
            i += 1;
            break;
        }
        if let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) {
            // Options that take a value, possibly attached (-p2222).
            let takes = |c: char| "BbcDEeFIiJLlmOoPpQRSWw".contains(c);
            let mut chars = flags.chars();
            while let Some(c) = chars.next() {
                if takes(c) {
                    let attached: String = chars.collect();
                    let value = if attached.is_empty() {
                        i += 1;
                        argv.get(i).cloned().unwrap_or_default()
                    } else {
                        attached
                    };
                    match c {
                        'p' => port = value.parse().unwrap_or(port),
                        'l' => user = Some(value),
                        'o' => {
                            let (k, v) = value.split_once(['=', ' ']).unwrap_or((&value, ""));
                            match k.to_ascii_lowercase().as_str() {
                                "port" => port = v.trim().parse().unwrap_or(port),
                                "user" => user = Some(v.trim().to_owned()),
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                    break;
                }
            }
            i += 1;
            continue;
        }
        break;
    }
    let dest = argv.get(i)?;
    let dest = dest.strip_prefix("ssh://").unwrap_or(dest);
    let (u, hostport) = match dest.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, dest),
    };
    let (host, p) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (hostport, None),
    };
    if host.is_empty() {
        return None;
    }
    Some((u.or(user), host.to_owned(), p.unwrap_or(port)))
}

/// The known_hosts files an `ssh` client's arguments name
/// (`-o UserKnownHostsFile=…` / `GlobalKnownHostsFile=…`), which that
/// client uses instead of the defaults.
pub fn ssh_known_hosts_files(argv: &[String]) -> Vec<String> {
    if argv.first().map(|a| base(a)) != Some("ssh") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let opt = match argv[i].as_str() {
            "-o" => {
                i += 1;
                argv.get(i).map(String::as_str)
            }
            a => a.strip_prefix("-o"),
        };
        if let Some((k, v)) = opt.and_then(|o| o.split_once(['=', ' '])) {
            if k.eq_ignore_ascii_case("UserKnownHostsFile")
                || k.eq_ignore_ascii_case("GlobalKnownHostsFile")
            {
                out.extend(
                    v.split_whitespace()
                        .filter(|f| *f != "none")
                        .map(str::to_owned),
                );
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_executable_is_the_kernels_name_for_it() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(
            executable(std::process::id()).as_deref(),
            me.to_str(),
            "whatever argv says"
        );
        assert_eq!(executable(u32::MAX), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_program_is_recognised_by_its_executable_and_start_time() {
        let me = std::process::id();
        let started = start_time(me).expect("own start time");
        assert_eq!(program_of(me, started), PeerProgram::ThisProgram);
        // Another start time: a reused pid, not the process that connected.
        assert_eq!(program_of(me, started + 1), PeerProgram::Unknown);
        assert_eq!(program_of(u32::MAX, started), PeerProgram::Unknown);
        // Our parent (cargo, or a shell) is another program.
        let parent = std::os::unix::process::parent_id();
        if let Some(t) = start_time(parent) {
            assert_ne!(program_of(parent, t), PeerProgram::ThisProgram);
        }
        assert!(same_executable("/usr/bin/vmux (deleted)", "/usr/bin/vmux"));
        assert!(!same_executable("/usr/bin/ssh", "/usr/bin/vmux"));
        assert!(!same_executable("", ""));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        assert_eq!(
            parse_stat(
                "42 (my (odd) name) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
            ),
            Some((7, 42, 987654))
        );
        // Too short to hold the start time.
        assert_eq!(parse_stat("42 (x) S 7 42 42 0 -1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn renders_the_chain_to_the_session_leader() {
        let table = |pid| match pid {
            100 => Some(Proc {
                argv: argv("/usr/bin/ssh -p 2222 git@example.org"),
                ppid: 50,
                sid: 10,
                start_time: 1,
            }),
            50 => Some(Proc {
                argv: argv("-bash"),
                ppid: 10,
                sid: 10,
                start_time: 1,
            }),
            10 => Some(Proc {
                argv: argv("sshd: alice@pts/0"),
                ppid: 1,
                sid: 10,
                start_time: 1,
            }),
            _ => None,
        };
        assert_eq!(
            chain_with(100, table).as_deref(),
            Some("ssh -p 2222 git@example.org ← bash ← sshd:")
        );
        assert_eq!(chain_with(999, table), None);
    }

    #[test]
    fn finds_known_hosts_files_on_the_command_line() {
        assert_eq!(
            ssh_known_hosts_files(&argv(
                "ssh -o UserKnownHostsFile=/k1 -oGlobalKnownHostsFile=/k2 host"
            )),
            ["/k1", "/k2"]
        );
        assert!(ssh_known_hosts_files(&argv("ssh -o UserKnownHostsFile=none host")).is_empty());
        assert!(ssh_known_hosts_files(&argv("scp -o UserKnownHostsFile=/k a b")).is_empty());
    }

    #[test]
    fn finds_the_ssh_destination() {
        assert_eq!(
            ssh_destination(&argv("ssh example.org")),
            Some((None, "example.org".into(), 22))
        );
        assert_eq!(
            ssh_destination(&argv("ssh -p 2222 -l git example.org ls")),
            Some((Some("git".into()), "example.org".into(), 2222))
        );
        assert_eq!(
            ssh_destination(&argv("/usr/bin/ssh -p2200 root@10.0.0.1")),
            Some((Some("root".into()), "10.0.0.1".into(), 2200))
        );
        assert_eq!(
            ssh_destination(&argv("ssh -o Port=2022 -i key -A ssh://bob@h.example:2023")),
            Some((Some("bob".into()), "h.example".into(), 2023))
        );
        assert_eq!(
            ssh_destination(&argv("ssh -F /dev/null -o BatchMode=yes")),
            None
        );
        assert_eq!(ssh_destination(&argv("git push")), None);
    }
}
