//! The network paths of one transport, and consent on each (RFC 7675, RFC 8445 §7.3 for our
//! ICE-lite side). Sans-IO: datagrams and `now` in, datagrams out.
//!
//! An authenticated check proves the sender knows the ICE password, not that it owns the source
//! address: anyone on the path can spoof it. So a check only makes its source a *validated*
//! address (media is accepted from it) and a *candidate* path; media is sent to an address only
//! once that address answered our own check — a binding request signed with the client's
//! password, which only the real client can answer, from that address. Then:
//! - switches are rate-limited ([`SWITCH_INTERVAL`]) and at most [`MAX_PENDING`] candidates are
//!   checked at once, each [`MAX_ATTEMPTS`] times, and a candidate that never answered is not
//!   checked again before [`RETRY_AFTER`]: a spoofed address gets a few small checks, no media;
//! - the selected path keeps consent by answering a check every ~5 s; after [`CONSENT_TIMEOUT`]
//!   without an answer consent has expired and media must stop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mooyaho_net::stun::{self, Check, IceRole, PEER_REFLEXIVE_PRIORITY, StunError, TransactionId};

/// At most this many validated addresses per transport (a client has a few candidates).
pub(crate) const MAX_ADDRESSES: usize = 8;
/// At most this many candidate paths with checks in flight.
pub(crate) const MAX_PENDING: usize = 4;
/// At most one switch of the media destination per this interval.
pub(crate) const SWITCH_INTERVAL: Duration = Duration::from_secs(1);
/// A candidate is checked this many times (first retransmission after [`CHECK_RTO`], doubling).
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// First retransmission timeout of a candidate check.
pub(crate) const CHECK_RTO: Duration = Duration::from_millis(200);
/// A candidate that never answered is not checked again for this long.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Consent checks on the selected path (RFC 7675 §5.1: 5 s, randomised by ±20 %).
pub(crate) const CONSENT_INTERVAL: Duration = Duration::from_secs(5);
/// Without an answer on the selected path for this long, consent has expired (RFC 7675 §5.1).
pub(crate) const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Checks remembered to match responses (a few per pending candidate and the consent checks).
pub(crate) const MAX_SENT: usize = 2 * MAX_PENDING + 4;

/// How a check changed the validated addresses; the worker mirrors it in its address table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddressChange {
    /// A new address media is now accepted from.
    pub added: Option<SocketAddr>,
    /// The oldest address, dropped to make room.
    pub evicted: Option<SocketAddr>,
}

/// The credentials our checks carry: USERNAME `<client ufrag>:<our ufrag>`, signed with the
/// client's password (RFC 8445 §7.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckCredentials {
    /// `<client ufrag>:<our ufrag>`.
    pub username: String,
    /// The client's ICE password.
    pub remote_pwd: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consent {
    /// Validated by the client's check; none of ours sent yet.
    Unchecked,
    /// Our check is in flight.
    Checking { attempts: u32, next: Instant },
    /// Answered our check at this time.
    Granted(Instant),
    /// Never answered, or its consent went stale: checked again only when the client checks
    /// from it again, and not before this time.
    Idle(Instant),
}

#[derive(Clone, Copy, Debug)]
struct Address {
    addr: SocketAddr,
    consent: Consent,
    /// The client nominated it (USE-CANDIDATE): media moves there once it consents.
    nominated: bool,
    /// When the client last nominated it (the latest nomination wins).
    nominated_at: Instant,
}

/// Every path of one transport.
#[derive(Debug)]
pub(crate) struct Paths {
    /// Oldest first, at most [`MAX_ADDRESSES`].
    addresses: Vec<Address>,
    selected: Option<SocketAddr>,
    /// Last answer on the selected path (or when the transport was created).
    last_consent: Instant,
    next_consent_check: Option<Instant>,
    last_switch: Option<Instant>,
    credentials: Option<CheckCredentials>,
    tie_breaker: u64,
    /// Our recent checks: transaction id → address.
    sent: VecDeque<(TransactionId, SocketAddr)>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Paths {
    /// No path yet; consent is counted from `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            addresses: Vec::new(),
            selected: None,
            last_consent: now,
            next_consent_check: None,
            last_switch: None,
            credentials: None,
            tie_breaker: rand::random(),
            sent: VecDeque::new(),
            outbox: VecDeque::new(),
        }
    }

    /// Sets what our checks carry (once the client's SDP is known); checks start then.
    pub(crate) fn set_credentials(&mut self, now: Instant, credentials: CheckCredentials) {
        self.credentials = Some(credentials);
        self.handle_timeout(now);
    }

    /// An authenticated check from `from` (USE-CANDIDATE: `nominated`).
    pub(crate) fn handle_check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nominated: bool,
    ) -> AddressChange {
        let mut change = AddressChange::default();
        if !self.addresses.iter().any(|a| a.addr == from) {
            if self.addresses.len() == MAX_ADDRESSES {
                // The oldest address that is not the selected path.
                let index = self
                    .addresses
                    .iter()
                    .position(|a| Some(a.addr) != self.selected)
                    .unwrap_or(0);
                let evicted = self.addresses.remove(index).addr;
                self.forget_selected(evicted);
                change.evicted = Some(evicted);
            }
            self.addresses.push(Address {
                addr: from,
                consent: Consent::Unchecked,
                nominated: false,
                nominated_at: now,
            });
            change.added = Some(from);
        }
        if let Some(address) = self.addresses.iter_mut().find(|a| a.addr == from) {
            if nominated {
                address.nominated = true;
                address.nominated_at = now;
            }
            if matches!(address.consent, Consent::Idle(retry) if retry <= now) {
                address.consent = Consent::Unchecked;
            }
        }
        self.handle_timeout(now);
        change
    }

    /// A STUN success response from `from`: consent if it answers one of our checks to that
    /// address and is signed with the client's password. Returns whether the media destination
    /// changed.
    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<bool, StunError> {
        let credentials = self.credentials.as_ref().ok_or(StunError::Unexpected)?;
        let transaction = stun::verify_success(datagram, &credentials.remote_pwd)?;
        let index = self
            .sent
            .iter()
            .position(|(t, addr)| *t == transaction && *addr == from)
            .ok_or(StunError::Unexpected)?;
        self.sent.remove(index);
        let address = self
            .addresses
            .iter_mut()
            .find(|a| a.addr == from)
            .ok_or(StunError::Unexpected)?;
        address.consent = Consent::Granted(now);
        if self.selected == Some(from) {
            self.last_consent = now;
        }
        let before = self.selected;
        self.handle_timeout(now);
        Ok(self.selected != before)
    }

    /// Sends due checks, switches to a consented nominated path when the rate limit allows.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.maybe_switch(now);
        if self.credentials.is_none() {
            return;
        }
        // Consent freshness on the selected path.
        if let Some(selected) = self.selected
            && self.next_consent_check.is_none_or(|t| t <= now)
        {
            self.next_consent_check = Some(now + jittered(CONSENT_INTERVAL));
            self.send_check(selected);
        }
        // Candidate checks: retransmissions first, then new candidates up to the cap.
        let mut pending = 0;
        for i in 0..self.addresses.len() {
            let address = self.addresses[i];
            if Some(address.addr) == self.selected {
                continue;
            }
            match address.consent {
                Consent::Checking { attempts, next } => {
                    pending += 1;
                    if next > now {
                        continue;
                    }
                    if attempts >= MAX_ATTEMPTS {
                        self.addresses[i].consent = Consent::Idle(now + RETRY_AFTER);
                        pending -= 1;
                        continue;
                    }
                    self.addresses[i].consent = Consent::Checking {
                        attempts: attempts + 1,
                        next: now + CHECK_RTO * 2u32.pow(attempts),
                    };
                    self.send_check(address.addr);
                }
                Consent::Granted(at) if now.saturating_duration_since(at) > CONSENT_TIMEOUT => {
                    self.addresses[i].consent = Consent::Idle(now);
                }
                _ => {}
            }
        }
        for i in 0..self.addresses.len() {
            if pending >= MAX_PENDING {
                break;
            }
            let address = self.addresses[i];
            if address.consent == Consent::Unchecked && Some(address.addr) != self.selected {
                self.addresses[i].consent = Consent::Checking {
                    attempts: 1,
                    next: now + CHECK_RTO,
                };
                self.send_check(address.addr);
                pending += 1;
            }
        }
    }

    /// Moves media to the most recently nominated consented path (or the first consented path
    /// while there is none), at most once per [`SWITCH_INTERVAL`].
    fn maybe_switch(&mut self, now: Instant) {
        if self.last_switch.is_some_and(|t| now < t + SWITCH_INTERVAL) {
            return;
        }
        let consented = |a: &&Address| matches!(a.consent, Consent::Granted(at) if now.saturating_duration_since(at) <= CONSENT_TIMEOUT);
        let current_nominated_at = self
            .selected
            .and_then(|s| self.addresses.iter().find(|a| a.addr == s))
            .filter(|a| a.nominated)
            .map(|a| a.nominated_at);
        let better = self
            .addresses
            .iter()
            .filter(consented)
            .filter(|a| Some(a.addr) != self.selected)
            .filter(|a| {
                if self.selected.is_none() {
                    return true;
                }
                a.nominated && current_nominated_at.is_none_or(|t| a.nominated_at > t)
            })
            .max_by_key(|a| (a.nominated, a.nominated_at));
        if let Some(target) = better {
            let Consent::Granted(at) = target.consent else {
                return;
            };
            self.selected = Some(target.addr);
            self.last_consent = at;
            self.last_switch = Some(now);
            self.next_consent_check = Some(now + jittered(CONSENT_INTERVAL));
        }
    }

    fn send_check(&mut self, to: SocketAddr) {
        let Some(credentials) = &self.credentials else {
            return;
        };
        // Consent (RFC 7675) as the controlled ICE-lite agent: USERNAME `<client ufrag>:<our
        // ufrag>`, signed with the client's password, from the address it learnt from the
        // client's own checks.
        let transaction = stun::new_transaction_id();
        let request = Check {
            username: &credentials.username,
            receiver_pwd: &credentials.remote_pwd,
            transaction,
            priority: PEER_REFLEXIVE_PRIORITY,
            role: IceRole::Controlled(self.tie_breaker),
            use_candidate: false,
        }
        .to_bytes();
        if self.sent.len() == MAX_SENT {
            self.sent.pop_front();
        }
        self.sent.push_back((transaction, to));
        // Bounded by the checks above (a few per call); drained by the worker after each call.
        self.outbox.push_back((to, request));
    }

    /// The next check to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.pop_front()
    }

    /// When [`Self::handle_timeout`] has work next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_consent_check.filter(|_| self.selected.is_some());
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for address in &self.addresses {
            if let Consent::Checking { next, .. } = address.consent {
                earliest(next);
            }
        }
        if let Some(last) = self.last_switch
            && self.switch_waiting()
        {
            earliest(last + SWITCH_INTERVAL);
        }
        next
    }

    /// A consented path [`Self::maybe_switch`] would move to once the interval allows (stale
    /// consent aside: `handle_timeout` idles it). Mirrors its rule, so the timer it arms is
    /// never one a switch cannot clear.
    fn switch_waiting(&self) -> bool {
        let current_nominated_at = self
            .selected
            .and_then(|s| self.addresses.iter().find(|a| a.addr == s))
            .filter(|a| a.nominated)
            .map(|a| a.nominated_at);
        self.addresses.iter().any(|a| {
            Some(a.addr) != self.selected
                && matches!(a.consent, Consent::Granted(_))
                && (self.selected.is_none()
                    || a.nominated && current_nominated_at.is_none_or(|t| a.nominated_at > t))
        })
    }

    /// Where media goes: a path that answered our check (none before one did).
    pub(crate) fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether media is accepted from `addr`.
    pub(crate) fn contains(&self, addr: SocketAddr) -> bool {
        self.addresses.iter().any(|a| a.addr == addr)
    }

    /// Every validated address, oldest first.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addresses.iter().map(|a| a.addr)
    }

    /// Candidates with a check in flight.
    pub(crate) fn pending(&self) -> usize {
        self.addresses
            .iter()
            .filter(|a| matches!(a.consent, Consent::Checking { .. }))
            .count()
    }

    /// Checks remembered for matching responses.
    pub(crate) fn remembered_checks(&self) -> usize {
        self.sent.len()
    }

    /// Consent on the selected path expired (or no path was ever consented): media stops.
    pub(crate) fn consent_expired(&self, now: Instant) -> bool {
        now >= self.consent_deadline()
    }

    /// When consent on the selected path expires without a further answer.
    pub(crate) fn consent_deadline(&self) -> Instant {
        self.last_consent + CONSENT_TIMEOUT
    }

    /// Whether `addr` is a live path: media goes there, or it answered our check within
    /// [`CONSENT_TIMEOUT`]. A check that merely names an address (spoofable) never makes it live,
    /// so the worker never hands a live path to another transport.
    pub(crate) fn is_live(&self, now: Instant, addr: SocketAddr) -> bool {
        self.selected == Some(addr)
            || self.addresses.iter().any(|a| {
                a.addr == addr
                    && matches!(a.consent, Consent::Granted(at) if now.saturating_duration_since(at) <= CONSENT_TIMEOUT)
            })
    }

    /// Forgets `addr` (another transport validated it); returns whether it was here.
    pub(crate) fn forget(&mut self, addr: SocketAddr) -> bool {
        let before = self.addresses.len();
        self.addresses.retain(|a| a.addr != addr);
        self.forget_selected(addr);
        self.addresses.len() != before
    }

    fn forget_selected(&mut self, addr: SocketAddr) {
        if self.selected == Some(addr) {
            self.selected = None;
        }
    }
}

/// `interval` ± 20 % (RFC 7675 §5.1), so checks of many transports do not align.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_UFRAG: &str = "client";
    const CLIENT_PWD: &str = "client-password-0123456789";

    fn credentials() -> CheckCredentials {
        CheckCredentials {
            username: format!("{CLIENT_UFRAG}:node"),
            remote_pwd: CLIENT_PWD.into(),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// The client's answer to every check sent to `honest` (the others are never answered).
    fn answer(paths: &mut Paths, now: Instant, honest: &[SocketAddr]) -> Vec<(SocketAddr, bool)> {
        let mut sent = Vec::new();
        while let Some((to, request)) = paths.poll_transmit() {
            sent.push(to);
            if !honest.contains(&to) {
                continue;
            }
            let mut parsed = stun::BindingRequest::parse(&request).unwrap();
            assert_eq!(parsed.local_ufrag, CLIENT_UFRAG);
            parsed.authenticate(CLIENT_PWD).unwrap();
            let response = parsed.success(to, CLIENT_PWD);
            let _ = paths.handle_response(now, to, &response);
        }
        sent.into_iter()
            .map(|to| (to, honest.contains(&to)))
            .collect()
    }

    fn connected(now: Instant) -> Paths {
        let mut paths = Paths::new(now);
        paths.set_credentials(now, credentials());
        paths.handle_check(now, addr(1), true);
        assert_eq!(paths.selected(), None, "no media before consent");
        answer(&mut paths, now, &[addr(1)]);
        assert_eq!(paths.selected(), Some(addr(1)));
        paths
    }

    #[test]
    fn a_new_path_is_used_only_after_it_answers_our_check() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        // The client moves (a new address, nominated): media stays until the new one answers.
        let t1 = t0 + Duration::from_secs(2);
        let change = paths.handle_check(t1, addr(2), true);
        assert_eq!(change.added, Some(addr(2)));
        assert_eq!(paths.selected(), Some(addr(1)));
        let sent = answer(&mut paths, t1, &[addr(2)]);
        assert_eq!(sent, vec![(addr(2), true)]);
        assert_eq!(paths.selected(), Some(addr(2)));
    }

    #[test]
    fn a_spoofed_path_that_never_answers_gets_a_few_checks_and_no_media() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        let victim = addr(666);
        let mut checks_to_victim = 0;
        let mut now = t0;
        // The attacker repeats its spoofed nominating check every 100 ms for 60 s; the honest
        // path keeps answering consent checks.
        while now < t0 + Duration::from_secs(60) {
            now += Duration::from_millis(100);
            paths.handle_check(now, victim, true);
            paths.handle_timeout(now);
            checks_to_victim += answer(&mut paths, now, &[addr(1)])
                .iter()
                .filter(|(to, _)| *to == victim)
                .count();
            assert_eq!(paths.selected(), Some(addr(1)), "media moved to the victim");
            assert!(paths.pending() <= MAX_PENDING);
        }
        // MAX_ATTEMPTS per round, one round per RETRY_AFTER (plus the check time).
        let rounds = 60 / RETRY_AFTER.as_secs() as usize + 1;
        assert!(
            checks_to_victim <= rounds * MAX_ATTEMPTS as usize,
            "{checks_to_victim} checks to the victim"
        );
        assert!(checks_to_victim >= MAX_ATTEMPTS as usize);
        assert!(!paths.consent_expired(now), "the honest path kept consent");
    }

    #[test]
    fn switches_are_rate_limited_to_one_per_interval() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        let t1 = t0 + Duration::from_secs(5);
        paths.handle_check(t1, addr(2), true);
        answer(&mut paths, t1, &[addr(1), addr(2)]);
        assert_eq!(paths.selected(), Some(addr(2)));
        // 100 ms later another nominated path answers: it waits for the interval.
        let t2 = t1 + Duration::from_millis(100);
        paths.handle_check(t2, addr(3), true);
        answer(&mut paths, t2, &[addr(1), addr(2), addr(3)]);
        assert_eq!(paths.selected(), Some(addr(2)));
        let due = paths.poll_timeout().expect("a switch is waiting");
        assert!(due <= t1 + SWITCH_INTERVAL);
        paths.handle_timeout(t1 + SWITCH_INTERVAL);
        assert_eq!(paths.selected(), Some(addr(3)));
    }

    #[test]
    fn consent_expires_without_answers_on_the_selected_path() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        let mut now = t0;
        let mut checks = 0;
        while now < t0 + CONSENT_TIMEOUT + Duration::from_secs(1) {
            now += Duration::from_millis(500);
            paths.handle_timeout(now);
            checks += answer(&mut paths, now, &[]).len();
        }
        assert!(paths.consent_expired(now));
        // One consent check per ~5 s (4–6 s), nothing more.
        assert!((5..=8).contains(&checks), "{checks} consent checks");
        // With answers, it never expires.
        let mut paths = connected(t0);
        let mut now = t0;
        while now < t0 + 3 * CONSENT_TIMEOUT {
            now += Duration::from_millis(500);
            paths.handle_timeout(now);
            answer(&mut paths, now, &[addr(1)]);
        }
        assert!(!paths.consent_expired(now));
    }

    #[test]
    fn forged_or_mismatched_responses_grant_nothing() {
        let t0 = Instant::now();
        let mut paths = Paths::new(t0);
        paths.set_credentials(t0, credentials());
        paths.handle_check(t0, addr(1), true);
        let (to, request) = paths.poll_transmit().unwrap();
        let mut parsed = stun::BindingRequest::parse(&request).unwrap();
        parsed.authenticate(CLIENT_PWD).unwrap();
        // Signed with the wrong password, or from another address: refused.
        let wrong = parsed.success(to, "not-the-client-password");
        assert!(paths.handle_response(t0, to, &wrong).is_err());
        let right = parsed.success(to, CLIENT_PWD);
        assert!(paths.handle_response(t0, addr(9), &right).is_err());
        assert_eq!(paths.selected(), None);
        assert_eq!(paths.handle_response(t0, to, &right), Ok(true));
        // A replayed response matches no outstanding check.
        assert!(paths.handle_response(t0, to, &right).is_err());
    }

    #[test]
    fn only_selected_or_consented_paths_are_live() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        assert!(paths.is_live(t0, addr(1)), "the selected path");
        // A check alone (spoofable), and a check in flight, make nothing live.
        paths.handle_check(t0, addr(2), true);
        assert!(!paths.is_live(t0, addr(2)), "unchecked candidate");
        paths.handle_timeout(t0);
        assert!(paths.pending() >= 1);
        assert!(!paths.is_live(t0, addr(2)), "candidate being checked");
        assert!(!paths.is_live(t0, addr(9)), "unknown address");
        // Answered: live even before media switches to it (the switch waits for the interval).
        let t1 = t0 + Duration::from_millis(100);
        paths.handle_check(t1, addr(3), false);
        answer(&mut paths, t1, &[addr(3)]);
        assert_eq!(paths.selected(), Some(addr(1)));
        assert!(paths.is_live(t1, addr(3)));
        // Consent on it goes stale after CONSENT_TIMEOUT without answers; the selected path
        // keeps answering and stays live.
        let mut now = t1;
        while now <= t1 + CONSENT_TIMEOUT {
            now += Duration::from_millis(500);
            paths.handle_timeout(now);
            answer(&mut paths, now, &[addr(1)]);
        }
        assert!(!paths.is_live(now, addr(3)), "stale consent");
        assert!(paths.is_live(now, addr(1)));
        assert_eq!(paths.selected(), Some(addr(1)));
    }

    #[test]
    fn addresses_and_pending_checks_stay_within_their_caps() {
        let t0 = Instant::now();
        let mut paths = connected(t0);
        for port in 10..100 {
            let change = paths.handle_check(t0, addr(port), port % 2 == 0);
            assert_eq!(change.added, Some(addr(port)));
            let full = port >= 10 + MAX_ADDRESSES as u16 - 1;
            assert_eq!(change.evicted.is_some(), full, "port {port}");
            assert_ne!(change.evicted, Some(addr(1)));
            assert!(paths.addresses().count() <= MAX_ADDRESSES);
            assert!(paths.pending() <= MAX_PENDING);
            assert!(paths.remembered_checks() <= MAX_SENT);
            assert!(
                paths.contains(addr(1)),
                "the selected path is never evicted"
            );
        }
        while paths.poll_transmit().is_some() {}
    }
}
