//! lb's routes in the kernel's announce table, through rtnetlink: listing, adding and
//! deleting them, reconciling the table with what the agent wants ([`sync`]), and the
//! task that keeps it so ([`Announcer`]).
//!
//! Only routes of protocol [`RTPROT_LB`] in the announce table are lb's: anything else
//! in that table is never touched. A route whose metric must change (a new route tag, or
//! announced ↔ standby) is added with the new metric before the old one is deleted, so
//! the routing daemon always has one to export and the address is never withdrawn in
//! between.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
    },
    Handle, RouteMessageBuilder,
};
use tokio::sync::watch;
use tracing::{error, info};

use super::RTPROT_LB;

/// The kernel's "no such route" (a delete of a route already gone).
const ESRCH: i32 = libc::ESRCH;
/// "No such table" (a dump of a table that never had a route).
const ENOENT: i32 = libc::ENOENT;
/// How often the task re-reads the table even when nothing changed: it puts back a
/// route someone deleted (`ip route flush table 100`) and retries after a failure.
const RECHECK: Duration = Duration::from_secs(2);

/// One of lb's routes: a host route to `address` with this metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub address: IpAddr,
    pub metric: u32,
}

/// What [`sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Route>,
    pub deleted: Vec<Route>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.deleted.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("listing the routes of table {table}: {source}")]
    List {
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("adding {address}/{len} metric {metric} to table {table}: {source}", len = prefix_len(*.address))]
    Add {
        address: IpAddr,
        metric: u32,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting {address}/{len} metric {metric} from table {table}: {source}", len = prefix_len(*.address))]
    Delete {
        address: IpAddr,
        metric: u32,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
}

fn prefix_len(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// A netlink connection, its driver spawned on the current tokio runtime. Strict
/// checking makes the kernel filter route dumps by table and protocol, so listing lb's
/// routes costs the same on a host holding a full Internet table.
pub fn connect() -> Result<Handle, RouteError> {
    let (connection, handle, _) =
        rtnetlink::new_connection_with_strict_check().map_err(RouteError::Connect)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// lb's routes in `table`, both families.
pub async fn list(handle: &Handle, table: u32) -> Result<Vec<Route>, RouteError> {
    let mut routes = Vec::new();
    for dump in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(dump_filter(dump, table)).execute();
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => routes.extend(ours(&msg, table)),
                Ok(None) => break,
                // The kernel creates a table with its first route: none yet, none of ours.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENOENT => break,
                Err(source) => return Err(RouteError::List { table, source }),
            }
        }
    }
    routes.sort();
    Ok(routes)
}

/// A dump request the kernel filters to lb's blackhole routes in `table` (header
/// fields a strict dump does not filter on must be zero).
fn dump_filter(mut msg: RouteMessage, table: u32) -> RouteMessage {
    msg.header.destination_prefix_length = 0;
    msg.header.source_prefix_length = 0;
    msg.header.tos = 0;
    msg.header.scope = RouteScope::Universe;
    msg.header.protocol = RouteProtocol::from(RTPROT_LB);
    msg.header.kind = RouteType::BlackHole;
    msg.attributes.clear();
    if let Ok(small) = u8::try_from(table) {
        msg.header.table = small;
    } else {
        msg.header.table = 0;
        msg.attributes.push(RouteAttribute::Table(table));
    }
    msg
}

/// `msg` as one of lb's routes in `table`, if it is one.
fn ours(msg: &RouteMessage, table: u32) -> Option<Route> {
    if u8::from(msg.header.protocol) != RTPROT_LB {
        return None;
    }
    let mut msg_table = u32::from(msg.header.table);
    let mut address = None;
    let mut metric = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => msg_table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => address = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => address = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let address = address?;
    (msg_table == table && msg.header.destination_prefix_length == prefix_len(address))
        .then_some(Route { address, metric })
}

fn message(table: u32, route: Route) -> RouteMessage {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.address, prefix_len(route.address))
        // A host address with its own length is always a valid prefix.
        .unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new());
    builder
        .table_id(table)
        .priority(route.metric)
        .protocol(RouteProtocol::from(RTPROT_LB))
        .kind(RouteType::BlackHole)
        .build()
}

/// Adds `route` to `table` (replacing an identical one).
pub async fn add(handle: &Handle, table: u32, route: Route) -> Result<(), RouteError> {
    handle
        .route()
        .add(message(table, route))
        .replace()
        .execute()
        .await
        .map_err(|source| RouteError::Add {
            address: route.address,
            metric: route.metric,
            table,
            source,
        })
}

/// Deletes `route` from `table`; a route already gone is not an error.
pub async fn delete(handle: &Handle, table: u32, route: Route) -> Result<(), RouteError> {
    match handle.route().del(message(table, route)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ESRCH => Ok(()),
        Err(source) => Err(RouteError::Delete {
            address: route.address,
            metric: route.metric,
            table,
            source,
        }),
    }
}

/// Makes lb's routes in `table` exactly `wanted` (address → metric): missing routes
/// first, then the ones no longer wanted (see the module docs for why in that order).
pub async fn sync(
    handle: &Handle,
    table: u32,
    wanted: &BTreeMap<IpAddr, u32>,
) -> Result<Changes, RouteError> {
    let current = list(handle, table).await?;
    let mut changes = Changes::default();
    for (&address, &metric) in wanted {
        let route = Route { address, metric };
        if !current.contains(&route) {
            add(handle, table, route).await?;
            changes.added.push(route);
        }
    }
    for route in current {
        if wanted.get(&route.address) != Some(&route.metric) {
            delete(handle, table, route).await?;
            changes.deleted.push(route);
        }
    }
    Ok(changes)
}

/// Deletes every lb route from `table`; returns the routes deleted.
pub async fn withdraw(table: u32) -> Result<Vec<Route>, RouteError> {
    let handle = connect()?;
    Ok(sync(&handle, table, &BTreeMap::new()).await?.deleted)
}

/// [`withdraw`] for a caller outside any runtime (`lb-agent down`): runs its own.
pub fn withdraw_blocking(table: u32) -> Result<Vec<Route>, RouteError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RouteError::Connect)?
        .block_on(withdraw(table))
}

/// What the agent wants in the kernel: these routes in this table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub table: u32,
    pub routes: BTreeMap<IpAddr, u32>,
}

/// What the task last did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The [`Wanted`] it applied (none before the first).
    pub wanted: Option<Wanted>,
    /// When the table last matched it.
    pub at: Option<SystemTime>,
    /// The last failure, cleared by the next success.
    pub error: Option<String>,
}

/// The task that keeps the announce table as the agent wants it. The agent hands it
/// each new [`Wanted`]; it applies it at once, and re-checks every [`RECHECK`]. Nothing
/// is written before the first `Wanted`, so a starting agent changes no route until it
/// knows what it wants. Dropping the `Announcer` stops the task and leaves the routes.
pub struct Announcer {
    wanted: watch::Sender<Option<Wanted>>,
    applied: watch::Receiver<Applied>,
}

impl Announcer {
    /// Starts the task on the current tokio runtime.
    pub fn spawn() -> Result<Self, RouteError> {
        let handle = connect()?;
        let (wanted, wanted_rx) = watch::channel(None);
        let (applied_tx, applied) = watch::channel(Applied::default());
        tokio::spawn(keep(handle, wanted_rx, applied_tx));
        Ok(Self { wanted, applied })
    }

    /// Asks for `wanted` (nothing happens when it is what was asked last).
    pub fn want(&self, wanted: Wanted) {
        self.wanted.send_if_modified(|w| {
            let changed = w.as_ref() != Some(&wanted);
            *w = Some(wanted);
            changed
        });
    }

    /// What the task last applied.
    pub fn applied(&self) -> Applied {
        self.applied.borrow().clone()
    }

    /// Waits up to `timeout` until the table holds what was last asked for.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let target = self.wanted.borrow().clone();
        let mut applied = self.applied.clone();
        tokio::time::timeout(
            timeout,
            applied.wait_for(|a| a.wanted == target && a.error.is_none()),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

async fn keep(
    handle: Handle,
    mut wanted: watch::Receiver<Option<Wanted>>,
    applied: watch::Sender<Applied>,
) {
    let mut previous_table: Option<u32> = None;
    loop {
        let current = wanted.borrow_and_update().clone();
        if let Some(want) = current {
            let result = apply(&handle, previous_table, &want).await;
            match result {
                Ok(()) => {
                    previous_table = Some(want.table);
                    applied.send_replace(Applied {
                        wanted: Some(want),
                        at: Some(SystemTime::now()),
                        error: None,
                    });
                }
                Err(e) => {
                    error!("announce table: {e}");
                    applied.send_modify(|a| a.error = Some(e.to_string()));
                }
            }
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Applies `want`, first emptying the previous table if the table changed.
async fn apply(handle: &Handle, previous: Option<u32>, want: &Wanted) -> Result<(), RouteError> {
    if let Some(old) = previous.filter(|t| *t != want.table) {
        let gone = sync(handle, old, &BTreeMap::new()).await?;
        for r in gone.deleted {
            info!(address = %r.address, table = old, "route removed from the previous announce table");
        }
    }
    let changes = sync(handle, want.table, &want.routes).await?;
    for r in &changes.added {
        info!(address = %r.address, metric = r.metric, table = want.table, "route added to the announce table");
    }
    for r in &changes.deleted {
        info!(address = %r.address, metric = r.metric, table = want.table, "route deleted from the announce table");
    }
    Ok(())
}
