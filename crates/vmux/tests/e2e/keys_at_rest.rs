//! Software keys encrypted at rest: the passphrase, lock and unlock,
//! import, delete and rename, with real OpenSSH.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

fn secret(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

fn key_files(signer: &Signer) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(signer.home.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect()
}

#[test]
fn keys_on_disk_need_the_passphrase_and_lock_unlock_works() {
    let dir = test_dir();
    let d = dir.path();
    let pass = secret(d, "pass", "correct horse battery", 0o600);
    let mut signer = Signer::init_with(d, "pi", &["--passphrase-file", &pass]);
    let line = signer.keygen_with("ed25519", "enc", &["--passphrase-file", &pass]);
    // ssh-keygen can read the key only with the passphrase.
    let file = &key_files(&signer)[0];
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let no = run(Command::new("ssh-keygen")
        .args(["-y", "-P", ""])
        .arg("-f")
        .arg(file));
    assert!(!no.status.success(), "the key file is encrypted");
    let yes = ok(Command::new("ssh-keygen")
        .args(["-y", "-P", "correct horse battery"])
        .arg("-f")
        .arg(file));
    assert_eq!(
        yes.split_whitespace().nth(1),
        line.split_whitespace().nth(1)
    );
    // The listing does not call it unencrypted; the CA and identity are encrypted too.
    let keys = ok(&mut signer.cmd(&["keys"]));
    assert!(
        keys.contains(" enc (ED25519) [software]") && !keys.contains("UNENCRYPTED"),
        "{keys}"
    );
    assert!(std::fs::read_to_string(signer.home.join("signer-identity"))
        .unwrap()
        .contains("encrypted bcrypt-pbkdf"));

    // A wrong passphrase, and a passphrase file others can read, are refused.
    let wrong = secret(d, "wrong", "nope", 0o600);
    let out = run(&mut signer.cmd(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--passphrase-file",
        &wrong,
    ]));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wrong passphrase")
    );
    let open = secret(d, "open", "correct horse battery", 0o644);
    let out = run(&mut signer.cmd(&["run", "--listen", "127.0.0.1:0", "--passphrase-file", &open]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    signer.start_on("127.0.0.1:0", &["--passphrase-file", &pass]);
    let agent = Agent::paired_with(d, "laptop", &signer);
    let sshd = Sshd::start(d, &format!("{line}\n"), &[]);
    sshd.assert_login(&agent, "a login with the encrypted key");

    ok(&mut signer.cmd(&["lock"]));
    let out = sshd.ssh(&agent, &[], "true");
    assert!(!out.status.success(), "a locked signer does not sign");
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("signerLocked"));
    let out = run(&mut signer.cmd(&["unlock", "--passphrase-file", &wrong]));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wrong passphrase")
    );
    ok(&mut signer.cmd(&["unlock", "--passphrase-file", &pass]));
    sshd.assert_login(&agent, "unlocked, it signs again");
}

#[test]
fn keys_made_by_ssh_keygen_can_be_imported_and_used() {
    let dir = test_dir();
    let d = dir.path();
    let pass = secret(d, "pass", "signer pass", 0o600);
    let key_pass = secret(d, "keypass", "old key pass", 0o600);
    let mut signer = Signer::init_with(d, "pi", &["--passphrase-file", &pass]);
    let mut authorized = String::new();
    for (kind, with_pass) in [
        ("ed25519", false),
        ("ecdsa", true),
        ("rsa", false),
        ("ed25519", true),
    ] {
        let f = d.join(format!("id_{kind}_{with_pass}"));
        let p = if with_pass { "old key pass" } else { "" };
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", p, "-C", &format!("imported-{kind}")])
            .arg("-f")
            .arg(&f));
        let mut cmd = signer.cmd(&["import"]);
        cmd.arg(&f).args(["--passphrase-file", &pass]);
        if with_pass {
            cmd.args(["--key-passphrase-file", &key_pass]);
        }
        let line = ok(&mut cmd);
        let original = std::fs::read_to_string(f.with_extension("pub")).unwrap();
        assert_eq!(
            line.split_whitespace().nth(1),
            original.split_whitespace().nth(1)
        );
        authorized.push_str(&original);
    }
    // Re-encrypted with the signer's passphrase.
    for f in key_files(&signer) {
        let out = run(Command::new("ssh-keygen")
            .args(["-y", "-P", "signer pass"])
            .arg("-f")
            .arg(&f));
        assert!(
            out.status.success(),
            "{} is under the signer's passphrase",
            f.display()
        );
    }
    signer.start_on("127.0.0.1:0", &["--passphrase-file", &pass]);
    let agent = Agent::paired_with(d, "laptop", &signer);
    for line in authorized.lines() {
        let sshd = Sshd::start(d, &format!("{line}\n"), &[]);
        sshd.assert_login(&agent, &format!("login with {line}"));
    }
}

#[test]
fn unencrypted_keys_are_flagged_and_keys_can_be_renamed_and_deleted() {
    let dir = test_dir();
    let signer = Signer::init(dir.path(), "pi");
    let line = signer.keygen("ecdsa", "first");
    let keys = ok(&mut signer.cmd(&["keys"]));
    assert!(keys.contains("UNENCRYPTED"), "{keys}");
    let fp = fingerprint(&line, dir.path());
    ok(&mut signer.cmd(&["rename", &fp, "renamed"]));
    assert!(ok(&mut signer.cmd(&["keys"])).contains(" renamed (ECDSA)"));
    // Without a terminal to confirm on (setsid: no controlling terminal)
    // and without --yes, nothing is deleted.
    let mut no_tty = Command::new("setsid");
    no_tty
        .arg("-w")
        .arg(env!("CARGO_BIN_EXE_vmux"))
        .arg("--home")
        .arg(&signer.home)
        .args(["signer", "delete", &fp]);
    let out = run(&mut no_tty);
    assert!(
        !out.status.success(),
        "no terminal to confirm on: nothing deleted"
    );
    assert_eq!(key_files(&signer).len(), 1);
    ok(&mut signer.cmd(&["delete", &fp, "--yes"]));
    assert!(key_files(&signer).is_empty());
    let out = run(&mut signer.cmd(&["delete", &fp, "--yes"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key has the fingerprint"));
}
