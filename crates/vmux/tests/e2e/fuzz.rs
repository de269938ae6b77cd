//! In-tree fuzzing, run with the suite for a bounded time (see
//! `fuzz/README.md`): every decoder that takes bytes from a peer or from
//! disk gets mutated seed inputs; none may panic. A crashing input is
//! saved under `fuzz/regressions/<target>/` and replayed from then on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok().map(|b| (e.path(), b)))
        .collect();
    v.sort();
    v.into_iter().map(|(_, b)| b).collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                b.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                b.remove(rng.below(len));
            }
            4 => b.truncate(rng.below(len + 1)),
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            6 if len >= 4 => {
                // An oversized or odd length field.
                let i = rng.below(len - 3);
                let v: u32 = [u32::MAX, 0x7fff_ffff, 0x0010_0000, 0, 1][rng.below(5)];
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                let n = rng.below(16);
                for _ in 0..n {
                    b.push(rng.next() as u8);
                }
            }
        }
    }
    b
}

/// Replays the target's regressions, then feeds mutated seeds to `f` for
/// the time budget. Fails (and saves the input) on a panic.
fn fuzz(target: &str, f: impl Fn(&[u8])) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "no seed corpus for {target}");
    let regressions = fuzz_dir().join("regressions").join(target);
    for input in files(&regressions).iter().chain(corpus.iter()) {
        f(input);
    }
    let budget = std::env::var("VMUX_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(1));
    let mut rng = Rng(0x5eed_0000 ^ target.len() as u64 ^ (target.as_bytes()[0] as u64) << 32);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        let input = mutate(&mut rng, &corpus);
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            std::fs::create_dir_all(&regressions).unwrap();
            let name = format!("crash-{:016x}", rng.next());
            std::fs::write(regressions.join(&name), &input).unwrap();
            panic!("{target}: input saved as fuzz/regressions/{target}/{name} panicked");
        }
        runs += 1;
    }
    println!("{target}: {runs} inputs, no panic");
}

#[test]
fn agent_protocol() {
    fuzz("agent-protocol", |b| {
        if let vmux_agent::wire::Request::Extension {
            name: "session-bind@openssh.com",
            contents,
        } = vmux_agent::wire::parse(b)
        {
            let _ = vmux_agent::origin::bind::parse(contents);
        }
    });
}

#[test]
fn link_message() {
    fuzz("link-message", |b| {
        if let Ok(m) = vmux_proto::Message::decode(b) {
            // The signer reads every sign request's data and proof itself.
            if let vmux_proto::Message::SignRequest(r) = &m {
                let _ = vmux_signer::purpose::Purpose::of(&r.data, r.context.binding.as_ref());
            }
            // Whatever decodes re-encodes to bytes that decode to the same
            // message (not always the same bytes: an error code from a
            // newer peer decodes as internal).
            assert_eq!(
                vmux_proto::Message::decode(&m.encode()).as_ref(),
                Ok(&m),
                "{}",
                m.name()
            );
        }
    });
}

#[test]
fn session_bind() {
    fuzz("session-bind", |b| {
        let mut bs = vmux_agent::origin::Bindings::default();
        if let Ok(x) = vmux_agent::origin::bind::parse(b) {
            let _ = bs.add(x);
        }
    });
}

#[test]
fn sign_data() {
    let bindings = vmux_agent::origin::Bindings::default();
    fuzz("sign-data", |b| {
        let _ = vmux_agent::origin::data::userauth(b);
        let _ = vmux_agent::origin::data::sshsig_namespace(b);
        let _ = vmux_agent::origin::derive(&bindings, b, None, &[], &[]);
        let _ = vmux_signer::purpose::Purpose::of(b, None);
    });
}

#[test]
fn known_hosts() {
    fuzz("known-hosts", |b| {
        let text = String::from_utf8_lossy(b);
        let mut out = vmux_agent::origin::known_hosts::HostNames::default();
        vmux_agent::origin::known_hosts::lookup(&text, b"key", &["[h2]:2222".into()], &mut out);
    });
}

#[test]
fn state_files() {
    let p = Path::new("state.json");
    fuzz("agent-state", |b| {
        let _ = vmux_agent::AgentState::parse(p, b);
    });
    fuzz("signer-state", |b| {
        let _ = vmux_signer::paired::SignerState::parse(p, b);
    });
    let key = vmux_signer::audit::AuditKey::from_identity(&vmux_link::Identity::generate());
    fuzz("audit-log", |b| {
        let _ = vmux_signer::audit::verify(b, &key);
        let _ = vmux_signer::audit::read(b);
    });
}
