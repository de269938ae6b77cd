//! Which clients can use a passkey key: OpenSSH's `ssh` before 10.3
//! refuses a `webauthn-sk-ecdsa-sha2-nistp256@openssh.com` signature from
//! an agent ("incorrect signature type") and retries once, which would
//! cost two phone prompts that cannot succeed. So the agent opens the
//! requesting executable (`/proc/PID/exe`: the file the process runs,
//! whatever its path names by now) and, when it is named `ssh`, reads
//! OpenSSH's version string out of it (`OpenSSH_9.2p1`, as `ssh -V`
//! prints it from the binary's read-only data), bounded in size and
//! time, off the runtime, once per file: an OpenSSH `ssh` older than 10.3,
//! or an `ssh` whose version cannot be read, is not offered passkey keys
//! and is refused a signature with one at once. `ssh-keygen` (any
//! version), `ssh` 10.3 and later and every other client (asyncssh, …)
//! get them.
//!
//! The client's file is never executed: a program in a sandbox that still
//! reaches the agent's socket could otherwise write its own `ssh` and
//! have the agent run it, unconfined. What the file says is only as true
//! as its author (any program can carry the string); it decides no more
//! than whether a passkey key is offered, never whether a signature is
//! approved (that is the phone's person's, on a card).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first OpenSSH release whose `ssh` accepts WebAuthn signatures from
/// an agent.
pub const FIRST_WEBAUTHN_SSH: (u32, u32) = (10, 3);
/// Longest the reading of one executable may take (waiting for a turn
/// included); past that the client is taken for an old `ssh`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest executable read (OpenSSH's `ssh` is about 1 MiB); a larger
/// one is taken for an old `ssh`, unread.
pub const MAX_EXECUTABLE: u64 = 16 << 20;
/// Executables read at once: a file that never answers (a stalled
/// network or FUSE file system) holds one of these, not a thread per
/// connection.
const CONCURRENT_READS: usize = 4;
/// Executables remembered (bounded; cleared when full).
const MAX_REMEMBERED: usize = 256;

pub use vmux_control::agent::{ClientKind, SeenClient};

/// Which file an opened executable is, and which contents: a file
/// rewritten in place gets another modification and change time (the
/// change time no program can set back).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// A client's executable, opened: the very file the process runs, never
/// a path that could be swapped for another file meanwhile.
pub struct Executable {
    /// Its path, as the kernel names the opened file (with ` (deleted)`
    /// once it was replaced or removed).
    path: String,
    /// The open file, or why it could not be opened.
    opened: Result<Opened, String>,
}

struct Opened {
    file: File,
    id: FileId,
}

impl Executable {
    /// The executable the process `pid` runs (`/proc/PID/exe`), opened
    /// for reading; `None` when the process is gone. Blocking: call it
    /// off the async runtime.
    #[cfg(target_os = "linux")]
    pub fn of_process(pid: u32) -> Option<Executable> {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/{pid}/exe");
        match File::open(&link) {
            Ok(file) => {
                // The name of the file opened, not a second look at the
                // link (the process may have run another program since).
                let path =
                    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
                Some(Executable::of_file(
                    path.to_string_lossy().into_owned(),
                    file,
                ))
            }
            Err(e) => {
                let path = std::fs::read_link(&link).ok()?;
                Some(Executable {
                    path: path.to_string_lossy().into_owned(),
                    opened: Err(e.to_string()),
                })
            }
        }
    }

    /// The executable of a process (not available on this platform).
    #[cfg(not(target_os = "linux"))]
    pub fn of_process(_pid: u32) -> Option<Executable> {
        None
    }

    /// The file at `path`, opened as a client's executable would be.
    /// Blocking.
    pub fn open(path: &std::path::Path) -> Executable {
        let shown = path.to_string_lossy().into_owned();
        match File::open(path) {
            Ok(file) => Executable::of_file(shown, file),
            Err(e) => Executable {
                path: shown,
                opened: Err(e.to_string()),
            },
        }
    }

    fn of_file(path: String, file: File) -> Executable {
        use std::os::unix::fs::MetadataExt;
        let opened = match file.metadata() {
            Ok(m) if m.is_file() => Ok(Opened {
                id: FileId {
                    dev: m.dev(),
                    ino: m.ino(),
                    len: m.len(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                },
                file,
            }),
            Ok(_) => Err("not a regular file".into()),
            Err(e) => Err(e.to_string()),
        };
        Executable { path, opened }
    }

    /// Its path, without the kernel's ` (deleted)`.
    fn path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }

    /// Whether its file is named `ssh`.
    fn named_ssh(&self) -> bool {
        std::path::Path::new(self.path())
            .file_name()
            .is_some_and(|n| n == "ssh")
    }
}

/// The classifications, by file, and the turns for reading one.
pub struct ClientKinds {
    seen: Mutex<HashMap<FileId, (String, ClientKind)>>,
    reads: Arc<tokio::sync::Semaphore>,
}

impl Default for ClientKinds {
    fn default() -> Self {
        ClientKinds {
            seen: Mutex::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
        }
    }
}

impl ClientKinds {
    /// What the executable `exe` (`None` when unknown) can take. Reads
    /// the file at most once per file and contents (bounded in size and
    /// time, off the runtime), and only for an executable named `ssh`;
    /// never runs it.
    pub async fn classify(&self, exe: Option<Executable>) -> ClientKind {
        let Some(exe) = exe else {
            return ClientKind::Capable;
        };
        if !exe.named_ssh() {
            return ClientKind::Capable;
        }
        let path = exe.path().to_owned();
        let kind = match exe.opened {
            Err(why) => unknown(&format!("cannot open it: {why}")),
            Ok(opened) => match self.read(opened, &path).await {
                Some(kind) => return kind,
                None => unknown("it could not be read within 2 s"),
            },
        };
        tracing::info!(executable = %vmux_proto::sanitize(&path), ?kind, "client classified for passkey keys");
        kind
    }

    /// The kind of the opened file: remembered, or read now (and
    /// remembered when the whole file was read). `None` when it could not
    /// be read in time (not remembered: the next connection tries again).
    async fn read(&self, opened: Opened, path: &str) -> Option<ClientKind> {
        let id = opened.id.clone();
        if let Some(k) = self.remembered(&id) {
            return Some(k);
        }
        let deadline = Instant::now() + VERSION_TIMEOUT;
        let turn = tokio::time::timeout_at(deadline.into(), self.reads.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        // Another connection may have read it while this one waited.
        if let Some(k) = self.remembered(&id) {
            return Some(k);
        }
        let work = tokio::task::spawn_blocking(move || {
            // The turn ends when the read does, even one given up on.
            let _turn = turn;
            read_version(&opened.file, opened.id.len, deadline)
        });
        let found = tokio::time::timeout_at(deadline.into(), work)
            .await
            .ok()?
            .ok()?;
        if found == Found::TimedOut {
            return None;
        }
        let kind = found.kind();
        tracing::info!(executable = %vmux_proto::sanitize(path), ?kind, "client classified for passkey keys");
        if found.is_final() {
            let mut seen = vmux_home::sync::lock(&self.seen);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
            seen.insert(id, (path.to_owned(), kind.clone()));
        }
        Some(kind)
    }

    fn remembered(&self, id: &FileId) -> Option<ClientKind> {
        vmux_home::sync::lock(&self.seen)
            .get(id)
            .map(|(_, k)| k.clone())
    }

    /// The executables classified so far.
    pub fn seen(&self) -> Vec<SeenClient> {
        let mut v: Vec<SeenClient> = vmux_home::sync::lock(&self.seen)
            .values()
            .map(|(path, kind)| SeenClient {
                executable: path.clone(),
                kind: kind.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.executable.cmp(&b.executable));
        v.dedup_by(|a, b| a.executable == b.executable);
        v
    }
}

/// An `ssh` whose version is unknown, and why.
fn unknown(why: &str) -> ClientKind {
    ClientKind::OldOpenSsh {
        version: format!("unknown ({why})"),
    }
}

/// What reading an executable found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The lowest OpenSSH release it names (`OpenSSH_9.2p1`): a real
    /// `ssh` names one, its own.
    Version {
        /// `(major, minor)`.
        number: (u32, u32),
        /// As written (`OpenSSH_9.2p1`).
        text: String,
    },
    /// No OpenSSH version string in it.
    Nothing,
    /// Larger than [`MAX_EXECUTABLE`]: not read.
    TooLarge,
    /// A read failed.
    Failed(String),
    /// The time ran out before the end of the file.
    TimedOut,
}

impl Found {
    /// What a client whose executable is named `ssh` and holds this can
    /// take.
    pub fn kind(&self) -> ClientKind {
        match self {
            Found::Version { number, .. } if *number >= FIRST_WEBAUTHN_SSH => ClientKind::Capable,
            Found::Version { text, .. } => ClientKind::OldOpenSsh {
                version: text.clone(),
            },
            Found::Nothing => unknown("no OpenSSH version in the file"),
            Found::TooLarge => unknown("the file is larger than 16 MiB; not read"),
            Found::Failed(why) => unknown(&format!("cannot read it: {why}")),
            Found::TimedOut => unknown("it could not be read within 2 s"),
        }
    }

    /// Whether the answer is the file's for good (the whole file was
    /// read, or its size alone decided), so it may be remembered.
    fn is_final(&self) -> bool {
        matches!(
            self,
            Found::Version { .. } | Found::Nothing | Found::TooLarge
        )
    }
}

/// OpenSSH's version string, as `SSH_RELEASE` in its `version.h` is
/// stored in `ssh`'s read-only data.
const TAG: &[u8] = b"OpenSSH_";
/// The most bytes a version string and the byte after it take:
/// `OpenSSH_` then `X.YpZ`, each number at most 4 digits.
const TOKEN: usize = TAG.len() + 4 + 1 + 4 + 1 + 4 + 1;
/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;

/// Reads `file` (of `len` bytes; at most [`MAX_EXECUTABLE`]) until
/// `deadline`, and finds the lowest OpenSSH version string in it.
/// Positioned reads, so nothing depends on the file's offset.
pub fn read_version(file: &File, len: u64, deadline: Instant) -> Found {
    use std::os::unix::fs::FileExt;
    if len > MAX_EXECUTABLE {
        return Found::TooLarge;
    }
    let mut best: Option<((u32, u32), String)> = None;
    let mut window: Vec<u8> = Vec::with_capacity(TOKEN + 1 + CHUNK);
    let mut chunk = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    let mut first = true;
    loop {
        if Instant::now() >= deadline {
            return Found::TimedOut;
        }
        let want = CHUNK.min((MAX_EXECUTABLE - offset) as usize);
        let n = if want == 0 {
            0
        } else {
            match file.read_at(&mut chunk[..want], offset) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Found::Failed(e.to_string()),
            }
        };
        offset += n as u64;
        window.extend_from_slice(&chunk[..n]);
        let end = n == 0;
        scan(&window, first, end, &mut best);
        if end {
            break;
        }
        // Keep the tail, whose version strings may continue in the next
        // chunk, with the byte before them.
        let gone = window.len().saturating_sub(TOKEN + 1);
        if gone > 0 {
            window.drain(..gone);
            first = false;
        }
    }
    match best {
        Some((number, text)) => Found::Version { number, text },
        None => Found::Nothing,
    }
}

/// The lowest OpenSSH version string in `bytes`, kept in `best`.
/// `start`: `bytes` begins the file (else its first byte is only the one
/// before what follows); `end`: nothing follows it (else a version string
/// starting in its last [`TOKEN`] bytes is left for the next look).
fn scan(bytes: &[u8], start: bool, end: bool, best: &mut Option<((u32, u32), String)>) {
    let mut i = if start { 0 } else { 1 };
    while i + TAG.len() <= bytes.len() {
        if !end && i + TOKEN > bytes.len() {
            return;
        }
        if bytes[i] == TAG[0] && bytes[i..].starts_with(TAG) {
            let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            if let Some((number, len)) = version_at(&bytes[i + TAG.len()..]).filter(|_| before_ok) {
                if best.as_ref().is_none_or(|(b, _)| number < *b) {
                    let text = String::from_utf8_lossy(&bytes[i..i + TAG.len() + len]).into_owned();
                    *best = Some((number, text));
                }
            }
        }
        i += 1;
    }
}

/// `X.Y` or `X.YpZ` (numbers of 1 to 4 digits) at the start of `b`, ended
/// by a NUL, a space or a comma (as `ssh -V` prints it: `OpenSSH_9.2p1
/// Debian-2, OpenSSL …`): `(X, Y)` and its length. OpenSSH's own
/// patterns for peers' versions (`OpenSSH_7.4*`, `OpenSSH_6.6.1*`) are
/// not versions.
fn version_at(b: &[u8]) -> Option<((u32, u32), usize)> {
    fn number(b: &[u8]) -> Option<(u32, usize)> {
        let n = b.iter().take(5).take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 4 {
            return None;
        }
        let text = std::str::from_utf8(&b[..n]).ok()?;
        Some((text.parse().ok()?, n))
    }
    let (major, a) = number(b)?;
    if b.get(a) != Some(&b'.') {
        return None;
    }
    let (minor, m) = number(&b[a + 1..])?;
    let mut len = a + 1 + m;
    if b.get(len) == Some(&b'p') {
        len += 1 + number(&b[len + 1..])?.1;
    }
    match b.get(len) {
        Some(0 | b' ' | b',') => Some(((major, minor), len)),
        _ => None,
    }
}

/// The kind of an `ssh` whose `-V` said `text` (as `vmux agent doctor`
/// reads the `ssh` on its user's PATH).
pub fn kind_of_version(text: &str) -> ClientKind {
    let word = text.split_whitespace().next().unwrap_or_default();
    let word: String = vmux_proto::sanitize(word).chars().take(64).collect();
    match openssh_version(text) {
        Some(v) if v >= FIRST_WEBAUTHN_SSH => ClientKind::Capable,
        Some(_) => ClientKind::OldOpenSsh {
            version: word.trim_end_matches(',').to_owned(),
        },
        None => ClientKind::OldOpenSsh {
            version: format!("unknown ({:?})", word),
        },
    }
}

/// `(major, minor)` from `OpenSSH_9.2p1 …`.
pub fn openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.trim_start().strip_prefix("OpenSSH_")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            openssh_version("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024"),
            Some((9, 2))
        );
        assert_eq!(openssh_version("OpenSSH_10.3p1, LibreSSL"), Some((10, 3)));
        assert_eq!(openssh_version("OpenSSH_10.10"), Some((10, 10)));
        assert_eq!(openssh_version("Dropbear v2022.83"), None);
        assert_eq!(
            kind_of_version("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15"),
            ClientKind::OldOpenSsh {
                version: "OpenSSH_9.2p1".into()
            }
        );
        assert!(!kind_of_version("OpenSSH_10.2p1, OpenSSL").takes_passkeys());
        assert!(kind_of_version("OpenSSH_10.3p1, OpenSSL").takes_passkeys());
        assert!(kind_of_version("OpenSSH_11.0").takes_passkeys());
        assert!(!kind_of_version("something else").takes_passkeys());
    }

    fn found_in(bytes: &[u8]) -> Found {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        read_version(
            &file,
            bytes.len() as u64,
            Instant::now() + Duration::from_secs(5),
        )
    }

    fn version(number: (u32, u32), text: &str) -> Found {
        Found::Version {
            number,
            text: text.into(),
        }
    }

    #[test]
    fn the_version_string_is_found_and_openssh_own_patterns_are_not_versions() {
        // As OpenSSH 9.2's ssh stores them: its compat patterns, then its
        // release (with Debian's suffix) and its release alone.
        let mut file = b"\x7fELF\0\0OpenSSH_2.*,OpenSSH_3.0*,OpenSSH_3.1*\0OpenSSH_6.6.1*\0OpenSSH_7.4*\0OpenSSH*\0".to_vec();
        assert_eq!(found_in(&file), Found::Nothing);
        file.extend_from_slice(b"OpenSSH_9.2p1 Debian-2+deb12u10\0OpenSSH_9.2p1\0%s, %s\0");
        assert_eq!(found_in(&file), version((9, 2), "OpenSSH_9.2p1"));
        assert_eq!(
            found_in(b"\0OpenSSH_10.3p1\0"),
            version((10, 3), "OpenSSH_10.3p1")
        );
        assert_eq!(
            found_in(b"OpenSSH_10.10\0"),
            version((10, 10), "OpenSSH_10.10")
        );
        // Not a version: glued to a word, unterminated, too many digits.
        for no in [
            &b"\0xOpenSSH_10.5p1\0"[..],
            b"\0OpenSSH_10.5p1",
            b"\0OpenSSH_10.5x\0",
            b"\0OpenSSH_10\0",
            b"\0OpenSSH_10.\0",
            b"\0OpenSSH_12345.1\0",
            b"\0OpenSSH_1.2p\0",
        ] {
            assert_eq!(
                found_in(no),
                Found::Nothing,
                "{}",
                String::from_utf8_lossy(no)
            );
        }
        // Two releases: the lower counts.
        assert_eq!(
            found_in(b"\0OpenSSH_10.5p1\0OpenSSH_9.9p2\0"),
            version((9, 9), "OpenSSH_9.9p2")
        );
    }

    #[test]
    fn a_version_string_across_the_reads_is_found_wherever_it_falls() {
        let text = b"OpenSSH_10.5p1";
        for at in CHUNK - TOKEN - 3..CHUNK + 3 {
            let mut file = vec![0u8; CHUNK * 2 + 100];
            file[at..at + text.len()].copy_from_slice(text);
            assert_eq!(
                found_in(&file),
                version((10, 5), "OpenSSH_10.5p1"),
                "at {at}"
            );
            // Glued to a letter at the same places: never a version.
            file[at - 1] = b'x';
            assert_eq!(found_in(&file), Found::Nothing, "at {at}");
        }
    }

    #[test]
    fn the_real_ssh_reads_as_its_ssh_v_says_without_being_run_by_the_agent() {
        let Ok(out) = std::process::Command::new("/usr/bin/ssh")
            .arg("-V")
            .output()
        else {
            panic!("this test reads /usr/bin/ssh (openssh-client)");
        };
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let word = said.split([' ', ',']).next().unwrap_or_default().to_owned();
        let exe = Executable::open(std::path::Path::new("/usr/bin/ssh"));
        let Ok(opened) = &exe.opened else {
            panic!("cannot open /usr/bin/ssh");
        };
        let found = read_version(
            &opened.file,
            opened.id.len,
            Instant::now() + Duration::from_secs(10),
        );
        assert_eq!(
            found,
            version(openssh_version(&said).expect("ssh -V"), &word),
            "{said}"
        );
    }

    #[tokio::test]
    async fn only_an_executable_named_ssh_is_read_each_once_and_never_run() {
        let k = ClientKinds::default();
        assert_eq!(k.classify(None).await, ClientKind::Capable);
        for other in ["/usr/bin/ssh-keygen", "/usr/bin/python3"] {
            let exe = Executable::open(std::path::Path::new(other));
            assert_eq!(k.classify(Some(exe)).await, ClientKind::Capable);
        }
        assert!(k.seen().is_empty());
        // A script named ssh that would say 10.5 and leave a mark if run.
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        let ran = dir.path().join("ran");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\necho x >> {}\necho 'OpenSSH_10.5p1, OpenSSL 3.0' >&2\n",
                ran.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Its text names 10.5 as `ssh -V` prints it (a comma after it):
        // read, taken at its word, and never run.
        for _ in 0..3 {
            assert_eq!(
                k.classify(Some(Executable::open(&ssh))).await,
                ClientKind::Capable
            );
        }
        assert!(!ran.exists(), "the client's file was run");
        assert_eq!(k.seen().len(), 1);
        // Rewritten in place to say 9.2: another file's contents, read
        // again.
        std::fs::write(&ssh, "\0OpenSSH_9.2p1\0").unwrap();
        assert_eq!(
            k.classify(Some(Executable::open(&ssh))).await,
            ClientKind::OldOpenSsh {
                version: "OpenSSH_9.2p1".into()
            }
        );
        // Replaced since it started (the kernel's " (deleted)"), it is
        // still the file opened that is read.
        let deleted = Executable {
            path: format!("{} (deleted)", ssh.display()),
            ..Executable::open(&ssh)
        };
        assert!(deleted.named_ssh());
        assert!(!k.classify(Some(deleted)).await.takes_passkeys());
        assert!(!ran.exists());
    }

    #[tokio::test]
    async fn an_unreadable_or_huge_ssh_is_not_offered_passkeys_and_answers_at_once() {
        let k = ClientKinds::default();
        let unreadable = Executable {
            path: "/somewhere/ssh".into(),
            opened: Err("Permission denied (os error 13)".into()),
        };
        assert_eq!(
            k.classify(Some(unreadable)).await,
            ClientKind::OldOpenSsh {
                version: "unknown (cannot open it: Permission denied (os error 13))".into()
            }
        );
        // 1 GiB (sparse) with a version past 16 MiB: not read at all.
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("ssh");
        let f = File::create(&huge).unwrap();
        f.set_len(1 << 30).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"\0OpenSSH_10.5p1\0", (MAX_EXECUTABLE) + 1)
            .unwrap();
        let started = Instant::now();
        assert_eq!(
            k.classify(Some(Executable::open(&huge))).await,
            ClientKind::OldOpenSsh {
                version: "unknown (the file is larger than 16 MiB; not read)".into()
            }
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        // A directory, say: not a regular file.
        let dir_exe = Executable::open(dir.path());
        assert!(dir_exe.opened.is_err());
    }
}
