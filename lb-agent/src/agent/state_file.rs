//! What a pinned agent leaves for the next one under `/run/lb/<scope>/state.json`: VIP and
//! backend ids (so the flow table stays valid), the backend lifecycle (health, drains,
//! deregistrations in progress) and the running configuration with its runtime edits.
//!
//! `/run` is gone at reboot, as the pins are.
//!
//! A file that cannot be read or parsed is refused with the way out
//! ([`StateFileError::Unreadable`]): the agent never guesses over it. Saving is atomic
//! (a temporary file renamed over the old one), so the old state stays intact when a
//! save fails (a full disk), and the temporary file goes.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{dataplane, install::ServicesState, lifecycle::LifecycleState};

/// Everything saved between agent runs. Fields added after the first release default,
/// so a newer agent reads an older agent's file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedAgent {
    #[serde(flatten)]
    pub services: ServicesState,
    #[serde(default)]
    pub lifecycle: LifecycleState,
    /// The running configuration as TOML (the file plus runtime edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_config: Option<String>,
    /// The configuration file it came from, and that file's text when it was read: a
    /// restarted agent keeps the runtime edits only while the file is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SavedSource>,
    /// Runtime edits changed the running configuration since it was read from `source`.
    #[serde(default)]
    pub edited: bool,
    /// Why the operator withdrew every VIP (`ctl withdraw`), if they did: a restarted
    /// agent keeps the host withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedSource {
    pub path: PathBuf,
    pub text: String,
}

/// Why the saved state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "the previous agent's saved state {path} is unreadable ({reason}); nothing was \
         changed and the pinned data plane keeps forwarding. Start again with \
         --recover-state to set the file aside and rebuild the VIP and backend ids from the \
         pinned tables (established flows keep their backends; what only the file held is \
         lost: runtime edits, drains, target health, a `ctl withdraw`), or with --reset to \
         start from scratch (every flow re-hashes)"
    )]
    Unreadable { path: PathBuf, reason: String },
}

/// The state file of one interface's agent.
pub struct StateFile {
    pub path: PathBuf,
}

impl StateFile {
    pub fn for_interface(iface: &str) -> Self {
        Self {
            path: Path::new("/run/lb")
                .join(dataplane::scope(iface))
                .join("state.json"),
        }
    }

    /// The saved state; `None` when there is no file.
    pub fn load(&self) -> Result<Option<SavedAgent>, StateFileError> {
        let unreadable = |reason: String| StateFileError::Unreadable {
            path: self.path.clone(),
            reason,
        };
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| unreadable(format!("not the state's JSON: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(e.to_string())),
        }
    }

    /// Where [`StateFile::set_aside`] keeps an unreadable file.
    pub fn aside_path(&self) -> PathBuf {
        self.path.with_extension("json.unreadable")
    }

    /// Renames an unreadable file out of the way (kept for a post-mortem; replaces an
    /// earlier one).
    pub fn set_aside(&self) -> anyhow::Result<PathBuf> {
        let aside = self.aside_path();
        std::fs::rename(&self.path, &aside)
            .with_context(|| format!("renaming {} to {}", self.path.display(), aside.display()))?;
        Ok(aside)
    }

    /// Written to a temporary file and renamed over the old one: a crash never leaves a
    /// half-written state.
    pub fn save(&self, state: &SavedAgent) -> anyhow::Result<()> {
        let dir = self.path.parent().context("state path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).context("serializing the state")?;
        let written = std::fs::write(&tmp, text)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|()| {
                std::fs::rename(&tmp, &self.path)
                    .with_context(|| format!("replacing {}", self.path.display()))
            });
        if written.is_err() {
            // A partial temporary file (the disk filled up) would only take more space.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
            // Empty parents (netns-<name>/, /run/lb) go too; an error only means another
            // interface still has state there, which stays.
            let mut parent = dir.parent();
            while let Some(p) = parent.filter(|p| p.starts_with("/run/lb")) {
                if std::fs::remove_dir(p).is_err() {
                    break;
                }
                parent = p.parent();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_state_file_still_loads() {
        // What agents before the lifecycle wrote: ids only.
        let old = r#"{"vips":[{"name":"web","id":0,"address":"198.18.200.1","port":80,"proto":6}],
            "backends":[{"group":"g","address":"198.18.11.2","id":0}],
            "next_backend":1,"freed_backends":[]}"#;
        let saved: SavedAgent = serde_json::from_str(old).expect("parses");
        assert_eq!(saved.services.vips.len(), 1);
        assert_eq!(saved.services.next_backend, 1);
        assert!(saved.running_config.is_none());
        let again: SavedAgent =
            serde_json::from_str(&serde_json::to_string(&saved).expect("json")).expect("json");
        assert_eq!(again, saved);
    }
}
