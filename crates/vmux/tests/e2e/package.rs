//! What the Debian package ships beside the binary (scripts/deb) stays
//! what the binary itself would write. The package itself is built,
//! installed and removed by scripts/deb-check, in CI.

use crate::support::*;

#[test]
fn the_packaged_user_units_are_what_agent_install_writes_for_usr_bin_vmux() {
    let dir = test_dir();
    let home = dir.path().join("home-of-u");
    let out = ok(vmux()
        .args(["agent", "install", "--print"])
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("VMUX_HOME"));
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd/user");
    let mut seen = 0;
    for (path, body) in printed_files(&out) {
        let name = path.rsplit('/').next().unwrap();
        if !name.starts_with("vmux-agent.") {
            continue;
        }
        let packaged = body
            .replace(env!("CARGO_BIN_EXE_vmux"), "/usr/bin/vmux")
            .replace(
                &format!("{}/.ssh/vmux-agent.sock", home.display()),
                "%h/.ssh/vmux-agent.sock",
            );
        let shipped = std::fs::read_to_string(dist.join(name))
            .unwrap_or_else(|e| panic!("dist/systemd/user/{name}: {e}"));
        assert_eq!(shipped.trim_end(), packaged.trim_end(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 2, "{out}");
}
