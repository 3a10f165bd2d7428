//! The shard's resolver: cache, in-flight de-duplication, serve-stale and
//! refresh-ahead around the stub [`Client`], and the MX / route logic on
//! top.
//!
//! Single-threaded by design (thread-per-core): state lives in `RefCell`s
//! behind one `Rc`, never shared with another shard, and no `RefCell`
//! borrow is held across an `.await`.
//!
//! Lookup of one (name, type):
//! 1. fresh cache entry → answer (and maybe start one background refresh);
//! 2. stale entry whose last refresh failed recently → serve stale;
//! 3. otherwise join the query already in flight for the key, or start
//!    one in a detached task (see `inflight.rs`); the task stores
//!    the result in the cache before waking the waiters;
//! 4. if it fails temporarily and a stale entry exists, serve that.
//!
//! MX resolution then composes cached RRsets on every call (so equal
//! preferences are reshuffled per call, and each RRset keeps its own TTL).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use hickory_proto::rr::{Name, RecordType};

use super::cache::{Cache, CacheLookup};
use super::client::{Answer, AnswerKind, Client, ClientSettings};
use super::config::{FamilyPreference, ResolverConfig};
use super::counters::{bump, Counters, ResolverStats};
use super::error::{ConfigError, ResolveError};
use super::inflight::{Completer, Flight};
use super::mx::{
    assemble, host_name, merge_families, null_mx, plan_exchangers, Candidate, Destination,
    DestinationKind, Exchangers, FamilyResult, HostAddrs,
};
use super::resolv_conf::load_resolv_conf;
use super::routes::{RouteHost, RouteTarget, Routes};
use super::wire::{show, Records};

type LookupResult = Result<Rc<Answer>, ResolveError>;

/// Cache and in-flight key: lower-case FQDN text and record type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Box<str>,
    rtype: RecordType,
}

impl Key {
    fn new(name: &Name, rtype: RecordType) -> Self {
        Key {
            name: name.to_ascii().to_ascii_lowercase().into_boxed_str(),
            rtype,
        }
    }
}

/// Per-shard DNS resolver. Create it inside the shard's glommio executor
/// (queries run as local tasks) and share it as `Rc<Resolver>`.
pub struct Resolver {
    inner: Rc<Inner>,
    config: ResolverConfig,
}

struct Inner {
    client: Client,
    cache: RefCell<Cache<Key, Rc<Answer>>>,
    flights: RefCell<HashMap<Key, Rc<Flight<LookupResult>>>>,
    counters: Counters,
    routes: Routes,
    family: FamilyPreference,
    max_mx_hosts: usize,
    smtp_port: u16,
}

impl Resolver {
    /// Validates `cfg` and builds the resolver. Nameservers come from
    /// `cfg.nameservers`, else from `cfg.resolv_conf`; none at all is an
    /// error (there is no public fallback).
    pub fn new(cfg: ResolverConfig) -> Result<Rc<Resolver>, ConfigError> {
        cfg.validate()?;
        let servers = if cfg.nameservers.is_empty() {
            load_resolv_conf(&cfg.resolv_conf)?
        } else {
            cfg.nameservers.clone()
        };
        if servers.is_empty() {
            return Err(ConfigError::NoNameservers {
                path: cfg.resolv_conf.clone(),
            });
        }
        let routes = Routes::new(&cfg.routes, cfg.smarthost.as_ref(), cfg.smtp_port)?;
        let client = Client::new(ClientSettings {
            servers,
            timeout: cfg.timeout,
            attempts: cfg.attempts,
            rotate: cfg.rotate,
            payload: cfg.edns_payload,
            cname_limit: cfg.cname_limit,
            max_concurrent: cfg.max_concurrent_queries,
        });
        Ok(Rc::new(Resolver {
            config: cfg.clone(),
            inner: Rc::new(Inner {
                client,
                cache: RefCell::new(Cache::new(cfg.cache.clone())),
                flights: RefCell::new(HashMap::new()),
                counters: Counters::default(),
                routes,
                family: cfg.family,
                max_mx_hosts: cfg.max_mx_hosts,
                smtp_port: cfg.smtp_port,
            }),
        }))
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The mail exchangers of `domain` per RFC 5321 §5.1 (MX, implicit MX,
    /// null MX, address literal), ignoring static routes.
    pub async fn resolve_mx(&self, domain: &str) -> Result<Rc<Destination>, ResolveError> {
        let (name, display) = parse_domain(domain)?;
        if let Some(ip) = address_literal(&display) {
            return Ok(Rc::new(Destination {
                domain: display.clone(),
                kind: DestinationKind::AddressLiteral,
                hosts: vec![super::mx::MxHost {
                    name: display,
                    preference: 0,
                    port: self.inner.smtp_port,
                    addrs: vec![ip],
                }],
                skipped: Vec::new(),
            }));
        }
        let inner = &self.inner;
        let mx = inner.lookup(&name, RecordType::MX).await?;
        let port = inner.smtp_port;
        let destination = match &mx.kind {
            AnswerKind::NxDomain => {
                return Err(ResolveError::NoSuchDomain {
                    reason: mx.describe(),
                })
            }
            AnswerKind::NoData => {
                let addrs = inner.host_addrs(&name).await;
                let candidate = Candidate {
                    name: display.clone(),
                    preference: 0,
                    port,
                    addrs,
                };
                assemble(&display, DestinationKind::ImplicitMx, vec![candidate])?
            }
            AnswerKind::Positive(Records::Mx(records)) => {
                let plan = plan_exchangers(records, inner.max_mx_hosts, &mut rand::rng());
                let hosts = match plan {
                    Exchangers::NullMx => return Err(null_mx(&display, &mx.describe())),
                    Exchangers::Hosts(h) => h,
                };
                let lookups = hosts.iter().map(|h| inner.host_addrs(&h.exchange));
                let found = join_all(lookups.collect()).await;
                let candidates = hosts
                    .iter()
                    .zip(found)
                    .map(|(h, addrs)| Candidate {
                        name: host_name(h),
                        preference: h.preference,
                        port,
                        addrs,
                    })
                    .collect();
                assemble(&display, DestinationKind::Mx, candidates)?
            }
            AnswerKind::Positive(Records::Addrs(_)) => {
                return Err(ResolveError::temporary(format!(
                    "unexpected address records in the MX answer for {display}"
                )))
            }
        };
        Ok(Rc::new(destination))
    }

    /// Like [`resolve_mx`](Self::resolve_mx), but a static route or the
    /// smarthost, when one matches, replaces MX lookup.
    pub async fn resolve_route(&self, domain: &str) -> Result<Rc<Destination>, ResolveError> {
        let (_, display) = parse_domain(domain)?;
        let Some(target) = self.inner.routes.find(&display) else {
            return self.resolve_mx(domain).await;
        };
        self.resolve_target(&display, &target).await
    }

    /// The hosts of a configured target (a route, or a queue's fallback),
    /// looked up as needed; `name` is what the destination is called.
    pub async fn resolve_target(
        &self,
        name: &str,
        target: &RouteTarget,
    ) -> Result<Rc<Destination>, ResolveError> {
        let lookups = target.hosts.iter().map(|h| self.inner.route_host(h));
        let found = join_all(lookups.collect()).await;
        let candidates = found
            .into_iter()
            .enumerate()
            .map(|(i, (name, port, addrs))| Candidate {
                name,
                preference: u16::try_from(i.saturating_mul(10)).unwrap_or(u16::MAX),
                port,
                addrs,
            })
            .collect();
        assemble(name, target.kind, candidates).map(Rc::new)
    }

    /// Snapshot of this resolver's counters.
    pub fn stats(&self) -> ResolverStats {
        self.inner.counters.snapshot()
    }

    /// The nameservers in use.
    pub fn nameservers(&self) -> &[SocketAddr] {
        self.inner.client.servers()
    }

    /// Cache entries held.
    pub fn cache_len(&self) -> usize {
        self.inner.cache.borrow().len()
    }
}

impl Inner {
    /// One (name, type) through cache, in-flight table and serve-stale.
    async fn lookup(self: &Rc<Self>, name: &Name, rtype: RecordType) -> LookupResult {
        let key = Key::new(name, rtype);
        let cached = self.cache.borrow_mut().get(&key, Instant::now());
        let stale = match cached {
            CacheLookup::Fresh { value, refresh } => {
                bump(&self.counters.cache_hits);
                if refresh {
                    bump(&self.counters.refreshes);
                    self.start_flight(key, name, rtype);
                }
                return Ok(value);
            }
            CacheLookup::Stale {
                value,
                revalidate: false,
            } => {
                bump(&self.counters.stale_served);
                return Ok(value);
            }
            CacheLookup::Stale {
                value,
                revalidate: true,
            } => Some(value),
            CacheLookup::Miss => None,
        };
        bump(&self.counters.cache_misses);
        let existing = self.flights.borrow().get(&key).cloned();
        let flight = match existing {
            Some(f) => {
                bump(&self.counters.in_flight_joins);
                f
            }
            None => self.start_flight(key, name, rtype),
        };
        match (flight.wait().await, stale) {
            (Err(e @ ResolveError::Temporary { .. }), Some(old)) => {
                bump(&self.counters.stale_served);
                tracing::warn!(name = %show(name), %rtype, error = %e, "serving stale DNS answer");
                Ok(old)
            }
            (result, _) => result,
        }
    }

    /// Starts the query for `key` in a detached task (or returns the one
    /// already running). The task caches the result, then wakes waiters.
    fn start_flight(
        self: &Rc<Self>,
        key: Key,
        name: &Name,
        rtype: RecordType,
    ) -> Rc<Flight<LookupResult>> {
        if let Some(f) = self.flights.borrow().get(&key) {
            return Rc::clone(f);
        }
        let flight = Flight::new();
        self.flights
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&flight));
        let cleanup = {
            let inner = Rc::clone(self);
            let key = key.clone();
            move || {
                inner.flights.borrow_mut().remove(&key);
            }
        };
        let guard = Completer::new(
            Rc::clone(&flight),
            Box::new(|| Err(ResolveError::temporary("DNS lookup cancelled"))),
            cleanup,
        );
        let inner = Rc::clone(self);
        let name = name.clone();
        glommio::spawn_local(async move {
            let result = inner.client.resolve(&name, rtype, &inner.counters).await;
            let now = Instant::now();
            let out = match result {
                Ok((answer, ttl)) => {
                    let answer = Rc::new(answer);
                    if let Some(ttl) = ttl {
                        let negative = !matches!(answer.kind, AnswerKind::Positive(_));
                        inner.cache.borrow_mut().insert(
                            key,
                            Rc::clone(&answer),
                            ttl,
                            negative,
                            now,
                        );
                    }
                    Ok(answer)
                }
                Err(e) => {
                    inner.cache.borrow_mut().failed(&key, now);
                    Err(e)
                }
            };
            guard.finish(out);
        })
        .detach();
        flight
    }

    /// A and/or AAAA of one host, per the family preference.
    async fn host_addrs(self: &Rc<Self>, name: &Name) -> HostAddrs {
        let types: &[RecordType] = match self.family {
            FamilyPreference::Ipv4Only => &[RecordType::A],
            FamilyPreference::Ipv6Only => &[RecordType::AAAA],
            FamilyPreference::PreferIpv4 => &[RecordType::A, RecordType::AAAA],
            FamilyPreference::PreferIpv6 => &[RecordType::AAAA, RecordType::A],
        };
        let results = join_all(types.iter().map(|&t| self.lookup(name, t)).collect()).await;
        let per_family = results
            .into_iter()
            .map(|r| match r {
                Ok(a) => match &a.kind {
                    AnswerKind::Positive(Records::Addrs(v)) => FamilyResult::Addrs(v.clone()),
                    AnswerKind::NoData => FamilyResult::NoData(a.describe()),
                    AnswerKind::NxDomain => FamilyResult::NxDomain(a.describe()),
                    AnswerKind::Positive(Records::Mx(_)) => FamilyResult::Failed(a.describe()),
                },
                Err(e) => FamilyResult::Failed(e.reason().to_string()),
            })
            .collect();
        merge_families(per_family)
    }

    /// Address(es) of one configured route host.
    async fn route_host(self: &Rc<Self>, host: &RouteHost) -> (String, u16, HostAddrs) {
        match host {
            RouteHost::Ip(sa) => (
                sa.ip().to_string(),
                sa.port(),
                HostAddrs::Found(vec![sa.ip()]),
            ),
            RouteHost::Name(name, port) => (show(name), *port, self.host_addrs(name).await),
        }
    }
}

/// Validates and normalises a recipient domain (IDNA → punycode, lower
/// case, fully qualified). A malformed domain cannot exist: `5.1.2`.
fn parse_domain(domain: &str) -> Result<(Name, String), ResolveError> {
    let d = domain.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    let invalid = |why: String| ResolveError::NoSuchDomain {
        reason: format!("invalid domain name {d:?}: {why}"),
    };
    if d.is_empty() {
        return Err(invalid("empty".into()));
    }
    if d.starts_with('[') {
        return match address_literal(d) {
            Some(_) => Ok((Name::root(), d.to_ascii_lowercase())),
            None => Err(invalid("bad address literal".into())),
        };
    }
    // IDNA processing only for non-ASCII names (it is the costly part).
    let parsed = if d.is_ascii() {
        Name::from_ascii(d)
    } else {
        Name::from_utf8(d)
    };
    let mut name = parsed.map_err(|e| invalid(e.to_string()))?;
    if name.iter().any(|l| l.is_empty()) {
        return Err(invalid("empty label".into()));
    }
    name.set_fqdn(true);
    let name = name.to_lowercase();
    let display = show(&name);
    Ok((name, display))
}

/// `[127.0.0.1]` or `[IPv6:::1]` (RFC 5321 §4.1.3).
fn address_literal(d: &str) -> Option<IpAddr> {
    let inner = d.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner.get(5..)?.parse().ok().filter(IpAddr::is_ipv6)
        }
        _ => inner.parse().ok().filter(IpAddr::is_ipv4),
    }
}

/// Polls all futures concurrently and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_or_refused() {
        let (name, display) = parse_domain(" D5.Test. ").unwrap();
        assert_eq!(
            (name.to_ascii().as_str(), display.as_str()),
            ("d5.test.", "d5.test")
        );
        let (_, idn) = parse_domain("bücher.test").unwrap();
        assert_eq!(idn, "xn--bcher-kva.test");
        for bad in ["", ".", "a..b", "[1.2.3]", "[IPv6:1.2.3.4]"] {
            let e = parse_domain(bad).unwrap_err();
            assert_eq!(e.enhanced_status(), (5, 1, 2), "{bad}");
        }
        assert_eq!(
            address_literal("[127.0.0.1]"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("[::1]"), None);
    }

    #[test]
    fn join_all_keeps_order() {
        let out = futures_lite::future::block_on(join_all(vec![
            Box::pin(async { 1 }) as Pin<Box<dyn Future<Output = i32>>>,
            Box::pin(async {
                futures_lite::future::yield_now().await;
                2
            }),
        ]));
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn no_nameserver_is_a_startup_error() {
        let path = std::env::temp_dir().join(format!("resolv-empty-{}.conf", std::process::id()));
        std::fs::write(&path, "search example.com\n").unwrap();
        let cfg = ResolverConfig {
            resolv_conf: path.clone(),
            ..ResolverConfig::default()
        };
        let err = Resolver::new(cfg).err().unwrap();
        assert!(matches!(err, ConfigError::NoNameservers { .. }), "{err}");
        std::fs::write(&path, "nameserver 127.0.0.53\n").unwrap();
        let cfg = ResolverConfig {
            resolv_conf: path.clone(),
            ..ResolverConfig::default()
        };
        let r = Resolver::new(cfg).unwrap();
        assert_eq!(r.nameservers(), ["127.0.0.53:53".parse().unwrap()]);
        std::fs::remove_file(&path).unwrap();
    }
}
