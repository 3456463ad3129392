//! Debian packages: the only way xtask installs system software.
//!
//! One `Apt` lives for a whole xtask run, so `apt-get update` runs at most once and no
//! package is installed twice, however many steps ask for it.

use std::{collections::BTreeSet, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{privilege, process};

#[derive(Default)]
pub struct Apt {
    updated: bool,
    installed: BTreeSet<String>,
}

impl Apt {
    /// Whether dpkg reports `package` as installed.
    pub fn is_installed(&self, package: &str) -> bool {
        self.installed.contains(package)
            || process::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_some_and(|status| status.trim_end().ends_with("install ok installed"))
    }

    /// The packages of `wanted` that are not installed yet.
    pub fn missing<'a>(&self, wanted: &[&'a str]) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|package| !self.is_installed(package))
            .collect()
    }

    /// Installs `packages` (those not installed yet), updating the package lists first
    /// the first time.
    pub fn install(&mut self, packages: &[&str]) -> Result<()> {
        let packages = self.missing(packages);
        if packages.is_empty() {
            return Ok(());
        }
        if process::which("apt-get").is_none() {
            bail!(
                "apt-get not found: install {} by hand (xtask only knows Debian/Ubuntu)",
                packages.join(" ")
            );
        }
        if !self.updated {
            process::output(&mut apt_get(&["update"])?).context("apt-get update failed")?;
            self.updated = true;
        }
        let mut args = vec!["install", "-y"];
        args.extend(&packages);
        process::output(&mut apt_get(&args)?)
            .with_context(|| format!("could not install {}", packages.join(" ")))?;
        self.installed
            .extend(packages.iter().map(|package| package.to_string()));
        Ok(())
    }
}

/// `apt-get ARGS` as root and non-interactive (through `sudo env` when not root, since
/// sudo drops the environment).
fn apt_get(args: &[&str]) -> Result<Command> {
    let mut cmd = if privilege::is_root() {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    } else {
        let mut cmd = privilege::root_command("env")?;
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        cmd
    };
    cmd.args(args);
    Ok(cmd)
}
