//! The agent's identity in the desktop secret service: a real GNOME
//! Keyring (`gnome-keyring-daemon`, unlocked with a password) on a
//! private session bus started by the test. A copy of the agent's disk
//! then holds no usable identity.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use futures_util::StreamExt;

/// A private session bus with an unlocked GNOME Keyring on it.
struct Keyring {
    address: String,
    data: std::path::PathBuf,
    _bus: Daemon,
    _keyring: Daemon,
}

fn keyring(dir: &Path) -> Keyring {
    let (bus, address) = session_bus(dir);
    let (home, run) = (dir.join("keyring-home"), dir.join("keyring-run"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Readiness: the service's name gets an owner on the bus.
    let rt = runtime();
    let keyring = rt.block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
        let mut owners = dbus.receive_name_owner_changed().await.unwrap();
        let keyring = Daemon::spawn(
            "gnome-keyring-daemon",
            Command::new("bash")
                .arg("-c")
                .arg("printf 'correct horse' | exec gnome-keyring-daemon --foreground --unlock --components=secrets")
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .env("HOME", &home)
                .env("XDG_DATA_HOME", home.join("data"))
                .env("XDG_RUNTIME_DIR", &run),
        );
        tokio::time::timeout(WAIT, async {
            while let Some(change) = owners.next().await {
                let args = change.args().unwrap();
                if args.name().as_str() == "org.freedesktop.secrets" && args.new_owner().is_some() {
                    return;
                }
            }
        })
        .await
        .expect("gnome-keyring-daemon did not take org.freedesktop.secrets");
        keyring
    });
    Keyring {
        address,
        data: home.join("data"),
        _bus: bus,
        _keyring: keyring,
    }
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_agent_identity_moves_into_the_keyring_and_a_copy_of_the_disk_cannot_use_it() {
    let dir = test_dir();
    let ring = keyring(dir.path());
    let (signer, key_line) = Signer::serving(dir.path(), "pi", "kr");
    let sshd = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
    let mut agent = Agent::new(dir.path(), "laptop");
    agent
        .launch
        .env
        .push(("DBUS_SESSION_BUS_ADDRESS".into(), ring.address.clone()));
    agent.start_with(&signer, &[]);
    let id = agent.status()["id"].as_str().unwrap().to_owned();
    agent.stop();
    let identity_file = agent.home.join("agent-identity");
    let secret_line = std::fs::read_to_string(&identity_file)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();

    // Switch to the keyring: the identity moves in, the file goes.
    std::fs::write(
        agent.home.join("agent.toml"),
        "identity_store = \"secret-service\"\n",
    )
    .unwrap();
    agent.start(&["--signer", &signer.addr]);
    agent.wait_connected(1);
    assert!(
        agent
            .daemon()
            .output()
            .contains("moved the agent identity from its file into the secret service"),
        "{}",
        agent.daemon().output()
    );
    assert!(!identity_file.exists(), "the identity file is still there");
    assert_eq!(agent.status()["id"], id.as_str(), "the same agent identity");
    // The signer knows it: a login, and no new pairing.
    sshd.assert_login(&agent, "a login with the identity from the keyring");
    assert_eq!(signer.approvals_of("pair").len(), 1);
    // Nowhere on disk in the clear: not in the agent's home, not in the
    // keyring's files.
    for f in all_files(&agent.home)
        .iter()
        .chain(all_files(&ring.data).iter())
    {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes
                .windows(secret_line.len())
                .any(|w| w == secret_line.as_bytes()),
            "the identity is in the clear in {}",
            f.display()
        );
    }
    agent.stop();

    // A thief's copy of the disk, without the unlocked keyring: no agent.
    let stolen = dir.path().join("stolen");
    ok(Command::new("cp").arg("-a").arg(&agent.home).arg(&stolen));
    let out = run(vmux()
        .arg("--home")
        .arg(&stolen)
        .args(["agent", "run", "--no-discovery", "--signer", &signer.addr])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the desktop secret service is not available"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");

    // forget deletes it from the keyring: the next start is a new device.
    ok(agent
        .cmd(&["forget"])
        .env("DBUS_SESSION_BUS_ADDRESS", &ring.address));
    agent.start(&[]);
    let new_id = agent.status()["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
}
