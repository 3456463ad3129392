//! BIRD 2 for the fleet topology: the example configurations (`examples/bird-*.conf`)
//! with a site's values put into their `define`s, one `bird` daemon per namespace, `birdc`
//! queries, and the router's paths for a VIP read from `birdc show route all`.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};

use crate::netns::{wait_until, ChildGuard, Ns};

/// The lb host's BIRD configuration, as an operator copies it.
pub fn host_example() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bird-host.conf"
    ))
}

/// The router's BIRD configuration, as an operator copies it.
pub fn router_example() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bird-router.conf"
    ))
}

/// Fails with the reason when `bird` or `birdc` cannot run here, so a fleet test never
/// passes without having run BIRD.
pub fn require_bird() -> anyhow::Result<()> {
    for tool in ["bird", "birdc"] {
        let out = Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        match out {
            // birdc has no --version and exits non-zero, but ran.
            Ok(_) => {}
            Err(e) => bail!(
                "cannot run `{tool}` ({e}): the fleet tests need BIRD 2 (Debian package bird2; \
                 `cargo xtask setup` installs it)"
            ),
        }
    }
    Ok(())
}

/// `text` (a BIRD configuration) with the value of each `define NAME = …;` in `values`
/// replaced. Every name must be defined exactly once, so a renamed define in an example
/// fails here instead of leaving the example's value in place.
pub fn set_defines(text: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (name, value) in values {
        let prefix = format!("define {name} =");
        let mut found = 0;
        for line in lines.iter_mut().filter(|l| l.starts_with(&prefix)) {
            *line = format!("define {name} = {value};");
            found += 1;
        }
        ensure!(
            found == 1,
            "`define {name}` appears {found} times in the configuration, not once"
        );
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// The example at `path` with `values` set (see [`set_defines`]).
pub fn render(path: &Path, values: &[(&str, String)]) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    set_defines(&text, values).with_context(|| format!("in {}", path.display()))
}

/// One running `bird`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Bird {
    process: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
    name: String,
}

impl Bird {
    /// Writes `config` to `<dir>/<name>.conf` and runs `bird -f` with it in `ns`, its
    /// control socket at `<dir>/<name>.ctl` and its output in `<dir>/<name>.log`. Returns
    /// once `birdc` answers.
    pub fn start(ns: &Ns, dir: &Path, name: &str, config: &str) -> anyhow::Result<Self> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let (conf_s, socket_s) = (path_str(&conf)?, path_str(&socket)?);
        // -f: in the foreground, so the guard holds bird itself (`ip netns exec` execs it
        // in place) and nothing daemonizes out of reach.
        let mut cmd = ns.command("bird", &["-f", "-c", conf_s, "-s", socket_s]);
        cmd.stdout(out).stderr(err);
        let process = ChildGuard::new(
            cmd.spawn().context("starting bird")?,
            format!("bird {name} in {}", ns.name),
        );
        let mut bird = Self {
            process,
            socket,
            log,
            name: name.to_owned(),
        };
        let up = wait_until(Duration::from_secs(10), || {
            bird.birdc(&["show", "status"]).is_ok()
        });
        if !up {
            let exited = bird.process.try_wait()?;
            bail!(
                "bird {name} did not answer on its socket within 10 s (exit: {exited:?}); its log:\n{}",
                bird.log_text()
            );
        }
        Ok(bird)
    }

    /// Runs `birdc -s <socket> <args…>`; the reply without birdc's greeting line.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success() && !text.contains("Unable to connect"),
            "birdc {args:?} on {}: {} {}",
            self.name,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(text
            .split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default())
    }

    /// What bird printed so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// SIGKILL: the daemon dies as in a crash, without telling its peers anything.
    pub fn kill(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.process.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        ensure!(
            wait_until(Duration::from_secs(5), || matches!(
                self.process.try_wait(),
                Ok(Some(_))
            )),
            "bird {} survived SIGKILL",
            self.name
        );
        Ok(())
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

/// One BGP path of a route in `birdc show route all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterPath {
    /// The BGP session it came from (`lb1`, `lb2`, … for the router's dynamic sessions).
    pub protocol: String,
    /// Where the router forwards it: the announcing host's address on the LAN.
    pub next_hop: IpAddr,
    /// BGP.as_path, the announcing host's AS first.
    pub as_path: Vec<u32>,
    /// BGP.large_community, as (global, local 1, local 2).
    pub large_communities: Vec<(u32, u32, u32)>,
    /// BIRD's best path (`*`).
    pub best: bool,
    /// When BIRD last changed it (`timeformat route iso long ms`).
    pub since: String,
}

impl RouterPath {
    /// The host's route tag, from the large community (AS, 1, tag).
    pub fn route_tag(&self) -> Option<u32> {
        self.large_communities
            .iter()
            .find(|c| c.1 == 1)
            .map(|c| c.2)
    }

    /// A standby announcement (large community (AS, 2, 1)).
    pub fn standby(&self) -> bool {
        self.large_communities.iter().any(|c| c.1 == 2 && c.2 == 1)
    }
}

/// The paths in the output of `birdc show route all for <prefix>` (or `show route all
/// <prefix>`), in BIRD's order. Lines that are not part of a BGP path are ignored.
pub fn parse_routes(text: &str) -> anyhow::Result<Vec<RouterPath>> {
    let mut paths = Vec::new();
    let mut current: Option<(String, bool, String)> = None;
    let mut next_hop = None;
    let mut as_path = Vec::new();
    let mut communities = Vec::new();
    let mut finish = |cur: Option<(String, bool, String)>,
                      hop: Option<IpAddr>,
                      as_path: Vec<u32>,
                      communities: Vec<(u32, u32, u32)>|
     -> anyhow::Result<()> {
        if let Some((protocol, best, since)) = cur {
            let next_hop = hop.with_context(|| format!("path from {protocol} has no next hop"))?;
            paths.push(RouterPath {
                protocol,
                next_hop,
                as_path,
                large_communities: communities,
                best,
                since,
            });
        }
        Ok(())
    };
    for line in text.lines() {
        if let Some(attr) = line.strip_prefix('\t') {
            let attr = attr.trim();
            if let Some(rest) = attr.strip_prefix("via ") {
                next_hop = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            } else if let Some(rest) = attr.strip_prefix("BGP.as_path:") {
                as_path = rest
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("bad AS path {rest:?}"))?;
            } else if let Some(rest) = attr.strip_prefix("BGP.large_community:") {
                communities = parse_large_communities(rest)?;
            }
            continue;
        }
        // A path's header: `<prefix>  unicast [proto time…] * (100) [AS65001i]`, the
        // prefix left blank on the second and later paths of a route.
        let Some((_, after)) = line.split_once(" [") else {
            continue;
        };
        if !line.contains("unicast") {
            continue;
        }
        let Some((inside, tail)) = after.split_once(']') else {
            continue;
        };
        let mut words = inside.split_whitespace();
        let protocol = words.next().unwrap_or_default().to_owned();
        let since: Vec<&str> = words.take_while(|w| *w != "from").collect();
        let best = tail.trim_start().starts_with('*');
        let previous = current.replace((protocol, best, since.join(" ")));
        finish(
            previous,
            next_hop.take(),
            std::mem::take(&mut as_path),
            std::mem::take(&mut communities),
        )?;
    }
    finish(current, next_hop, as_path, communities)?;
    Ok(paths)
}

/// `(65001, 1, 12345) (65001, 2, 1)` → the triples.
fn parse_large_communities(text: &str) -> anyhow::Result<Vec<(u32, u32, u32)>> {
    text.split(')')
        .map(|part| part.trim().trim_start_matches('(').trim())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let n: Vec<u32> = part
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad large community {part:?}"))?;
            match n[..] {
                [a, b, c] => Ok((a, b, c)),
                _ => bail!("bad large community {part:?}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_are_replaced_once_each() -> anyhow::Result<()> {
        let text = "# x\ndefine A = 1;\ndefine AB = 2;\nrouter id A;\n";
        let out = set_defines(text, &[("A", "7".into()), ("AB", "8".into())])?;
        assert_eq!(out, "# x\ndefine A = 7;\ndefine AB = 8;\nrouter id A;\n");
        assert!(set_defines(text, &[("C", "1".into())]).is_err());
        assert!(set_defines("define A = 1;\ndefine A = 2;\n", &[("A", "3".into())]).is_err());
        Ok(())
    }

    #[test]
    fn the_examples_define_what_the_fleet_sets() -> anyhow::Result<()> {
        let host = [
            "ROUTER_ID",
            "LOCAL_AS",
            "ROUTER_ADDR",
            "ROUTER_AS",
            "LB_TABLE",
        ];
        let values: Vec<(&str, String)> = host.iter().map(|n| (*n, "1".to_owned())).collect();
        render(&host_example(), &values)?;
        let router = [
            "ROUTER_ID",
            "LOCAL_AS",
            "LB_AS",
            "LB_HOSTS",
            "VIPS4",
            "VIPS6",
        ];
        let values: Vec<(&str, String)> = router.iter().map(|n| (*n, "1".to_owned())).collect();
        render(&router_example(), &values)?;
        Ok(())
    }

    #[test]
    fn parses_show_route_all() -> anyhow::Result<()> {
        let text = "Table master4:
198.19.0.1/32        unicast [lb2 2026-12-03 15:29:38.694] * (100) [AS65001i]
\tvia 198.18.0.10 on r1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001
\tBGP.next_hop: 198.18.0.10
\tBGP.local_pref: 100
\tBGP.large_community: (65001, 1, 12345)
                     unicast [lb1 2026-12-03 15:29:43.802] (100) [AS65001i]
\tvia 198.18.0.11 on r1
\tType: BGP univ
\tBGP.as_path: 65001 65001 65001
\tBGP.large_community: (65001, 1, 12345) (65001, 2, 1)

Table master6:
2001:2:0:f::1/128    unicast [lb3 2026-12-03 15:29:38.694 from 198.18.0.12] * (100) [AS65001i]
\tvia 2001:2::12 on r1
\tBGP.as_path: 65001
\tBGP.next_hop: 2001:2::12 fe80::1
";
        let paths = parse_routes(text)?;
        assert_eq!(paths.len(), 3);
        assert_eq!(paths[0].protocol, "lb2");
        assert!(paths[0].best);
        assert_eq!(paths[0].since, "2026-12-03 15:29:38.694");
        assert_eq!(paths[0].next_hop, "198.18.0.10".parse::<IpAddr>()?);
        assert_eq!(paths[0].route_tag(), Some(12345));
        assert!(!paths[0].standby());
        assert_eq!(paths[1].as_path, [65001, 65001, 65001]);
        assert!(paths[1].standby());
        assert!(!paths[1].best);
        assert_eq!(paths[1].route_tag(), Some(12345));
        assert_eq!(paths[2].next_hop, "2001:2::12".parse::<IpAddr>()?);
        assert_eq!(paths[2].since, "2026-12-03 15:29:38.694");
        assert_eq!(paths[2].route_tag(), None);
        Ok(())
    }
}
