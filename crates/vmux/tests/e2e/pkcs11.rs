//! Hardware tokens through PKCS#11, with SoftHSM2: keys made on the token
//! and keys made by pkcs11-tool sign real logins; a wrong PIN is refused;
//! a token that goes away fails clearly and works again when it is back.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct Hsm {
    conf: String,
    tokens: std::path::PathBuf,
}

/// `pkcs11-tool` on the SoftHSM2 token of config `conf`, logged in with
/// the user PIN.
fn pkcs11_tool(conf: &str) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.args(["--module", MODULE, "--login", "--pin", "1234"])
        .env("SOFTHSM2_CONF", conf);
    c
}

fn softhsm(dir: &std::path::Path) -> Hsm {
    assert!(
        std::path::Path::new(MODULE).exists(),
        "SoftHSM2 is missing: ./scripts/test installs softhsm2 and opensc"
    );
    let tokens = dir.join("hsm-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    ok(Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "vmux-test",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ])
        .env("SOFTHSM2_CONF", &conf));
    for (kind, label, id) in [
        ("EC:prime256v1", "imported-ec", "01"),
        ("rsa:2048", "imported-rsa", "02"),
    ] {
        ok(pkcs11_tool(&conf).args([
            "--keypairgen",
            "--key-type",
            kind,
            "--label",
            label,
            "--id",
            id,
        ]));
    }
    Hsm { conf, tokens }
}

fn secret(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

#[test]
fn token_keys_made_by_vmux_and_by_pkcs11_tool_log_in_and_a_lost_token_comes_back() {
    let dir = test_dir();
    let d = dir.path();
    let hsm = softhsm(d);
    let pass = secret(d, "pass", "signer passphrase");
    let pin = secret(d, "pin", "1234");
    let bad_pin = secret(d, "bad-pin", "0000");
    let mut signer = Signer::init_with(d, "pi", &["--passphrase-file", &pass]);
    signer
        .launch
        .env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.clone()));
    let with_hsm = |c: &mut Command| {
        c.env("SOFTHSM2_CONF", &hsm.conf);
    };

    // A wrong PIN is refused, clearly.
    let token_add = |pin_file: &str| {
        let mut add = signer.cmd(&[
            "token",
            "add",
            "--module",
            MODULE,
            "--name",
            "soft",
            "--passphrase-file",
            &pass,
            "--pin-file",
            pin_file,
        ]);
        with_hsm(&mut add);
        add
    };
    let out = run(&mut token_add(&bad_pin));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong PIN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ok(&mut token_add(&pin));
    assert!(
        listed.contains("imported-ec (ECDSA)") && listed.contains("imported-rsa (RSA)"),
        "{listed}"
    );
    let tokens = std::fs::read_to_string(signer.home.join("tokens.json")).unwrap();
    assert!(!tokens.contains("1234"), "the PIN is stored encrypted");

    // Keys generated on the token are not extractable.
    let mut lines = Vec::new();
    for (kind, comment) in [
        ("ecdsa", "gen-ec"),
        ("rsa", "gen-rsa"),
        ("ed25519", "gen-ed"),
    ] {
        let mut g = signer.cmd(&[
            "keygen",
            "--token",
            "soft",
            "--type",
            kind,
            "--comment",
            comment,
            "--passphrase-file",
            &pass,
        ]);
        with_hsm(&mut g);
        lines.push(ok(&mut g).trim().to_owned());
    }
    let objects = ok(pkcs11_tool(&hsm.conf).args(["--list-objects", "--type", "privkey"]));
    for label in ["gen-ec", "gen-rsa", "gen-ed"] {
        let block = objects
            .split("Private Key Object")
            .find(|b| b.contains(label))
            .unwrap();
        assert!(
            block.contains("never extractable") && block.contains("sensitive"),
            "{block}"
        );
    }
    let mut keys = signer.cmd(&["keys", "--passphrase-file", &pass]);
    with_hsm(&mut keys);
    let all = ok(&mut keys);
    assert_eq!(all.matches("[hardwareToken]").count(), 5, "{all}");
    assert!(all.contains("gen-ed (ED25519) [hardwareToken]"), "{all}");
    let mut big_l = signer.cmd(&["keys", "-L", "--passphrase-file", &pass]);
    with_hsm(&mut big_l);
    let public = ok(&mut big_l);

    signer.start_on("127.0.0.1:0", &["--passphrase-file", &pass]);
    let agent = Agent::paired_with(d, "laptop", &signer);
    let status = ok(&mut agent.cmd(&["status"]));
    assert!(status.contains("hardwareToken on pi"), "{status}");
    for line in public.lines() {
        let sshd = Sshd::start(d, &format!("{line}\n"), &[]);
        sshd.assert_login(&agent, &format!("login with {line}"));
    }
    assert!(lines
        .iter()
        .all(|l| public.contains(l.split_whitespace().nth(1).unwrap())));

    // The token goes away: signing fails clearly, the signer lives on.
    let sshd = Sshd::start(d, &format!("{}\n", lines[0]), &[]);
    let away = d.join("hsm-away");
    std::fs::rename(&hsm.tokens, &away).unwrap();
    let out = sshd.ssh(&agent, &[], "true");
    assert!(!out.status.success(), "no token, no signature");
    signer.daemon().wait_line(WAIT, |l| {
        l.contains("signing failed") && l.contains("not available")
    });
    assert!(agent.ssh_add(&["-l"]).status.success());
    // It comes back: signing works without restarting the signer.
    std::fs::rename(&away, &hsm.tokens).unwrap();
    let out = sshd.ssh(&agent, &[], "true");
    assert!(
        out.status.success(),
        "the token is back: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        signer.daemon().output()
    );
}
