//! `vmux setup`, the whole laptop-and-phone setup, run on a real
//! pseudo-terminal as a person runs it, with the Chromium phone clicking
//! what a person taps: the signer and the agent as services (here, with
//! no systemd user manager, in the background), the pairing, the phone's
//! enrolment, the phone as approver and CA, and the check login. Without
//! a terminal it prints its plan and fails; on a set-up machine it changes
//! nothing; on a tailnet it takes the tailnet name and `tailscale cert`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::browser::{Authenticator, Browser};
use crate::support::phone::{download_page_ca, Phone, RP_HOST};
use crate::support::pki::TestPki;
use crate::support::pty::OnTerminal;
use crate::support::*;

/// Stops the signer and the agent `vmux setup` started in the background
/// (their pid files in the home), however the test ends.
struct Background(PathBuf);

impl Drop for Background {
    fn drop(&mut self) {
        for name in ["signer", "agent"] {
            let Ok(text) = std::fs::read_to_string(self.0.join(format!("{name}.pid"))) else {
                continue;
            };
            if let Ok(pid) = text.trim().parse::<i32>() {
                // SAFETY: kill(2) on the pid setup recorded for its own
                // child; no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }
}

/// `vmux --home HOME setup ARGS…` on a pty, with PATH starting at `bin`
/// when given and its own XDG_CONFIG_HOME.
fn setup_command<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    home: &Path,
    bin: Option<&Path>,
    args: &[S],
) -> Command {
    let mut cmd = vmux();
    cmd.arg("--home")
        .arg(home)
        .arg("setup")
        .args(args)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("SHELL", "/bin/bash")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("VMUX_HOME");
    if let Some(b) = bin {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", b.display()));
    }
    cmd
}

/// `args`, and the signer and its phone page on free loopback ports
/// (`--listen`, `--web-listen`), as the setups here run.
fn on_free_ports(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    for flag in ["--listen", "--web-listen"] {
        all.extend([flag.to_owned(), format!("127.0.0.1:{}", free_port())]);
    }
    all
}

/// A passphrase file (`correct horse`, mode 0600) under `dir`.
fn passphrase_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pass = dir.join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    pass
}

/// The value after `flag` in `args`.
fn value_of<'a>(args: &'a [String], flag: &str) -> &'a str {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// The rest of the line after `label` on `screen`.
fn line_after(screen: &str, label: &str) -> String {
    screen
        .split(label)
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("no {label:?} on the screen:\n{screen}"))
        .trim()
        .to_owned()
}

/// Every file under `dir` with its contents, but for what the running
/// daemons write themselves (logs, state, phones, audit) and sockets:
/// what a second run of setup must leave as it was.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file()
                && ![".log", ".json", ".jsonl"]
                    .iter()
                    .any(|x| p.to_string_lossy().ends_with(x))
            {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A stand-in `tailscale` in `bin`: `status --json` prints a tailnet with
/// MagicDNS and HTTPS certificates for `name`; `cert --cert-file F
/// --key-file K NAME` writes `pki`'s certificate and key there.
fn stand_in_tailscale(bin: &Path, name: &str, pki: &TestPki) {
    std::fs::create_dir_all(bin).unwrap();
    let status = serde_json::json!({
        "Version": "1.80.0",
        "BackendState": "Running",
        "TUN": true,
        "Self": {
            "ID": "n1", "HostName": "laptop", "DNSName": format!("{name}."),
            "OS": "linux", "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
            "Online": true,
        },
        "MagicDNSSuffix": "tail1234.ts.net",
        "CurrentTailnet": { "Name": "anna@example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": true },
        "CertDomains": [name],
    });
    let json = bin.join("status.json");
    std::fs::write(&json, status.to_string()).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  status) cat '{}' ;;\n  cert)\n    [ \"$2\" = --cert-file ] && [ \"$4\" = --key-file ] && [ \"$6\" = '{name}' ] || {{ echo \"usage: $*\" >&2; exit 2; }}\n    cp '{}' \"$3\" && cp '{}' \"$5\" && echo \"Wrote public cert to $3\" >&2 ;;\n  *) echo \"unknown $1\" >&2; exit 2 ;;\nesac\n",
        json.display(),
        pki.cert_pem().display(),
        pki.key_pem().display()
    );
    let path = bin.join("tailscale");
    write_script(&path, &script);
}

/// A phone: an isolated page of `browser` with its own authenticator.
fn new_phone(browser: &Browser) -> Phone {
    let page = browser.new_isolated_page();
    let auth = page.add_authenticator(Authenticator::default());
    Phone { page, auth }
}

/// Opens the enrolment link and taps Create passkey, as a person does.
fn create_passkey(phone: &Phone, link: &str) {
    crate::support::phone::enrol(&phone.page, link);
    phone.wait_signed_in();
}

/// The person's phone (a page of `browser`) enrols with `link` and
/// approves the certificate that `vmux setup` on `term` then asks for;
/// setup ends well, having logged in to its throwaway sshd with it.
/// Returns the phone and setup's screen.
fn phone_approves_the_certificate(
    term: OnTerminal,
    browser: &Browser,
    link: &str,
) -> (Phone, String) {
    let phone = new_phone(browser);
    create_passkey(&phone, link);
    term.wait_for("Approve the certificate on your phone");
    let card = phone.card_text("certificate");
    assert!(card.contains("certificate"), "{card}");
    phone.tap("certificate", "Approve");
    let (status, screen) = term.finish();
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("ok: logged in to a throwaway sshd on 127.0.0.1:"),
        "{screen}"
    );
    (phone, screen)
}

/// The phone page's certificate chain as a client sees it at `addr`,
/// trusting `ca` only: whether the handshake for `name` succeeds.
fn page_trusted(ca: &Path, name: &str, addr: &str) -> Result<u16, String> {
    let ca = std::fs::read(ca).unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .resolve(name, addr)
            .timeout(WAIT)
            .build()
            .unwrap();
        client
            .get(format!("https://{name}:{}/", addr.port()))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e:?}"))
    })
}

#[test]
fn setup_without_a_terminal_prints_its_plan_and_fails_writing_nothing() {
    let dir = test_dir();
    let home = dir.path().join("home");
    let out = run(&mut setup_command(
        dir.path(),
        &home,
        None,
        &["--phone", "pixel"],
    ));
    assert_refused_without_a_terminal(
        &out,
        "setup",
        &[
            "create the signer in",
            "tailscale status --json",
            "systemd user services",
            "pair the agent with the signer",
            "enrol your phone",
            "approve = \"phone\" and ca = \"phone:NAME\"",
            "authorized_keys line",
            "throwaway sshd on 127.0.0.1",
        ],
    );
    assert!(!home.exists(), "setup wrote its home");
    assert!(!dir.path().join("config").exists(), "setup wrote units");
}

#[test]
fn setup_on_a_tailnet_takes_its_name_and_tailscales_certificate_then_a_second_run_changes_nothing()
{
    let dir = test_dir();
    // The tailnet's certificate is publicly trusted; here the test CA
    // stands in for the web PKI, and the phone trusts it from the start:
    // there is no trust step.
    let pki = TestPki::new(dir.path(), &[RP_HOST]);
    let bin = dir.path().join("bin");
    stand_in_tailscale(&bin, RP_HOST, &pki);
    let home = dir.path().join("home");
    let _background = Background(home.clone());
    let args = on_free_ports(&["--phone", "pixel", "--yes", "--no-advertise"]);
    let term = OnTerminal::spawn(setup_command(dir.path(), &home, Some(&bin), &args));
    let screen = term.wait_for("Waiting for the phone");
    assert!(
        screen.contains(&format!(
            "on a tailnet as {RP_HOST} with HTTPS certificates on"
        )),
        "{screen}"
    );
    assert!(
        screen.contains("Trust link: none (the page's certificate is publicly trusted)"),
        "{screen}"
    );
    let link = line_after(&screen, "Enrolment link: ");
    let web = value_of(&args, "--web-listen");
    let port = web.rsplit_once(':').unwrap().1;
    assert!(
        link.starts_with(&format!("https://{RP_HOST}:{port}/#enrol=")),
        "{link}"
    );
    // The page serves tailscale's certificate.
    assert!(page_trusted(pki.ca_pem(), RP_HOST, web).is_ok());

    let browser = Browser::launch(
        dir.path(),
        pki.ca_pem(),
        &[&format!("MAP {RP_HOST} 127.0.0.1")],
    );
    let (phone, screen) = phone_approves_the_certificate(term, &browser, &link);
    assert!(screen.contains("vmux setup's own time: "), "{screen}");
    // What it wrote: the tailnet's files in the signer's flags, the
    // phone as approver and CA.
    let config = std::fs::read_to_string(home.join("signer.toml")).unwrap();
    assert!(config.contains("approve = \"phone\""), "{config}");
    assert!(config.contains("ca = \"phone:pixel\""), "{config}");
    let key = home.join(format!("tailscale-{RP_HOST}.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        screen.contains("0 4 * * * tailscale cert --cert-file"),
        "{screen}"
    );

    // A second run on the set-up machine: nothing changes, nobody is
    // asked, no card comes.
    let before = snapshot(&home);
    let term = OnTerminal::spawn(setup_command(dir.path(), &home, Some(&bin), &args[..2]));
    let (status, screen) = term.finish();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("This machine is set up"), "{screen}");
    assert!(screen.contains("Nothing changed."), "{screen}");
    assert_eq!(snapshot(&home), before, "the second run changed files");
    assert_eq!(phone.cards(), 0);
}

#[test]
fn the_whole_path_a_phone_trusting_only_the_downloaded_crt_then_logins_with_the_phones_certificate()
{
    if let Err(e) = crate::support::browser::check_installed() {
        panic!("{e}");
    }
    let dir = test_dir();
    let home = dir.path().join("home");
    let _background = Background(home.clone());
    let args = on_free_ports(&[
        "--phone",
        "pixel",
        "--yes",
        "--no-advertise",
        "--no-tailnet",
        "--web-name",
        RP_HOST,
    ]);
    let term = OnTerminal::spawn(setup_command(dir.path(), &home, None, &args));
    let screen = term.wait_for("Waiting for the phone");
    assert!(screen.contains("Paired with the signer"), "{screen}");
    let trust = line_after(&screen, "Trust link: ");
    assert!(trust.starts_with("http://127.0.0.1:"), "{trust}");
    let link = line_after(&screen, "Enrolment link: ");
    assert!(link.starts_with(&format!("https://{RP_HOST}:")), "{link}");
    let rules = [&format!("MAP {RP_HOST} 127.0.0.1")[..], "EXCLUDE 127.0.0.1"];

    // The phone trusts nothing yet: it opens the trust link and taps
    // Install on Android, as its person does.
    let crt = download_page_ca(
        dir.path(),
        &rules,
        (&link, &trust),
        &home.join("page-ca.pem"),
        |_| {},
    );

    // Installed: its NSS database holds that file and nothing else.
    let browser = Browser::launch_trusting(dir.path(), &[&crt], &rules);
    let (phone, screen) = phone_approves_the_certificate(term, &browser, &link);
    let machine: f64 = line_after(&screen, "vmux setup's own time: ")
        .split(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("the machine time");
    eprintln!("vmux setup's own time: {machine} s");
    phone.wait_cards(0);

    let agent = Agent {
        sock: home.join("vmux-agent.sock"),
        home: home.clone(),
        ..Agent::new(dir.path(), "laptop")
    };
    // A login with the signer's key: a card on the phone, approved.
    let key_line = line_after(
        &screen,
        "the authorized_keys line (each login is one Approve on the phone):\r\n",
    );
    assert!(key_line.starts_with("ecdsa-sha2-nistp256 "), "{key_line}");
    let by_key = Sshd::start(dir.path(), &format!("{key_line}\n"), &[]);
    let ssh = crate::support::phone::ssh_spawn(&by_key, &agent, 60);
    let card = phone.card_text("sign");
    assert!(card.contains("127.0.0.1"), "{card}");
    phone.tap("sign", "Approve");
    let out = crate::support::phone::finish(ssh, std::time::Duration::from_secs(60));
    assert_success(&out, "the login approved on the phone");
    phone.wait_cards(0);

    // A server that trusts the phone as CA, as setup printed: five
    // logins with the certificate the phone signed, no card.
    let ca_line = ok(vmux().arg("--home").arg(&home).args(["signer", "ca"]));
    assert!(ca_line.trim().ends_with(" pixel"), "{ca_line}");
    assert!(screen.contains(ca_line.trim()), "setup printed the CA line");
    let ca_file = dir.path().join("phone-ca.pub");
    std::fs::write(&ca_file, &ca_line).unwrap();
    let by_ca = Sshd::start(
        dir.path(),
        "",
        &[
            &format!("TrustedUserCAKeys {}", ca_file.display()),
            "CASignatureAlgorithms +webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
        ],
    );
    for i in 0..5 {
        by_ca.assert_login(&agent, &format!("login {i} with the phone's certificate"));
        assert_eq!(phone.cards(), 0, "login {i} asked the phone");
    }
    assert_eq!(by_ca.accepted(), 5);
    assert!(
        by_ca.daemon.output().contains("ECDSA-CERT"),
        "{}",
        by_ca.daemon.output()
    );
    let audit = ok(vmux().arg("--home").arg(&home).args(["signer", "audit"]));
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("certificate approved") && l.ends_with("on phone pixel"))
            .count(),
        1,
        "one certificate, signed by the phone: {audit}"
    );
    assert!(lines_with(&audit, &[" pair ", "approved"]) > 0, "{audit}");
}

/// Sends one control line to the signer's socket as uid/gid 65534
/// (nobody), through python3: what another local user can send. Returns
/// `connected` and what came back.
fn control_as_nobody(socket: &Path, line: &str) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(10)\ns.connect(sys.argv[1])\nprint('connected')\ntry:\n  s.sendall(sys.argv[2].encode()+b'\\n')\n  print(s.recv(4096).decode(), end='')\nexcept (ConnectionResetError, BrokenPipeError):\n  pass",
        ])
        .arg(socket)
        .arg(line)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3");
    assert_success(&out, "nobody could not even connect");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn only_the_owner_with_the_open_prompts_code_confirms_a_pairing_at_the_control_socket() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "laptop");
    signer.keygen("ecdsa", "work");
    // An approver that never says yes: only the control socket can.
    let hold = dir.path().join("hold");
    write_script(
        &hold,
        "#!/bin/sh
sleep 50
exit 1
",
    );
    signer.start_approving("127.0.0.1:0", &format!("command:{}", hold.display()), &[]);
    let mut agent = Agent::unconfirmed(dir.path(), "desk");
    agent.start(&["--signer", &signer.addr]);
    let code = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = agent.status()["signers"][0]["pairing_code"].as_str() {
                break c.to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "no pairing code");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    agent.confirm(&code);
    let socket = signer.home.join("signer.sock");
    let ask = |line: &str| -> serde_json::Value {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        use std::io::{BufRead, Write};
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(s).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    let pending = ask(r#"{"cmd":"pairpending"}"#);
    assert_eq!(pending["pairing"]["code"], code.as_str(), "{pending}");
    assert_eq!(pending["pairing"]["agent"], "desk", "{pending}");

    // Another user, with the socket opened wide so that only the peer
    // check stands in the way, and the right code: refused, no answer.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&signer.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let answer = control_as_nobody(
        &socket,
        &format!(r#"{{"cmd":"pairconfirm","code":"{code}"}}"#),
    );
    assert_eq!(answer, "connected\n", "another user was answered");
    signer.daemon().wait_line(WAIT, |l| {
        l.contains("refused a control connection from another user")
    });
    // The owner with another code: refused, the prompt stays open.
    let other: String = code
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect();
    let wrong = ask(&format!(r#"{{"cmd":"pairconfirm","code":"{other}"}}"#));
    assert!(wrong["error"].is_string(), "{wrong}");
    assert!(
        !ok(&mut signer.cmd(&["agents"])).contains("desk"),
        "paired without the owner's confirmation"
    );
    // The owner with the prompt's own code: paired.
    let right = ask(&format!(r#"{{"cmd":"pairconfirm","code":"{code}"}}"#));
    assert_eq!(right["confirmed"]["agent"], "desk", "{right}");
    agent.wait_connected(1);
    assert!(ok(&mut signer.cmd(&["agents"])).contains("desk"));
    assert_eq!(
        ask(r#"{"cmd":"pairpending"}"#)["pairing"],
        serde_json::Value::Null
    );
}

#[test]
fn setup_stopped_half_way_goes_on_only_when_asked_and_its_services_outlive_ctrl_c() {
    let dir = test_dir();
    let home = dir.path().join("home");
    let _background = Background(home.clone());
    let args = on_free_ports(&["--no-tailnet", "--web-name", RP_HOST]);
    // The person presses Enter at the pairing code, then Ctrl-C while
    // setup waits for the phone.
    let mut term = OnTerminal::spawn(setup_command(dir.path(), &home, None, &args));
    let screen = term.wait_for("Pair them? [Y/n]");
    assert!(screen.contains("show the same code"), "{screen}");
    term.type_line("");
    term.wait_for("Waiting for the phone");
    term.ctrl_c();
    let (status, _) = term.finish();
    assert!(!status.success());
    // The signer and the agent run on: they are not the terminal's.
    let agent = Agent {
        sock: home.join("vmux-agent.sock"),
        home: home.clone(),
        ..Agent::new(dir.path(), "laptop")
    };
    assert_eq!(
        agent.status()["signers"][0]["connected"],
        true,
        "{}",
        agent.status()
    );

    // Run again: it says what it found and asks; no, and nothing changed.
    let before = snapshot(&home);
    let config = snapshot(&dir.path().join("config"));
    let mut term = OnTerminal::spawn(setup_command(dir.path(), &home, None, &args));
    let screen = term.wait_for("Go on? [Y/n]");
    assert!(
        screen.contains("Found an earlier setup") && screen.contains("agent paired: yes"),
        "{screen}"
    );
    term.type_line("n");
    let (status, screen) = term.finish();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("Nothing changed."), "{screen}");
    assert_eq!(snapshot(&home), before, "files changed after a no");
    assert_eq!(snapshot(&dir.path().join("config")), config);
    assert!(
        ok(vmux().arg("--home").arg(&home).args(["signer", "phones"])).contains("No phones"),
        "a phone was enrolled"
    );
}

#[test]
fn setup_with_an_encrypted_signer_and_no_passphrase_file_says_so_and_changes_nothing() {
    let dir = test_dir();
    let pass = passphrase_file(dir.path());
    let signer = Signer::init_with(
        dir.path(),
        "laptop",
        &["--passphrase-file", &pass.display().to_string()],
    );
    let before = snapshot(&signer.home);
    let term = OnTerminal::spawn(setup_command(dir.path(), &signer.home, None, &["--yes"]));
    let (status, screen) = term.finish();
    assert!(!status.success(), "{screen}");
    assert!(
        screen.contains("has a passphrase, and its service cannot ask for it: run setup with --passphrase-file FILE"),
        "{screen}"
    );
    assert_eq!(snapshot(&signer.home), before);
    assert!(!signer.home.join("signer.toml").exists());
    assert!(!dir.path().join("config").exists(), "units were written");
}

#[test]
fn setup_with_a_passphrase_file_encrypts_the_new_signer_and_its_service_reads_the_file() {
    let dir = test_dir();
    let pass = passphrase_file(dir.path());
    let home = dir.path().join("home");
    let _background = Background(home.clone());
    let pass_arg = pass.display().to_string();
    let args = on_free_ports(&[
        "--yes",
        "--no-tailnet",
        "--passphrase-file",
        &pass_arg,
        "--web-name",
        RP_HOST,
    ]);
    let mut term = OnTerminal::spawn(setup_command(dir.path(), &home, None, &args));
    let screen = term.wait_for("Waiting for the phone");
    assert!(!screen.contains("stored unencrypted"), "{screen}");
    term.ctrl_c();
    let _ = term.finish();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("signer-state.json")).unwrap()).unwrap();
    assert_eq!(state["encrypted"], true, "{state}");
    let key = std::fs::read_dir(home.join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .expect("one key");
    // OpenSSH cannot read the key without the passphrase, and can with it.
    let without = run(Command::new("ssh-keygen")
        .args(["-y", "-P", ""])
        .arg("-f")
        .arg(&key));
    assert!(!without.status.success(), "the key is not encrypted");
    let with = run(Command::new("ssh-keygen")
        .args(["-y", "-P", "correct horse"])
        .arg("-f")
        .arg(&key));
    assert!(with.status.success(), "{with:?}");
    let keys = ok(vmux().arg("--home").arg(&home).args(["signer", "keys"]));
    assert!(!keys.contains("UNENCRYPTED"), "{keys}");
    // The running signer was unlocked from the file.
    let cmdline = std::fs::read(format!(
        "/proc/{}/cmdline",
        std::fs::read_to_string(home.join("signer.pid"))
            .unwrap()
            .trim()
    ))
    .unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&format!("--passphrase-file\0{pass_arg}")),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
}
