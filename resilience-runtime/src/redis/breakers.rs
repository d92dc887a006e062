//! Breaker state shared by the fleet: each replica's transitions published, the fleet's open
//! breakers read back every sync, and half-open probes leased.
//!
//! Keys of the breaker `name` (one hash tag, so one slot): `{b:name}:open`, a sorted set of the
//! members open for the fleet scored by when they close; `{b:name}:trips:<member>`, the replicas
//! that tripped a member within its cooldown; `{b:name}:probe:<member>:<i>`, probe slot `i`. A
//! member is `*` for the named breaker, `key:<key>` for a per-key one (its key as every output
//! shows it: redacted for a sensitive base, and whenever it holds a brace).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::scripts;
use super::task::{self, Op, RoundTripError, round_trip};
use super::{Inner, lock};
use crate::breaker::{Breaker, BreakerState};
use crate::registry::KeyedBreakers;
use crate::store::BreakerStore;

/// A breaker of a name, in Redis: (name, member).
type Instance = (Arc<str>, String);
/// This replica's live breakers of one name, named and per-key.
type LiveOfName = (Arc<str>, Vec<Arc<Breaker>>, Vec<Arc<KeyedBreakers>>);

/// The breakers this backend serves, by name, and the probe slots this replica holds.
#[derive(Default)]
pub(super) struct Registered {
    names: Mutex<BTreeMap<Arc<str>, Local>>,
    /// Probe slots held, and the slots there are, by (name, member).
    held: Mutex<HashMap<Instance, (u32, u32)>>,
}

/// This replica's breakers of one name: held weakly, so that a dropped registry is not kept.
#[derive(Default)]
struct Local {
    named: Vec<Weak<Breaker>>,
    keyed: Vec<Weak<KeyedBreakers>>,
}

impl Registered {
    pub(super) fn attach_named(
        &self,
        inner: &Arc<Inner>,
        breaker: &Arc<Breaker>,
        quorum: u32,
    ) -> Arc<dyn BreakerStore> {
        let name: Arc<str> = breaker.base_name().into();
        let mut names = lock(&self.names);
        let local = names.entry(name).or_default();
        local.named.retain(|w| w.strong_count() > 0);
        local.named.push(Arc::downgrade(breaker));
        Arc::new(Store::new(inner, quorum))
    }

    pub(super) fn attach_keyed(
        &self,
        inner: &Arc<Inner>,
        keyed: &Arc<KeyedBreakers>,
        quorum: u32,
    ) -> Arc<dyn BreakerStore> {
        let name: Arc<str> = keyed.name().into();
        let mut names = lock(&self.names);
        let local = names.entry(name).or_default();
        local.keyed.retain(|w| w.strong_count() > 0);
        local.keyed.push(Arc::downgrade(keyed));
        Arc::new(Store::new(inner, quorum))
    }

    fn held(&self, name: &str, member: &str) -> u32 {
        // A look-up by borrowed parts would need a custom key; this path is cold.
        lock(&self.held)
            .get(&(Arc::from(name), member.to_owned()))
            .map_or(0, |h| h.0)
    }

    fn set_held(&self, name: Arc<str>, member: String, n: u32, slots: u32) {
        let mut held = lock(&self.held);
        if n == 0 {
            held.remove(&(name, member));
        } else {
            held.insert((name, member), (n, slots));
        }
    }
}

/// How `b` is known in Redis within its name.
fn member(b: &Breaker) -> String {
    match b.key() {
        None => "*".to_owned(),
        Some(k) if k.contains(['{', '}']) => format!(
            "key:{}",
            crate::redact::redacted_key(b.base_name(), b.raw_key().unwrap_or_default())
        ),
        Some(k) => format!("key:{k}"),
    }
}

fn tag(name: &str) -> String {
    format!("b:{name}")
}

fn open_key(inner: &Inner, name: &str) -> String {
    inner.key(&tag(name), ":open")
}

fn trips_key(inner: &Inner, name: &str, member: &str) -> String {
    inner.key(&tag(name), &format!(":trips:{member}"))
}

fn slot_keys(inner: &Inner, name: &str, member: &str, slots: u32) -> Vec<String> {
    (0..slots.max(1))
        .map(|i| inner.key(&tag(name), &format!(":probe:{member}:{i}")))
        .collect()
}

/// A probe slot's lifetime: renewed every sync while held, so a replica that dies while probing
/// frees its slot within three sync intervals.
fn lease_ms(inner: &Inner) -> u64 {
    millis(inner.config.sync_interval * 3).max(10)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The store of a breaker name served by Redis.
pub(super) struct Store {
    inner: Arc<Inner>,
    quorum: u32,
}

impl Store {
    fn new(inner: &Arc<Inner>, quorum: u32) -> Store {
        Store {
            inner: inner.clone(),
            quorum: quorum.max(1),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBreakerStore")
            .field("backend", &self.inner.config.shown)
            .field("quorum", &self.quorum)
            .finish()
    }
}

impl BreakerStore for Store {
    fn transitioned(&self, b: &Breaker, from: BreakerState, to: BreakerState, by_store: bool) {
        task::start(&self.inner);
        if by_store {
            return; // the fleet's own decision, read from it
        }
        let name: Arc<str> = b.base_name().into();
        let member = member(b);
        let config = b.config();
        let cooldown_ms = millis(config.cooldown);
        let slots = config.half_open_probes;
        let registered = &self.inner.breakers;
        let op = match (from, to) {
            (BreakerState::HalfOpen, BreakerState::Closed) => {
                registered.set_held(name.clone(), member.clone(), 0, slots);
                Op::Close {
                    name,
                    member,
                    slots,
                }
            }
            (BreakerState::HalfOpen, BreakerState::Open) if registered.held(&name, &member) > 0 => {
                registered.set_held(name.clone(), member.clone(), 0, slots);
                Op::Reopen {
                    name,
                    member,
                    cooldown_ms,
                    slots,
                }
            }
            (_, BreakerState::Open) => Op::Trip {
                name,
                member,
                cooldown_ms,
                quorum: self.quorum,
            },
            _ => return,
        };
        self.inner.publish(op);
    }

    fn may_probe(&self, b: &Breaker) -> Result<(), Duration> {
        task::start(&self.inner);
        if !self.inner.sharing() {
            return Ok(()); // fallback: the local machine decides
        }
        let name = b.base_name();
        let member = member(b);
        let in_flight = u32::try_from(b.probes_in_flight()).unwrap_or(u32::MAX);
        if self.inner.breakers.held(name, &member) > in_flight {
            return Ok(());
        }
        let slots = b.config().half_open_probes;
        if in_flight < slots {
            self.inner.publish(Op::Probes {
                name: name.into(),
                member,
                slots,
                want: in_flight + 1,
            });
        }
        Err(self.inner.config.round_trip_limit)
    }
}

/// Carries out a publication or a probe request.
pub(super) async fn apply(
    inner: &Inner,
    conn: &mut ConnectionManager,
    op: Op,
) -> Result<(), RoundTripError> {
    let limit = inner.config.round_trip_limit;
    let replica = inner.replica.as_str();
    match op {
        Op::Trip {
            name,
            member,
            cooldown_ms,
            quorum,
        } => {
            let mut call = scripts::TRIP.prepare_invoke();
            call.key(open_key(inner, &name))
                .key(trips_key(inner, &name, &member))
                .arg(&member)
                .arg(replica)
                .arg(cooldown_ms)
                .arg(quorum);
            let (opened, trips): (u32, u32) = round_trip(limit, call.invoke_async(conn)).await?;
            tracing::debug!(breaker = %name, member = %member, trips, opened = opened == 1, "trip published");
        }
        Op::Reopen {
            name,
            member,
            cooldown_ms,
            slots,
        } => {
            let mut call = scripts::REOPEN.prepare_invoke();
            call.key(open_key(inner, &name));
            for k in slot_keys(inner, &name, &member, slots) {
                call.key(k);
            }
            call.arg(&member).arg(replica).arg(cooldown_ms);
            round_trip::<u32>(limit, call.invoke_async(conn)).await?;
        }
        Op::Close {
            name,
            member,
            slots,
        } => {
            let mut call = scripts::CLOSE.prepare_invoke();
            call.key(open_key(inner, &name))
                .key(trips_key(inner, &name, &member));
            for k in slot_keys(inner, &name, &member, slots) {
                call.key(k);
            }
            call.arg(&member).arg(replica);
            round_trip::<u32>(limit, call.invoke_async(conn)).await?;
        }
        Op::Probes {
            name,
            member,
            slots,
            want,
        } => {
            let held = probes(inner, conn, &name, &member, slots, want).await?;
            inner.breakers.set_held(name, member, held, slots);
        }
    }
    Ok(())
}

/// Takes, renews or frees probe slots; how many this replica holds now.
async fn probes(
    inner: &Inner,
    conn: &mut ConnectionManager,
    name: &str,
    member: &str,
    slots: u32,
    want: u32,
) -> Result<u32, RoundTripError> {
    let mut call = scripts::PROBES.prepare_invoke();
    for k in slot_keys(inner, name, member, slots) {
        call.key(k);
    }
    call.arg(&inner.replica).arg(lease_ms(inner)).arg(want);
    round_trip(inner.config.round_trip_limit, call.invoke_async(conn)).await
}

/// Reads the fleet's open breakers of every name and opens this replica's closed ones among
/// them; renews the probe slots held.
pub(super) async fn sync(
    inner: &Inner,
    conn: &mut ConnectionManager,
) -> Result<(), RoundTripError> {
    let names: Vec<LiveOfName> = {
        let mut names = lock(&inner.breakers.names);
        names.retain(|_, l| {
            l.named.retain(|w| w.strong_count() > 0);
            l.keyed.retain(|w| w.strong_count() > 0);
            !(l.named.is_empty() && l.keyed.is_empty())
        });
        names
            .iter()
            .map(|(n, l)| {
                let named = l.named.iter().filter_map(Weak::upgrade).collect();
                let keyed = l.keyed.iter().filter_map(Weak::upgrade).collect();
                (n.clone(), named, keyed)
            })
            .collect()
    };
    for (name, named, keyed) in names {
        let mut call = scripts::OPEN_MEMBERS.prepare_invoke();
        call.key(open_key(inner, &name));
        let open: Vec<String> =
            round_trip(inner.config.round_trip_limit, call.invoke_async(conn)).await?;
        if open.is_empty() {
            continue;
        }
        let open: HashSet<String> = open.into_iter().collect();
        let follow = |b: &Breaker| {
            // Only a closed breaker follows: an open one has its own cooldown, and a half-open
            // one is probing with a slot of the fleet's.
            if b.state() == BreakerState::Closed && open.contains(&member(b)) {
                b.open_by_store();
            }
        };
        named.iter().for_each(|b| follow(b));
        for k in &keyed {
            k.each(&mut |b, _| follow(b));
        }
    }
    let held: Vec<(Instance, (u32, u32))> = lock(&inner.breakers.held)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for ((name, member), (n, slots)) in held {
        let now = probes(inner, conn, &name, &member, slots, n).await?;
        if now < n {
            inner.breakers.set_held(name, member, now, slots);
        }
    }
    Ok(())
}
