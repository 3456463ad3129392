//! The configuration as written, before checking, and the runtime edits made to it.
//!
//! A [`Draft`] holds what the file said (absent keys stay absent, so their defaults keep
//! applying); [`Draft::validate`] is the one check every configuration goes through,
//! whether read from a file or edited at runtime. An edit is made on a copy and checked
//! as a whole: only a valid result replaces the draft, so a refused edit changes nothing.

use std::{net::IpAddr, path::Path};

use super::{line_column, raw, validate, Config, ConfigError};
use crate::admin::protocol::VipSpec;

/// First lines of [`Draft::to_toml`].
const HEADER: &str = "\
# Written by lb-agent: the running configuration (as read from its file, with runtime edits
# applied). Comments of the original file are not kept; examples/lb.toml documents every
# key. Keys left out take their defaults.
";

/// A configuration as written: parsed as TOML in the file's shape, not yet validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    file: raw::File,
}

/// Why a runtime edit was refused; the draft is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The VIP, target group or target to change does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The VIP or target to add exists already.
    #[error("{0}")]
    Exists(String),
    /// The edited configuration fails validation: every problem, as for a file.
    #[error(transparent)]
    Invalid(ConfigError),
}

impl Draft {
    /// Parses `text` as TOML in the configuration's shape (unknown keys and wrong types
    /// are [`ConfigError::Syntax`] errors, with line and column); values are not checked.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_as(text, None)
    }

    /// Reads and parses the file at `path` (see [`Draft::parse`]); errors name the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_as(&text, Some(path))
    }

    pub(super) fn parse_as(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Syntax {
                path: path.map(Path::to_owned),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        Ok(Self { file })
    }

    /// Checks the draft as a whole: the configuration, or [`ConfigError::Invalid`] with
    /// every problem.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        self.validate_as(None, &validate::Limits::DATA_PLANE)
    }

    pub(super) fn validate_as(
        &self,
        path: Option<&Path>,
        limits: &validate::Limits,
    ) -> Result<Config, ConfigError> {
        validate::validate(&self.file, limits).map_err(|problems| ConfigError::Invalid {
            path: path.map(Path::to_owned),
            problems,
        })
    }

    /// The draft as a configuration file: a header comment, then the keys that are set,
    /// in the file's order. Parsing it gives back this draft.
    pub fn to_toml(&self) -> String {
        match toml::to_string(&self.file) {
            Ok(body) => format!("{HEADER}\n{body}"),
            // The raw types are plain tables of strings, integers and booleans, with
            // every table's plain keys before its sub-tables: serializing cannot fail.
            // Should it, the output says so rather than looking like an empty file.
            Err(e) => format!("{HEADER}# cannot write the configuration as TOML: {e}\n"),
        }
    }

    /// Adds a VIP (to the end of the file). Its `fragments` key is left out: a VIP added
    /// at runtime takes the default, as the command line offers no other.
    pub fn add_vip(&mut self, vip: VipSpec) -> Result<Config, EditError> {
        self.edit(|file| {
            if file
                .vip
                .iter()
                .any(|v| v.name.as_deref() == Some(&vip.name))
            {
                return Err(EditError::Exists(format!(
                    "a VIP named {:?} already exists",
                    vip.name
                )));
            }
            group_mut(file, &vip.target_group)?;
            file.vip.push(raw::Vip {
                name: Some(vip.name),
                address: Some(vip.address.to_string()),
                port: Some(vip.port.into()),
                protocol: Some(vip.proto.as_str().to_owned()),
                mode: vip.mode,
                gue_port: vip.gue_port.map(i64::from),
                hash: vip.hash,
                ring_size: vip.ring_size.map(i64::from),
                fragments: None,
                announce: vip.announce,
                announce_min_healthy: vip.announce_min_healthy.map(i64::from),
                target_group: Some(vip.target_group),
            });
            Ok(())
        })
    }

    /// Removes the VIP called `name`.
    pub fn remove_vip(&mut self, name: &str) -> Result<Config, EditError> {
        self.edit(|file| {
            let i = file
                .vip
                .iter()
                .position(|v| v.name.as_deref() == Some(name))
                .ok_or_else(|| EditError::NotFound(format!("no VIP named {name:?}")))?;
            file.vip.remove(i);
            Ok(())
        })
    }

    /// Adds a target to `group` (weight `None`: the default).
    pub fn add_target(
        &mut self,
        group: &str,
        address: IpAddr,
        weight: Option<u16>,
    ) -> Result<Config, EditError> {
        self.edit(|file| {
            let g = group_mut(file, group)?;
            if target_index(g, address).is_some() {
                return Err(EditError::Exists(format!(
                    "target {address} is already in target group {group:?}"
                )));
            }
            g.target.push(raw::Target {
                address: Some(address.to_string()),
                weight: weight.map(i64::from),
            });
            Ok(())
        })
    }

    /// Removes the target at `address` from `group`.
    pub fn remove_target(&mut self, group: &str, address: IpAddr) -> Result<Config, EditError> {
        self.edit(|file| {
            let g = group_mut(file, group)?;
            let i = existing_target(g, group, address)?;
            g.target.remove(i);
            Ok(())
        })
    }

    /// Sets the weight of the target at `address` in `group`.
    pub fn set_weight(
        &mut self,
        group: &str,
        address: IpAddr,
        weight: u16,
    ) -> Result<Config, EditError> {
        self.edit(|file| {
            let g = group_mut(file, group)?;
            let i = existing_target(g, group, address)?;
            g.target[i].weight = Some(weight.into());
            Ok(())
        })
    }

    /// Applies `change` to a copy and validates it; only a valid result replaces `self`.
    fn edit(
        &mut self,
        change: impl FnOnce(&mut raw::File) -> Result<(), EditError>,
    ) -> Result<Config, EditError> {
        let mut next = self.clone();
        change(&mut next.file)?;
        let config = next.validate().map_err(EditError::Invalid)?;
        *self = next;
        Ok(config)
    }
}

fn group_mut<'a>(
    file: &'a mut raw::File,
    name: &str,
) -> Result<&'a mut raw::TargetGroup, EditError> {
    file.target_group
        .iter_mut()
        .find(|g| g.name.as_deref() == Some(name))
        .ok_or_else(|| EditError::NotFound(format!("no target group named {name:?}")))
}

/// The position of the target at `address`, compared as addresses (so `2001:2::1` and
/// `2001:2:0::1` are one target).
fn target_index(group: &raw::TargetGroup, address: IpAddr) -> Option<usize> {
    group
        .target
        .iter()
        .position(|t| t.address.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) == Some(address))
}

fn existing_target(
    group: &raw::TargetGroup,
    name: &str,
    address: IpAddr,
) -> Result<usize, EditError> {
    target_index(group, address).ok_or_else(|| {
        EditError::NotFound(format!("target {address} is not in target group {name:?}"))
    })
}
