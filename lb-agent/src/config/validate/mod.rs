//! Checking a parsed file and turning it into a [`Config`]: the entry point, and the
//! report every check writes its problems and warnings to.
//!
//! Each item is checked on its own first (a draft keeps whatever parsed), then the items
//! are checked against each other using the parts that did parse ([`cross`]), so one bad
//! value does not hide unrelated problems. Every problem reads `<item>: field "<field>":
//! <why>`, where the item is `agent`, `vip "<name>"`, `target_group "<name>"` or
//! `target_group "<name>": target <address>` (`#<n>`, counted from 1 in file order, when
//! there is no name or address to show).
//!
//! One file per TOML table: [`agent`], [`metrics`], [`announce`], [`vip`], [`group`] (with its
//! targets), [`health`] and [`agent_check`] (the group's two check tables); [`address`]
//! parses the addresses and prefixes several tables hold.

mod address;
mod agent;
mod agent_check;
mod announce;
mod cross;
mod group;
mod health;
mod metrics;
mod vip;

use std::{fmt, ops::RangeInclusive};

use super::{raw, Config, TargetGroup, Vip};
use group::GroupDraft;
pub(crate) use metrics::host_port;
use vip::VipDraft;

/// How much the data plane holds.
pub(super) struct Limits {
    pub max_vips: usize,
    /// Targets across all groups: each (group, address) is one data-plane backend.
    pub max_targets: usize,
}

impl Limits {
    pub const DATA_PLANE: Self = Self {
        max_vips: lb_common::service::MAX_VIPS as usize,
        max_targets: lb_common::service::MAX_BACKENDS as usize,
    };
}

const NAME_MAX: usize = 64;
/// A port a packet or a check is sent to.
const NONZERO_PORT: RangeInclusive<i64> = 1..=65535;

/// Checks `file` as a whole: the configuration, or every problem found.
pub(super) fn validate(file: &raw::File, limits: &Limits) -> Result<Config, Vec<String>> {
    let mut r = Report::default();
    let agent = agent::agent(&mut r, &file.agent);
    let metrics = metrics::metrics(&mut r, &file.metrics);
    let announce = announce::announce(&mut r, &file.announce);
    let vips: Vec<VipDraft<'_>> = file
        .vip
        .iter()
        .enumerate()
        .map(|(i, v)| vip::vip(&mut r, i, v))
        .collect();
    let mut groups: Vec<GroupDraft<'_>> = file
        .target_group
        .iter()
        .enumerate()
        .map(|(i, g)| group::group(&mut r, i, g))
        .collect();
    cross::cross_check(&mut r, &vips, &mut groups, limits);

    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    let vips: Option<Vec<Vip>> = vips.into_iter().map(VipDraft::finish).collect();
    let groups: Option<Vec<TargetGroup>> = groups.into_iter().map(GroupDraft::finish).collect();
    match (vips, groups) {
        (Some(vips), Some(target_groups)) => Ok(Config {
            agent,
            metrics,
            announce,
            vips,
            target_groups,
            warnings: r.warnings,
        }),
        // Every value left unset was reported above; this is a bug in this module.
        _ => Err(vec![
            "internal error: a value was rejected without a reason".to_owned(),
        ]),
    }
}

/// Problems and warnings found so far, and helpers that check one value and report it.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Report {
    fn problem(&mut self, item: &str, field: &str, why: impl fmt::Display) {
        self.problems
            .push(format!("{item}: field \"{field}\": {why}"));
    }

    fn warn(&mut self, item: &str, field: &str, why: impl fmt::Display) {
        self.warnings
            .push(format!("{item}: field \"{field}\": {why}"));
    }

    fn missing(&mut self, item: &str, field: &str) {
        self.problem(item, field, "missing (required)");
    }

    /// The value of a check, or `None` after reporting why it failed.
    fn ok<T>(&mut self, item: &str, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|why| self.problem(item, field, why)).ok()
    }

    fn required<'a>(&mut self, item: &str, field: &str, value: Option<&'a str>) -> Option<&'a str> {
        if value.is_none() {
            self.missing(item, field);
        }
        value
    }

    /// An integer in `range`, or `default` when absent.
    fn int<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
        default: T,
    ) -> Option<T> {
        match value {
            None => Some(default),
            Some(v) => self.in_range(item, field, v, range),
        }
    }

    fn required_int<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        match value {
            None => {
                self.missing(item, field);
                None
            }
            Some(v) => self.in_range(item, field, v, range),
        }
    }

    fn in_range<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: i64,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        match T::try_from(value) {
            Ok(v) if range.contains(&value) => Some(v),
            _ => {
                self.problem(item, field, out_of_range(value, &range));
                None
            }
        }
    }

    /// One of the names in `choices`, or `default` when absent (`None`: required).
    fn choice<T: Copy>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<&str>,
        choices: &[(&str, T)],
        default: Option<T>,
    ) -> Option<T> {
        let Some(text) = value else {
            if default.is_none() {
                self.missing(item, field);
            }
            return default;
        };
        if let Some(&(_, v)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(v);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.problem(
            item,
            field,
            format!("{text:?} is not one of {}", names.join(", ")),
        );
        None
    }
}

fn out_of_range(value: i64, range: &RangeInclusive<i64>) -> String {
    format!(
        "{value} is out of range: must be between {} and {}",
        range.start(),
        range.end()
    )
}

/// How an item is named in messages: by name, else by position.
fn label(kind: &str, index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{kind} {n:?}"),
        _ => format!("{kind} #{}", index + 1),
    }
}

/// The required `name` of a VIP or a target group. A name that breaks the rules is
/// reported and still returned, so that the cross-checks can use it.
fn name<'a>(r: &mut Report, item: &str, value: Option<&'a str>) -> Option<&'a str> {
    let name = r.required(item, "name", value);
    if let Some(name) = name {
        r.ok(item, "name", check_name(name));
    }
    name
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; names use only letters, digits, '.', '_' and '-'"
        ));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "is {} characters long; at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    Ok(())
}
