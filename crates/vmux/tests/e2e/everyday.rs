//! Everyday use: service units, socket activation, shell setup, doctor,
//! configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

#[test]
fn install_print_gives_units_systemd_accepts() {
    let dir = test_dir();
    let home = dir.path().join("vmux-home");
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let mut names = Vec::new();
    for (path, body) in agent_install_print(&home) {
        let name = path.rsplit('/').next().unwrap().to_owned();
        std::fs::write(units.join(&name), body).unwrap();
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "vmux-agent.socket",
            "vmux-agent.service",
            "60-vmux.conf",
            "vmux-tray.desktop"
        ]
    );
    let socket_unit = std::fs::read_to_string(units.join("vmux-agent.socket")).unwrap();
    assert!(socket_unit.contains(&format!(
        "ListenStream={}\n",
        home.join("vmux-agent.sock").display()
    )));
    assert!(socket_unit.contains("SocketMode=0600"));
    let env = std::fs::read_to_string(units.join("60-vmux.conf")).unwrap();
    assert_eq!(
        env,
        format!(
            "SSH_AUTH_SOCK={}\n\n",
            home.join("vmux-agent.sock").display()
        )
    );
    let signer_unit = ok(vmux().arg("--home").arg(&home).args([
        "signer",
        "install",
        "--print",
        "--passphrase-file",
        "/etc/vmux/pass",
    ]));
    let (_, body) = signer_unit
        .trim_start_matches("# ")
        .split_once('\n')
        .unwrap();
    std::fs::write(units.join("vmux-signer.service"), body).unwrap();
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(analyze) = analyze else {
        panic!("systemd-analyze is missing: ./scripts/test installs systemd");
    };
    let out = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(units.join("vmux-agent.socket"))
        .arg(units.join("vmux-agent.service"))
        .arg(units.join("vmux-signer.service")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("Unknown"),
        "systemd-analyze: {err}"
    );
    // macOS: the launchd plist names the program and keeps it alive.
    let plist = ok(vmux()
        .arg("--home")
        .arg(&home)
        .args(["agent", "install", "--launchd"]));
    assert!(plist.contains("<string>agent</string>") && plist.contains("<key>KeepAlive</key>"));
}

#[test]
fn a_socket_activated_agent_serves_on_the_inherited_socket() {
    let dir = test_dir();
    let (signer, line) = Signer::serving(dir.path(), "pi", "activated");
    // Pair once with a normal agent, so the state has the signer.
    let mut agent = Agent::paired_with(dir.path(), "laptop", &signer);
    agent.stop();
    // systemd-socket-activate listens, and on the first connection starts
    // the agent with LISTEN_FDS/LISTEN_PID, as systemd does.
    let sock = dir.path().join("activated.sock");
    let activator = [
        "/usr/bin/systemd-socket-activate",
        "/lib/systemd/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| {
        panic!("systemd-socket-activate is missing: ./scripts/test installs systemd")
    });
    let d = Daemon::spawn(
        "socket-activate",
        Command::new(activator)
            .arg("-l")
            .arg(&sock)
            .arg(env!("CARGO_BIN_EXE_vmux"))
            .arg("--home")
            .arg(&agent.home)
            .args(["agent", "run", "--no-discovery"]),
    );
    d.wait_line(WAIT, |l| l.contains("Listening on"));
    let out = run(Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", &sock));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(line.split_whitespace().nth(1).unwrap()),
        "{listed}\n{}",
        d.output()
    );
    d.wait_line(WAIT, |l| {
        l.contains(&format!("vmux agent: listening on {}", sock.display()))
    });
}

#[test]
fn agent_env_lines_set_ssh_auth_sock_in_each_shell() {
    let dir = test_dir();
    let sock = dir.path().join("odd 'name'.sock");
    for (shell, flag) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let Some(bin) = ["/usr/bin/", "/bin/"]
            .iter()
            .map(|p| format!("{p}{shell}"))
            .find(|p| std::path::Path::new(p).exists())
        else {
            panic!("{shell} is missing: ./scripts/test installs it");
        };
        let lines = ok(vmux()
            .args(["agent", "env", "--shell", flag, "--socket"])
            .arg(&sock));
        let script = dir.path().join(format!("env.{shell}"));
        std::fs::write(&script, &lines).unwrap();
        let echo = if shell == "fish" {
            "echo $SSH_AUTH_SOCK"
        } else {
            "echo \"$SSH_AUTH_SOCK\""
        };
        let out = ok(Command::new(&bin)
            .arg("-c")
            .arg(format!("source '{}'; {echo}", script.display()))
            .env_remove("SSH_AUTH_SOCK"));
        assert_eq!(out.trim(), sock.display().to_string(), "{shell}");
    }
}

#[test]
fn doctor_names_each_problem_with_its_fix() {
    let dir = test_dir();
    let mut agent = Agent::new(dir.path(), "laptop");
    let home = agent.home.clone();
    let doctor = |auth: Option<&std::path::Path>| {
        let mut c = vmux();
        c.arg("--home").arg(&home).args(["agent", "doctor"]);
        c.env_remove("SSH_AUTH_SOCK");
        if let Some(a) = auth {
            c.env("SSH_AUTH_SOCK", a);
        }
        let out = run(&mut c);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (good, text) = doctor(None);
    assert!(!good);
    assert!(
        text.contains("SSH_AUTH_SOCK is not set") && text.contains("vmux agent env"),
        "{text}"
    );
    assert!(
        text.contains("no agent socket at") && text.contains("vmux agent run"),
        "{text}"
    );
    let (_, text) = doctor(Some(std::path::Path::new("/somewhere/else.sock")));
    assert!(text.contains("points to /somewhere/else.sock"), "{text}");

    // A stale socket with the wrong mode.
    std::fs::create_dir_all(&agent.home).unwrap();
    let l = std::os::unix::net::UnixListener::bind(&agent.sock).unwrap();
    drop(l);
    std::fs::set_permissions(&agent.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (_, text) = doctor(Some(&agent.sock));
    assert!(text.contains("has mode 666"), "{text}");
    assert!(text.contains("no vmux agent answers"), "{text}");
    std::fs::remove_file(&agent.sock).unwrap();

    // Running, but nothing paired.
    agent.start(&[]);
    let (_, text) = doctor(Some(&agent.sock));
    assert!(text.contains("no signer is paired"), "{text}");
    agent.stop();

    // Paired, certificate short-lived, then the signer goes away.
    let (mut signer, _) = Signer::serving(dir.path(), "pi", "k");
    agent.start_with(
        &signer,
        &["--cert-validity", "2", "--cert-renew-before", "1"],
    );
    agent.wait_certificate_installed(1);
    let (good, text) = doctor(Some(&agent.sock));
    assert!(good, "{text}");
    assert!(text.contains("signer pi is connected"), "{text}");
    signer.kill();
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("session certificate expired"));
    let (good, text) = doctor(Some(&agent.sock));
    assert!(!good);
    assert!(
        text.contains("signer pi at")
            && text.contains("is unreachable")
            && text.contains("vmux signer run"),
        "{text}"
    );
    assert!(
        text.contains("session certificate expired") && text.contains("vmux agent cert"),
        "{text}"
    );
    assert!(text.contains("AllowAgentForwarding"), "{text}");
}

#[test]
fn a_mistyped_config_key_is_named_with_file_and_line() {
    let dir = test_dir();
    let agent = Agent::new(dir.path(), "laptop");
    std::fs::create_dir_all(&agent.home).unwrap();
    std::fs::write(
        agent.home.join("agent.toml"),
        "name = \"x\"\nsign_timout = 5\n",
    )
    .unwrap();
    let out = run(&mut agent.cmd(&["run"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml") && err.contains("line 2") && err.contains("sign_timout"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    let signer = Signer::init(dir.path(), "pi");
    signer.config("listen = 5\n");
    let out = run(&mut signer.cmd(&["run"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("signer.toml")
            && err.contains("line 1")
            && err.contains("listen"),
        "{err}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let bash = ok(vmux().args(["completions", "bash"]));
    assert!(bash.contains("signer") && bash.contains("--sign-timeout"));
    let dir = test_dir();
    ok(vmux().args(["man", "--dir"]).arg(dir.path()));
    let page = std::fs::read_to_string(dir.path().join("vmux.1")).unwrap();
    assert!(page.contains(".TH vmux 1"));
    assert!(dir.path().join("vmux-agent-run.1").exists());
}
