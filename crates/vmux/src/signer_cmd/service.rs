//! `vmux signer install | uninstall`: the systemd user unit.

use std::path::Path;
use std::process::ExitCode;

use vmux_home::Home;

use crate::cli::SignerServiceCommand;
use crate::Failure;

pub(super) fn run(
    home: &Home,
    home_flag: Option<&Path>,
    command: SignerServiceCommand,
) -> Result<ExitCode, Failure> {
    match command {
        SignerServiceCommand::Install {
            print,
            passphrase_file,
        } => {
            let spec = crate::service::ServiceSpec {
                exe: crate::current_exe()?,
                home: home_flag.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned())),
                socket: home.default_socket().to_owned(),
            };
            let pass = passphrase_file.map(|p| std::path::absolute(&p).unwrap_or(p));
            let unit = crate::service::signer_service_unit(&spec, pass.as_deref());
            let path = crate::service::user_unit_dir()?.join("vmux-signer.service");
            if print {
                println!("# {}\n{unit}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            crate::service::install(&[(path, unit)], "vmux-signer.service")?;
            Ok(ExitCode::SUCCESS)
        }
        SignerServiceCommand::Uninstall => {
            let path = crate::service::user_unit_dir()?.join("vmux-signer.service");
            crate::service::uninstall(&["vmux-signer.service"], &[path])?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
