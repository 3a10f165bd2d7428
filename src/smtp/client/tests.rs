//! Session tests: byte-exact conversations, a loop against the crate's own
//! `ServerSession`, and property tests for split input and for the "one
//! outcome per recipient" invariant under a randomly misbehaving server.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

const CAPS_PIPE: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n";
const CAPS_BDAT: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
const CAPS_LOCKSTEP: &str = "250-mx.example\r\n250-8BITMIME\r\n250 SIZE\r\n";
const BODY: &str = "Subject: hi\r\n\r\nbody\r\n";

fn cfg() -> ClientConfig {
    ClientConfig {
        ehlo_name: "relay.example".into(),
        prefer_bdat: false,
        tls_policy: TlsPolicy::Disabled,
        ..ClientConfig::default()
    }
}

fn txn(id: u64, rcpts: &[&str], body: &str) -> Transaction {
    Transaction {
        id,
        reverse_path: "s@x.example".into(),
        recipients: rcpts
            .iter()
            .enumerate()
            .map(|(i, a)| Recipient {
                index: i,
                address: (*a).into(),
            })
            .collect(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        eight_bit: false,
        smtputf8: false,
    }
}

/// Plays the driver and records events as short strings:
/// `1.0 D250`, `1.1 T450` (deferred), `1.2 B550`, `done 1`, `ready`,
/// `starttls`, `closed Quit 221`.
struct H {
    s: ClientSession,
    log: Vec<String>,
    events: Vec<ClientEvent>,
}

impl H {
    fn new(cfg: ClientConfig) -> Self {
        H {
            s: ClientSession::new(Arc::new(cfg)),
            log: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Past greeting and EHLO with these capabilities.
    fn ready(cfg: ClientConfig, caps: &str) -> Self {
        let mut h = Self::new(cfg);
        h.rx("220 mx.example ESMTP\r\n");
        assert_eq!(h.tx(), "EHLO relay.example\r\n");
        h.rx(caps);
        assert_eq!(h.take_log(), ["ready"]);
        h
    }

    /// One poll_transmit.
    fn tx_one(&mut self) -> (String, Option<Bytes>) {
        let mut out = Vec::new();
        let body = self.s.poll_transmit(&mut out);
        self.drain();
        (String::from_utf8(out).unwrap(), body)
    }

    /// Everything the client writes now, bodies inline.
    fn tx(&mut self) -> String {
        let mut all = String::new();
        loop {
            let (out, body) = self.tx_one();
            all.push_str(&out);
            match body {
                Some(b) => all.push_str(std::str::from_utf8(&b).unwrap()),
                None if out.is_empty() => return all,
                None => {}
            }
        }
    }

    fn rx(&mut self, input: &str) {
        let n = self.s.handle_input(input.as_bytes());
        assert_eq!(n, input.len(), "not all consumed");
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.s.poll_event() {
            self.log.push(describe(&ev));
            self.events.push(ev);
        }
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// The reply of the only outcome event for (txn, rcpt).
    fn reply_of(&self, txn: u64, rcpt: usize) -> Reply {
        let mut found = self.events.iter().filter_map(|e| match e {
            ClientEvent::RcptOutcome {
                txn: t,
                rcpt: r,
                outcome,
            } if *t == txn && *r == rcpt => Some(outcome.reply().clone()),
            _ => None,
        });
        let r = found.next().expect("no outcome");
        assert!(found.next().is_none(), "two outcomes");
        r
    }
}

fn describe(ev: &ClientEvent) -> String {
    match ev {
        ClientEvent::Ready => "ready".into(),
        ClientEvent::StartTls => "starttls".into(),
        ClientEvent::RcptOutcome { txn, rcpt, outcome } => {
            let (k, r) = match outcome {
                Outcome::Delivered(r) => ('D', r),
                Outcome::Deferred(r) => ('T', r),
                Outcome::Bounced(r) => ('B', r),
            };
            format!("{txn}.{rcpt} {k}{}", r.code())
        }
        ClientEvent::TxnDone { txn } => format!("done {txn}"),
        ClientEvent::Closed { reason, reply } => match reply {
            Some(r) => format!("closed {reason:?} {}", r.code()),
            None => format!("closed {reason:?}"),
        },
    }
}

// ---- setup -----------------------------------------------------------------

#[test]
fn greeting_and_ehlo() {
    let mut h = H::new(cfg());
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    assert!(!h.s.is_ready());
    h.rx("220-mx.example ESMTP\r\n220 welcome\r\n");
    assert_eq!(h.tx(), "EHLO relay.example\r\n");
    h.rx(CAPS_BDAT);
    assert_eq!(h.take_log(), ["ready"]);
    let caps = h.s.capabilities();
    assert!(caps.esmtp && caps.pipelining && caps.chunking && caps.smtputf8);
    assert_eq!(caps.max_size(), Some(1000));
    assert!(h.s.is_ready() && h.s.is_idle());
    assert_eq!(h.s.timeout(), None);
    assert_eq!(h.tx(), "");
}

#[test]
fn ehlo_name_is_sanitised() {
    let mut h = H::new(ClientConfig {
        ehlo_name: "bad\r\nRCPT TO:<x>".into(),
        ..cfg()
    });
    h.rx("220 mx\r\n");
    assert_eq!(h.tx(), "EHLO badRCPT TO:<x>\r\n");
}

#[test]
fn helo_fallback_has_no_extensions() {
    let mut h = H::new(cfg());
    h.rx("220 mx\r\n");
    assert_eq!(h.tx(), "EHLO relay.example\r\n");
    h.rx("502 5.5.1 Command not implemented\r\n");
    assert_eq!(h.tx(), "HELO relay.example\r\n");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    h.rx("250 mx.example\r\n");
    assert_eq!(h.take_log(), ["ready"]);
    assert!(!h.s.capabilities().esmtp);
    // No parameters on MAIL after HELO, and lock-step.
    h.s.enqueue(txn(1, &["a@y"], BODY));
    assert_eq!(h.tx(), "MAIL FROM:<s@x.example>\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "RCPT TO:<a@y>\r\n");
}

#[test]
fn ehlo_and_helo_refused() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("550 no\r\n");
    assert_eq!(h.tx(), "HELO relay.example\r\n");
    h.rx("550 5.7.1 go away\r\n");
    assert_eq!(h.take_log(), ["1.0 T550", "1.1 T550", "done 1"]);
    assert_eq!(h.tx(), "QUIT\r\n");
    h.rx("221 bye\r\n");
    assert_eq!(h.take_log(), ["closed Refused 550"]);
}

#[test]
fn ehlo_4xx_defers_and_quits() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("451 4.3.0 later\r\n");
    assert_eq!(h.take_log(), ["1.0 T451", "done 1"]);
    assert_eq!(h.tx(), "QUIT\r\n");
    // The server closing instead of answering QUIT ends it just the same.
    h.s.handle_closed();
    h.drain();
    assert_eq!(h.take_log(), ["closed Refused 451"]);
}

#[test]
fn greeting_554_defers_and_quits() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.s.enqueue(txn(2, &["c@y"], BODY));
    h.rx("554 5.7.1 You are not welcome\r\n");
    assert_eq!(
        h.take_log(),
        ["1.0 T554", "1.1 T554", "done 1", "2.0 T554", "done 2"]
    );
    assert_eq!(h.reply_of(1, 0).text(), "You are not welcome");
    assert_eq!(h.tx(), "QUIT\r\n");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    h.rx("221 2.0.0 bye\r\n");
    assert_eq!(h.take_log(), ["closed Refused 554"]);
    assert_eq!(h.s.in_flight(), 0);
    // Late enqueue: deferred at once, never lost.
    h.s.enqueue(txn(3, &["d@y"], BODY));
    h.drain();
    assert_eq!(h.take_log(), ["3.0 T451", "done 3"]);
    assert_eq!(h.tx(), "");
}

#[test]
fn greeting_421_closes_without_quit() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("421 4.3.2 busy\r\n");
    assert_eq!(
        h.take_log(),
        ["1.0 T421", "done 1", "closed ServiceClosing 421"]
    );
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.timeout(), None);
}

#[test]
fn starttls_opportunistic() {
    let mut h = H::new(ClientConfig {
        tls_policy: TlsPolicy::Opportunistic,
        ..cfg()
    });
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250-STARTTLS\r\n250 SIZE 10\r\n");
    assert_eq!(h.tx(), "STARTTLS\r\n");
    h.rx("220 2.0.0 go ahead\r\n");
    assert_eq!(h.take_log(), ["starttls"]);
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.handle_input(b""), 0);
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    h.s.tls_established();
    assert!(h.s.is_tls());
    // Plaintext capabilities are forgotten.
    assert_eq!(h.s.capabilities(), &Capabilities::default());
    assert_eq!(h.tx(), "EHLO relay.example\r\n");
    h.rx("250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
    assert_eq!(h.take_log(), ["ready"]);
    assert!(h.s.capabilities().pipelining);
    assert_eq!(h.s.capabilities().size, None);
}

#[test]
fn starttls_454_opportunistic_continues_in_plaintext() {
    let mut h = H::new(ClientConfig {
        tls_policy: TlsPolicy::Opportunistic,
        ..cfg()
    });
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
    assert_eq!(h.tx(), "STARTTLS\r\n");
    h.rx("454 4.7.0 TLS not available\r\n");
    assert_eq!(h.take_log(), ["ready"]);
    assert!(!h.s.is_tls());
    assert!(h.s.capabilities().pipelining);
    assert_eq!(h.tx(), "");
}

#[test]
fn starttls_454_required_defers() {
    let mut h = H::new(ClientConfig {
        tls_policy: TlsPolicy::Required,
        ..cfg()
    });
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    assert_eq!(h.tx(), "STARTTLS\r\n");
    h.rx("454 4.7.0 TLS not available\r\n");
    assert_eq!(h.take_log(), ["1.0 T454", "done 1"]);
    assert_eq!(h.tx(), "QUIT\r\n");
    h.rx("221 bye\r\n");
    assert_eq!(h.take_log(), ["closed TlsUnavailable 454"]);
}

#[test]
fn starttls_required_but_not_offered() {
    let mut h = H::new(ClientConfig {
        tls_policy: TlsPolicy::Required,
        ..cfg()
    });
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx(CAPS_PIPE);
    assert_eq!(h.take_log(), ["1.0 T451", "done 1"]);
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((4, 7, 4)));
    assert_eq!(h.tx(), "QUIT\r\n");
    h.rx("221 bye\r\n");
    assert_eq!(h.take_log(), ["closed TlsUnavailable 451"]);
}

#[test]
fn starttls_disabled_ignores_the_offer() {
    let mut h = H::new(cfg());
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    assert_eq!(h.take_log(), ["ready"]);
    assert_eq!(h.tx(), "");
}

#[test]
fn plaintext_after_starttls_reply_is_rejected() {
    let mut h = H::new(ClientConfig {
        tls_policy: TlsPolicy::Opportunistic,
        ..cfg()
    });
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    h.tx();
    // A man in the middle appends a reply to the 220.
    h.rx("220 go\r\n250 injected\r\n");
    assert_eq!(
        h.take_log(),
        ["starttls", "1.0 T451", "done 1", "closed ProtocolError 451"]
    );
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((4, 5, 0)));
    // Late tls_established is ignored.
    h.s.tls_established();
    assert_eq!(h.tx(), "");
}

fn auth_cfg(policy: TlsPolicy) -> ClientConfig {
    ClientConfig {
        tls_policy: policy,
        auth: Some(("user".into(), "secret".into())),
        ..cfg()
    }
}

#[test]
fn auth_plain_after_tls() {
    let mut h = H::new(auth_cfg(TlsPolicy::Opportunistic));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n");
    assert_eq!(h.tx(), "STARTTLS\r\n");
    h.rx("220 go\r\n");
    h.s.tls_established();
    assert_eq!(h.tx(), "EHLO relay.example\r\n");
    h.rx("250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
    // base64("\0user\0secret")
    assert_eq!(h.tx(), "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    h.rx("235 2.7.0 ok\r\n");
    assert_eq!(h.take_log(), ["starttls", "ready"]);
    assert!(!format!("{:?}", auth_cfg(TlsPolicy::Required)).contains("secret"));
}

#[test]
fn auth_refused_or_unavailable() {
    // Refused credentials.
    let mut h = H::new(auth_cfg(TlsPolicy::Required));
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    h.tx();
    h.rx("220 go\r\n");
    h.s.tls_established();
    h.tx();
    h.rx("250-mx\r\n250 AUTH PLAIN\r\n");
    h.tx();
    h.rx("535 5.7.8 bad credentials\r\n");
    assert_eq!(h.take_log()[1..], ["1.0 T535", "done 1"]);
    assert_eq!(h.tx(), "QUIT\r\n");
    h.rx("221 bye\r\n");
    assert_eq!(h.take_log(), ["closed AuthFailed 535"]);

    // Never over plaintext, whatever the TLS policy says.
    let mut h = H::new(auth_cfg(TlsPolicy::Disabled));
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n");
    assert_eq!(h.take_log(), ["1.0 T451", "done 1"]);
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((4, 7, 10)));
    assert_eq!(h.tx(), "QUIT\r\n");

    // PLAIN not offered.
    let mut h = H::new(auth_cfg(TlsPolicy::Opportunistic));
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    h.tx();
    h.rx("220 go\r\n");
    h.s.tls_established();
    h.tx();
    h.rx("250-mx\r\n250 AUTH CRAM-MD5\r\n");
    assert_eq!(h.take_log(), ["starttls", "1.0 T451", "done 1"]);
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((4, 7, 4)));
}

// ---- transactions ------------------------------------------------------------

#[test]
fn pipelined_data_transaction() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    let t = txn(7, &["a@y", "b@y"], BODY);
    let body = t.body.clone();
    h.s.enqueue(t);
    assert_eq!(h.s.in_flight(), 2);
    assert!(!h.s.is_idle());
    let (out, b) = h.tx_one();
    assert_eq!(
        out,
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
    );
    assert!(b.is_none());
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    h.rx("250 2.1.0 ok\r\n250 2.1.5 ok\r\n");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(300)));
    h.rx("250 2.1.5 ok\r\n");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(120)));
    h.rx("354 go ahead\r\n");
    assert_eq!(h.s.timeout(), None);
    // The body: the caller's own bytes, no copy.
    let (out, b) = h.tx_one();
    assert_eq!(out, "");
    let b = b.expect("body");
    assert_eq!(b.as_ptr(), body.as_ptr());
    assert_eq!(b.len(), body.len());
    let (out, b) = h.tx_one();
    assert_eq!(out, ".\r\n");
    assert!(b.is_none());
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(600)));
    assert_eq!(h.take_log(), Vec::<String>::new());
    h.rx("250-2.0.0 Ok: queued\r\n250 2.0.0 as 12345\r\n");
    assert_eq!(h.take_log(), ["7.0 D250", "7.1 D250", "done 7"]);
    assert_eq!(h.reply_of(7, 1).text(), "Ok: queued\nas 12345");
    assert_eq!(h.reply_of(7, 1).enhanced(), Some((2, 0, 0)));
    // One reply shared by all recipients.
    let shared: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::RcptOutcome {
                outcome: Outcome::Delivered(r),
                ..
            } => Some(Arc::as_ptr(r)),
            _ => None,
        })
        .collect();
    assert_eq!(shared.len(), 2);
    assert_eq!(shared[0], shared[1]);
    assert!(h.s.is_idle());
    assert_eq!(h.s.in_flight(), 0);
}

#[test]
fn mail_parameters() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    let mut t = txn(1, &["a@y"], "x\r\n");
    t.eight_bit = true;
    t.smtputf8 = true;
    t.reverse_path = "".into();
    h.s.enqueue(t);
    assert_eq!(
        h.tx(),
        "MAIL FROM:<> SIZE=3 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<a@y>\r\nDATA\r\n"
    );
}

#[test]
fn dot_stuffed_body_is_one_copy_with_end_marker() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], ".hidden\r\nline\r\n.\r\nend"));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    let (out, b) = h.tx_one();
    assert_eq!(out, "");
    assert_eq!(&b.unwrap()[..], b"..hidden\r\nline\r\n..\r\nend\r\n.\r\n");
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(600)));
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1"]);
}

#[test]
fn bare_cr_and_lf_from_the_journal_never_reach_the_wire() {
    // A body as an old journal could hold it: every end-of-data look-alike.
    let body = "a\n.\nb\n.\r\nc\r\n.\nd\r.\re\r.\r\nf\r";
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], body));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    let (out, b) = h.tx_one();
    assert_eq!(out, "");
    assert_eq!(
        &b.unwrap()[..],
        b"a\r\n..\r\nb\r\n..\r\nc\r\n..\r\nd\r\n..\r\ne\r\n..\r\nf\r\n.\r\n"
    );
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1"]);
    // With BDAT the same lines go out, counted after the rewrite.
    let mut h = H::ready(
        ClientConfig {
            prefer_bdat: true,
            ..cfg()
        },
        CAPS_BDAT,
    );
    h.s.enqueue(txn(1, &["a@y"], "x\ry\n"));
    let (out, b) = h.tx_one();
    assert!(out.ends_with("BDAT 6 LAST\r\n"), "{out}");
    assert_eq!(&b.unwrap()[..], b"x\r\ny\r\n");
}

#[test]
fn body_without_final_crlf_and_empty_body() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], "no newline"));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(h.tx(), "no newline\r\n.\r\n");
    h.rx("250 ok\r\n");
    h.s.enqueue(txn(2, &["a@y"], ""));
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=0\r\nRCPT TO:<a@y>\r\nDATA\r\n"
    );
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    let (out, b) = h.tx_one();
    assert_eq!((out.as_str(), b), (".\r\n", None));
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1", "2.0 D250", "done 2"]);
}

#[test]
fn bdat_is_one_write_plus_the_body() {
    let mut h = H::ready(
        ClientConfig {
            prefer_bdat: true,
            ..cfg()
        },
        CAPS_BDAT,
    );
    let t = txn(1, &["a@y", "b@y"], BODY);
    let body = t.body.clone();
    h.s.enqueue(t);
    let (out, b) = h.tx_one();
    assert_eq!(
        out,
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nBDAT 21 LAST\r\n"
    );
    assert_eq!(b.unwrap().as_ptr(), body.as_ptr());
    assert_eq!(h.tx(), "");
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n");
    assert_eq!(h.s.timeout(), Some(Duration::from_secs(600)));
    h.rx("250 2.0.0 queued\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "1.1 D250", "done 1"]);
    assert!(h.s.is_idle());
}

#[test]
fn mixed_rcpt_outcomes() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y", "c@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n");
    assert!(h.take_log().is_empty());
    h.rx("450 4.2.1 mailbox busy\r\n");
    assert_eq!(h.take_log(), ["1.1 T450"]);
    h.rx("550 5.1.1 no such user\r\n354 go\r\n");
    assert_eq!(h.take_log(), ["1.2 B550"]);
    assert_eq!(h.reply_of(1, 2).text(), "no such user");
    h.tx();
    h.rx("250 queued\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1"]);
}

#[test]
fn mail_rejected_then_rset_before_next() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.s.enqueue(txn(2, &["c@y"], BODY));
    h.tx();
    h.rx("550 5.7.1 sender rejected\r\n");
    assert_eq!(h.take_log(), ["1.0 B550", "1.1 B550", "done 1"]);
    h.rx("503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    assert!(h.take_log().is_empty());
    assert_eq!(
        h.tx(),
        "RSET\r\nMAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<c@y>\r\nDATA\r\n"
    );
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["2.0 D250", "done 2"]);
}

#[test]
fn mail_4xx_defers_everyone() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.tx();
    h.rx("451 4.3.0 try later\r\n503 no\r\n250 odd but ignored\r\n554 no\r\n");
    assert_eq!(h.take_log(), ["1.0 T451", "1.1 T451", "done 1"]);
    assert!(h.s.is_idle());
}

#[test]
fn no_recipient_accepted_no_body_with_data() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.s.enqueue(txn(2, &["c@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n550 no\r\n551 no\r\n554 5.5.1 no valid recipients\r\n");
    assert_eq!(h.take_log(), ["1.0 B550", "1.1 B551", "done 1"]);
    // No body; RSET is pipelined with the next transaction.
    assert_eq!(
        h.tx(),
        "RSET\r\nMAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<c@y>\r\nDATA\r\n"
    );
}

#[test]
fn stray_354_without_recipients_sends_an_empty_end() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], "no crlf at end"));
    h.tx();
    h.rx("250 ok\r\n550 no\r\n354 go\r\n");
    assert_eq!(h.tx(), ".\r\n");
    h.rx("554 no recipients\r\n");
    assert_eq!(h.take_log(), ["1.0 B550", "done 1"]);
    h.s.enqueue(txn(2, &["c@y"], BODY));
    assert!(h.tx().starts_with("RSET\r\nMAIL"));
}

#[test]
fn no_recipient_accepted_with_bdat() {
    let mut h = H::ready(
        ClientConfig {
            prefer_bdat: true,
            ..cfg()
        },
        CAPS_BDAT,
    );
    h.s.enqueue(txn(1, &["a@y"], BODY));
    let first = h.tx();
    assert!(first.ends_with("BDAT 21 LAST\r\nSubject: hi\r\n\r\nbody\r\n"));
    h.rx("250 ok\r\n550 no\r\n503 5.5.1 no recipients\r\n");
    assert_eq!(h.take_log(), ["1.0 B550", "done 1"]);
    h.s.enqueue(txn(2, &["c@y"], BODY));
    assert!(h.tx().starts_with("RSET\r\nMAIL FROM:<s@x.example>"));
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n");
    assert_eq!(h.take_log(), ["2.0 D250", "done 2"]);
}

#[test]
fn final_451_and_554() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    h.tx();
    h.rx("451 4.3.0 queue trouble\r\n");
    assert_eq!(h.take_log(), ["1.1 B550", "1.0 T451", "done 1"]);
    h.s.enqueue(txn(2, &["c@y"], BODY));
    assert!(h.tx().starts_with("RSET\r\nMAIL"));
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("554 5.7.1 spam\r\n");
    assert_eq!(h.take_log(), ["2.0 B554", "done 2"]);
}

#[test]
fn data_refused_with_recipients() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n451 4.3.1 no space\r\n");
    assert_eq!(h.take_log(), ["1.0 T451", "done 1"]);
    assert!(h.s.is_idle());
    assert_eq!(h.tx(), "");
}

#[test]
fn service_closing_421_mid_group() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y", "c@y"], BODY));
    h.s.enqueue(txn(2, &["d@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n550 no\r\n421 4.7.0 too fast, closing\r\n250 ignored\r\n");
    assert_eq!(
        h.take_log(),
        [
            "1.1 B550",
            "1.0 T421",
            "1.2 T421",
            "done 1",
            "2.0 T421",
            "done 2",
            "closed ServiceClosing 421"
        ]
    );
    assert_eq!(h.tx(), "");
    assert_eq!(h.s.in_flight(), 0);
    // Everything after close is discarded and nothing changes.
    assert_eq!(h.s.handle_input(b"250 x\r\n"), 7);
    h.s.handle_closed();
    h.s.handle_timeout();
    h.drain();
    assert!(h.take_log().is_empty());
}

#[test]
fn connection_closed_mid_data() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.s.enqueue(txn(2, &["c@y"], BODY));
    h.tx();
    h.rx("250 ok\r\n250 ok\r\n450 busy\r\n354 go\r\n");
    let (_, body) = h.tx_one();
    assert!(body.is_some());
    h.s.handle_closed();
    h.drain();
    assert_eq!(
        h.take_log(),
        [
            "1.1 T450",
            "1.0 T451",
            "done 1",
            "2.0 T451",
            "done 2",
            "closed ConnectionLost 451"
        ]
    );
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((4, 4, 2)));
    assert_eq!(h.tx(), "");
}

#[test]
fn timeouts_per_phase() {
    let t = Timeouts::default();
    let c = ClientConfig {
        timeouts: Timeouts {
            greeting: Duration::from_secs(1),
            ehlo: Duration::from_secs(2),
            mail: Duration::from_secs(3),
            rcpt: Duration::from_secs(4),
            data_init: Duration::from_secs(5),
            data_termination: Duration::from_secs(6),
            other: Duration::from_secs(7),
            ..t
        },
        ..cfg()
    };
    assert_eq!(t.data_block, Duration::from_secs(180));
    let secs = |h: &H| h.s.timeout().map(|d| d.as_secs());
    let mut h = H::new(c.clone());
    assert_eq!(secs(&h), Some(1));
    h.rx("220 mx\r\n");
    assert_eq!(secs(&h), None); // EHLO not written yet
    h.tx();
    assert_eq!(secs(&h), Some(2));
    h.rx(CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.tx();
    assert_eq!(secs(&h), Some(3));
    h.rx("250 ok\r\n");
    assert_eq!(secs(&h), Some(4));
    h.s.handle_timeout();
    h.drain();
    assert_eq!(
        h.take_log(),
        ["ready", "1.0 T451", "done 1", "closed Timeout 451"]
    );
    let r = h.reply_of(1, 0);
    assert_eq!(r.enhanced(), Some((4, 4, 1)));
    assert_eq!(r.text(), "Timeout waiting for RCPT reply");

    // Each phase names itself in the deferral.
    let cases: [(&str, &[&str], &str); 5] = [
        ("greeting", &[], "Timeout waiting for greeting"),
        ("ehlo", &["220 mx\r\n"], "Timeout waiting for EHLO reply"),
        (
            "data",
            &["220 mx\r\n", CAPS_PIPE, "250 ok\r\n250 ok\r\n"],
            "Timeout waiting for DATA reply",
        ),
        (
            "end",
            &["220 mx\r\n", CAPS_PIPE, "250 ok\r\n250 ok\r\n354 go\r\n"],
            "Timeout waiting for reply to end of data",
        ),
        (
            "tls",
            &["220 mx\r\n", "250-mx\r\n250 STARTTLS\r\n", "220 go\r\n"],
            "Timeout during STARTTLS",
        ),
    ];
    for (name, script, text) in cases {
        let mut h = H::new(ClientConfig {
            tls_policy: TlsPolicy::Opportunistic,
            ..c.clone()
        });
        h.s.enqueue(txn(1, &["a@y"], BODY));
        h.tx();
        for input in script {
            h.rx(input);
            h.tx();
        }
        if name == "end" {
            assert_eq!(secs(&h), Some(6));
        }
        if name == "data" {
            assert_eq!(secs(&h), Some(5));
        }
        if name == "tls" {
            assert_eq!(secs(&h), Some(7));
        }
        h.s.handle_timeout();
        h.drain();
        assert_eq!(h.reply_of(1, 0).text(), text, "{name}");
        assert!(
            h.log.last().unwrap().starts_with("closed Timeout"),
            "{name}"
        );
    }

    // A timeout while waiting for 221 just closes with the stored reason.
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.quit();
    assert_eq!(h.tx(), "QUIT\r\n");
    h.s.handle_timeout();
    h.drain();
    assert_eq!(h.take_log(), ["closed Quit"]);
}

#[test]
fn size_smtputf8_and_8bit_bounce_without_sending() {
    let mut h = H::ready(cfg(), "250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    let mut u = txn(2, &["c@y"], "x");
    u.smtputf8 = true;
    h.s.enqueue(u);
    let mut e = txn(3, &["d@y"], "x");
    e.eight_bit = true;
    h.s.enqueue(e);
    assert_eq!(h.tx(), "");
    assert_eq!(
        h.take_log(),
        ["1.0 B552", "1.1 B552", "done 1", "2.0 B550", "done 2", "3.0 B554", "done 3"]
    );
    assert_eq!(h.reply_of(1, 0).enhanced(), Some((5, 3, 4)));
    assert_eq!(h.reply_of(2, 0).enhanced(), Some((5, 6, 7)));
    assert_eq!(h.reply_of(3, 0).enhanced(), Some((5, 6, 3)));
    assert!(h.s.is_idle());
    // A message that fits still goes.
    h.s.enqueue(txn(4, &["e@y"], "tiny\r\n"));
    assert!(h.tx().starts_with("MAIL FROM:<s@x.example> SIZE=6\r\n"));
}

#[test]
fn unusable_addresses_bounce_locally() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "evil\r\nDATA", "b@y", "<c@y>"], BODY));
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
    );
    assert_eq!(h.take_log(), ["1.1 B553", "1.3 B553"]);
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "1.2 D250", "done 1"]);

    let mut t = txn(2, &["a@y"], BODY);
    t.reverse_path = "x>\r\nRSET".into();
    h.s.enqueue(t);
    h.s.enqueue(txn(3, &["only\n"], BODY));
    assert_eq!(h.tx(), "");
    assert_eq!(h.take_log(), ["2.0 B553", "done 2", "3.0 B553", "done 3"]);
}

#[test]
fn empty_transaction_is_done_at_once() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(9, &[], BODY));
    h.drain();
    assert_eq!(h.take_log(), ["done 9"]);
    h.rx("220 mx\r\n");
    h.tx();
    h.rx(CAPS_PIPE);
    assert_eq!(h.take_log(), ["ready"]);
    assert_eq!(h.tx(), "");
}

#[test]
fn transactions_queued_before_ready_go_after_ehlo() {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y"], BODY));
    assert_eq!(h.tx(), "");
    h.rx("220 mx\r\n");
    assert_eq!(h.tx(), "EHLO relay.example\r\n");
    h.rx(CAPS_PIPE);
    assert_eq!(h.take_log(), ["ready"]);
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<a@y>\r\nDATA\r\n"
    );
}

#[test]
fn lock_step_without_pipelining() {
    let mut h = H::ready(cfg(), CAPS_LOCKSTEP);
    h.s.enqueue(txn(1, &["a@y", "b@y", "c@y"], BODY));
    assert_eq!(h.tx(), "MAIL FROM:<s@x.example> SIZE=21\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "RCPT TO:<a@y>\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "RCPT TO:<b@y>\r\n");
    h.rx("550 no\r\n");
    assert_eq!(h.take_log(), ["1.1 B550"]);
    assert_eq!(h.tx(), "RCPT TO:<c@y>\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "DATA\r\n");
    h.rx("354 go\r\n");
    assert_eq!(h.tx(), "Subject: hi\r\n\r\nbody\r\n.\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "1.2 D250", "done 1"]);
    assert!(h.s.is_idle());
}

#[test]
fn lock_step_failures_skip_commands_and_rset() {
    let mut h = H::ready(cfg(), CAPS_LOCKSTEP);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.s.enqueue(txn(2, &["c@y"], BODY));
    h.s.enqueue(txn(3, &["d@y"], BODY));
    h.tx();
    h.rx("451 4.3.0 later\r\n");
    assert_eq!(h.take_log(), ["1.0 T451", "1.1 T451", "done 1"]);
    // No RCPT after a refused MAIL; RSET alone first.
    assert_eq!(h.tx(), "RSET\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "MAIL FROM:<s@x.example> SIZE=21\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "RCPT TO:<c@y>\r\n");
    h.rx("550 no\r\n");
    // Nobody accepted: no DATA.
    assert_eq!(h.tx(), "RSET\r\n");
    assert_eq!(h.take_log(), ["2.0 B550", "done 2"]);
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "MAIL FROM:<s@x.example> SIZE=21\r\n");
}

#[test]
fn lock_step_bdat() {
    let mut h = H::ready(
        ClientConfig {
            prefer_bdat: true,
            ..cfg()
        },
        "250-mx\r\n250 CHUNKING\r\n",
    );
    h.s.enqueue(txn(1, &["a@y"], BODY));
    assert_eq!(h.tx(), "MAIL FROM:<s@x.example>\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "RCPT TO:<a@y>\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), format!("BDAT 21 LAST\r\n{BODY}"));
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1"]);
}

#[test]
fn pipelined_bdat_window() {
    let mut h = H::ready(
        ClientConfig {
            prefer_bdat: true,
            max_pipelined_txns: 2,
            ..cfg()
        },
        CAPS_BDAT,
    );
    for id in 1..=3 {
        h.s.enqueue(txn(id, &["a@y"], "m\r\n"));
    }
    let group = "MAIL FROM:<s@x.example> SIZE=3\r\nRCPT TO:<a@y>\r\nBDAT 3 LAST\r\n";
    let (out, b) = h.tx_one();
    assert_eq!(out, group);
    assert!(b.is_some());
    // The second is pipelined behind the first, with an RSET in front.
    let (out, b) = h.tx_one();
    assert_eq!(out, format!("RSET\r\n{group}"));
    assert!(b.is_some());
    // The window is full.
    assert_eq!(h.tx(), "");
    h.rx("250 ok\r\n250 ok\r\n250 first\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1"]);
    assert_eq!(h.tx(), format!("RSET\r\n{group}m\r\n"));
    h.rx("250 reset\r\n250 ok\r\n550 no\r\n503 no rcpt\r\n");
    assert_eq!(h.take_log(), ["2.0 B550", "done 2"]);
    h.rx("250 reset\r\n250 ok\r\n250 ok\r\n250 third\r\n");
    assert_eq!(h.take_log(), ["3.0 D250", "done 3"]);
    assert!(h.s.is_idle());
    // After a failure with nothing in flight, RSET still leads.
    h.s.enqueue(txn(4, &["a@y"], "m\r\n"));
    assert_eq!(h.tx(), format!("{group}m\r\n"));
}

#[test]
fn back_to_back_with_data() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], "one\r\n"));
    h.s.enqueue(txn(2, &["b@y"], "two\r\n"));
    let group = |r: &str| format!("MAIL FROM:<s@x.example> SIZE=5\r\nRCPT TO:<{r}>\r\nDATA\r\n");
    assert_eq!(h.tx(), group("a@y"));
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(h.tx(), "one\r\n.\r\n");
    // The next transaction waits for the final reply.
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), group("b@y"));
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(h.tx(), "two\r\n.\r\n");
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1", "2.0 D250", "done 2"]);
}

#[test]
fn large_transactions_are_split() {
    let mut h = H::ready(
        ClientConfig {
            max_rcpt_per_txn: 2,
            ..cfg()
        },
        CAPS_PIPE,
    );
    let t = txn(1, &["a@y", "b@y", "c@y", "d@y", "e@y"], BODY);
    let body = t.body.clone();
    h.s.enqueue(t);
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<a@y>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
    );
    h.rx("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    let (_, b) = h.tx_one();
    assert_eq!(b.unwrap().as_ptr(), body.as_ptr());
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "1.1 D250"]);
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\nDATA\r\n"
    );
    h.rx("250 ok\r\n450 later\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(
        h.tx(),
        "MAIL FROM:<s@x.example> SIZE=21\r\nRCPT TO:<e@y>\r\nDATA\r\n"
    );
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(h.take_log(), ["1.2 T450", "1.3 D250", "1.4 D250", "done 1"]);
}

#[test]
fn quit_when_idle_and_after_work() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.quit();
    assert!(!h.s.is_ready());
    assert_eq!(h.tx(), "QUIT\r\n");
    h.rx("221 2.0.0 bye\r\n");
    assert_eq!(h.take_log(), ["closed Quit"]);

    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.s.quit();
    h.s.enqueue(txn(2, &["b@y"], BODY));
    h.drain();
    assert_eq!(h.take_log(), ["2.0 T451", "done 2"]);
    assert!(h.tx().starts_with("MAIL"));
    h.rx("250 ok\r\n250 ok\r\n354 go\r\n");
    h.tx();
    h.rx("250 ok\r\n");
    assert_eq!(h.tx(), "QUIT\r\n");
    // An unexpected reply to QUIT still ends the session.
    h.rx("500 what\r\n");
    assert_eq!(h.take_log(), ["1.0 D250", "done 1", "closed Quit"]);
}

#[test]
fn protocol_errors_defer_and_close() {
    let garbage: [(&str, &str); 6] = [
        ("garbage", "hello there\r\n"),
        ("bad continuation", "250-ok\r\n251 ok\r\n"),
        ("3xx to MAIL", "354 what\r\n"),
        ("2xx to DATA", "250 ok\r\n250 ok\r\n250 ok\r\n"),
        ("3xx to final", "250 ok\r\n250 ok\r\n354 go\r\n"),
        ("unsolicited", "250 ok\r\n250 ok\r\n451 no\r\n250 extra\r\n"),
    ];
    for (name, input) in garbage {
        let mut h = H::ready(cfg(), CAPS_PIPE);
        h.s.enqueue(txn(1, &["a@y"], BODY));
        h.s.enqueue(txn(2, &["b@y"], BODY));
        h.tx();
        if name == "3xx to final" {
            h.rx(input);
            h.tx();
            h.rx("354 again\r\n");
        } else {
            h.rx(input);
        }
        let log = h.take_log();
        assert_eq!(log.last().unwrap(), "closed ProtocolError 451", "{name}");
        assert!(log.contains(&"done 1".to_string()), "{name}");
        assert!(log.contains(&"done 2".to_string()), "{name}");
        assert_eq!(h.s.in_flight(), 0, "{name}");
        assert_eq!(h.tx(), "", "{name}");
    }

    // Unsolicited reply when idle; an idle 421 is a polite close instead.
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.rx("250 hm\r\n");
    assert_eq!(h.take_log(), ["closed ProtocolError 451"]);
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.rx("421 4.4.2 idle timeout\r\n");
    assert_eq!(h.take_log(), ["closed ServiceClosing 421"]);

    // Over-long line and over-long reply.
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.tx();
    let long = vec![b'2'; MAX_LINE];
    assert_eq!(h.s.handle_input(&long[..MAX_LINE - 1]), 0);
    assert_eq!(h.s.handle_input(&long), MAX_LINE);
    h.drain();
    assert_eq!(
        h.take_log(),
        ["1.0 T451", "done 1", "closed ProtocolError 451"]
    );
    assert_eq!(h.reply_of(1, 0).text(), "Reply line from server too long");
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.rx(&"250-x\r\n".repeat(MAX_LINES + 1));
    assert_eq!(h.take_log(), ["closed ProtocolError 451"]);

    // RSET refused.
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y"], BODY));
    h.tx();
    h.rx("550 no\r\n503 x\r\n503 x\r\n");
    h.s.enqueue(txn(2, &["b@y"], BODY));
    h.tx();
    h.rx("500 what is RSET\r\n");
    assert_eq!(
        h.take_log(),
        [
            "1.0 B550",
            "done 1",
            "2.0 T451",
            "done 2",
            "closed ProtocolError 451"
        ]
    );

    // A 334 to AUTH (we sent an initial response).
    let mut h = H::new(auth_cfg(TlsPolicy::Opportunistic));
    h.rx("220 mx\r\n");
    h.tx();
    h.rx("250-mx\r\n250 STARTTLS\r\n");
    h.tx();
    h.rx("220 go\r\n");
    h.s.tls_established();
    h.tx();
    h.rx("250-mx\r\n250 AUTH PLAIN\r\n");
    assert!(h.tx().starts_with("AUTH PLAIN "));
    h.rx("334 \r\n");
    assert_eq!(h.take_log(), ["starttls", "closed ProtocolError 451"]);
    assert_eq!(h.tx(), "");
}

#[test]
fn replies_split_byte_by_byte() {
    let mut h = H::ready(cfg(), CAPS_PIPE);
    h.s.enqueue(txn(1, &["a@y", "b@y"], BODY));
    h.tx();
    let input = b"250-2.1.0 sender\r\n250 2.1.0 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n";
    let mut buf = Vec::new();
    for &b in input.iter() {
        buf.push(b);
        let n = h.s.handle_input(&buf);
        buf.drain(..n);
    }
    assert!(buf.is_empty());
    h.drain();
    assert_eq!(h.take_log(), ["1.1 B550"]);
    assert_eq!(h.reply_of(1, 1).text(), "no");
    assert!(h.tx().ends_with(".\r\n"));
}

// ---- against the crate's own server -----------------------------------------

mod with_server {
    use super::*;
    use crate::smtp::server::{
        Event, Message, PeerInfo, ServerConfig, ServerSession, TlsInfo, Verdict,
    };

    /// Runs client and server against each other until neither moves.
    fn converse(
        c: &mut ClientSession,
        s: &mut ServerSession,
        events: &mut Vec<ClientEvent>,
    ) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut to_client: Vec<u8> = Vec::new();
        let mut to_server: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            let before = to_client.len();
            s.poll_transmit(&mut to_client);
            moved |= to_client.len() != before;
            let n = c.handle_input(&to_client);
            moved |= n > 0;
            to_client.drain(..n);
            while let Some(ev) = c.poll_event() {
                moved = true;
                if ev == ClientEvent::StartTls {
                    c.tls_established();
                }
                events.push(ev);
            }
            loop {
                let mut out = Vec::new();
                let body = c.poll_transmit(&mut out);
                if out.is_empty() && body.is_none() {
                    break;
                }
                moved = true;
                to_server.extend_from_slice(&out);
                if let Some(b) = body {
                    to_server.extend_from_slice(&b);
                }
            }
            let n = s.handle_input(&to_server, 1_795_388_709);
            moved |= n > 0;
            to_server.drain(..n);
            while let Some(ev) = s.poll_event() {
                moved = true;
                match ev {
                    Event::StartTls => {
                        s.poll_transmit(&mut to_client);
                        s.tls_established(TlsInfo {
                            version: "TLSv1.3",
                            cipher: "TLS_AES_128_GCM_SHA256".into(),
                        });
                    }
                    Event::Auth { .. } => s.auth_result(true),
                    Event::Message(m) => {
                        messages.push(m);
                        s.decide(Verdict::Accepted {
                            queue_id: messages.len() as u64,
                        });
                    }
                }
            }
            if !moved {
                return messages;
            }
        }
        panic!("no quiescence");
    }

    fn server(relay: bool) -> ServerSession {
        ServerSession::new(
            Arc::new(ServerConfig {
                hostname: "mx.example".into(),
                max_recipients: 3,
                offer_starttls: true,
                ..ServerConfig::default()
            }),
            PeerInfo {
                remote: "192.0.2.7:40000".parse().unwrap(),
                local: "198.51.100.1:25".parse().unwrap(),
                relay_allowed: relay,
            },
        )
    }

    fn run(prefer_bdat: bool) {
        let bodies = [
            "Subject: one\r\n\r\nplain\r\n",
            ".leading dot\r\n..two\r\n.\r\nend\r\n",
            "no final newline",
        ];
        let mut c = ClientSession::new(Arc::new(ClientConfig {
            prefer_bdat,
            max_rcpt_per_txn: 2,
            tls_policy: TlsPolicy::Required,
            ..cfg()
        }));
        for (i, body) in bodies.iter().enumerate() {
            c.enqueue(txn(i as u64, &["a@y", "b@y", "c@y"], body));
        }
        let mut s = server(true);
        let mut events = Vec::new();
        let messages = converse(&mut c, &mut s, &mut events);
        assert!(c.is_tls());
        assert!(s.is_tls());
        assert!(c.capabilities().chunking);
        // Split 2 + 1 per message.
        assert_eq!(messages.len(), 6);
        for (i, m) in messages.iter().enumerate() {
            let mut expect = bodies[i / 2].to_string();
            if !expect.ends_with("\r\n") && !prefer_bdat {
                expect.push_str("\r\n");
            }
            let body = std::str::from_utf8(&m.body).unwrap();
            assert!(body.starts_with("Received: "));
            assert!(body.ends_with(&expect), "{body:?} vs {expect:?}");
            let rcpts: &[&str] = if i % 2 == 0 {
                &["a@y", "b@y"]
            } else {
                &["c@y"]
            };
            assert_eq!(m.recipients, rcpts);
        }
        let delivered = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ClientEvent::RcptOutcome {
                        outcome: Outcome::Delivered(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(delivered, 9);
        assert!(c.is_idle());
        c.quit();
        converse(&mut c, &mut s, &mut events);
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Closed {
                reason: CloseReason::Quit,
                reply: None
            })
        );
        assert!(s.wants_close());
    }

    #[test]
    fn data_against_server() {
        run(false);
    }

    #[test]
    fn bdat_against_server() {
        run(true);
    }

    #[test]
    fn server_refusals() {
        // Relay denied: every RCPT 554, nothing sent, RSET before the next.
        let mut c = ClientSession::new(Arc::new(ClientConfig {
            max_pipelined_txns: 3,
            prefer_bdat: true,
            ..cfg()
        }));
        c.enqueue(txn(1, &["a@y", "b@y"], BODY));
        c.enqueue(txn(2, &["c@y"], BODY));
        let mut s = server(false);
        let mut events = Vec::new();
        let messages = converse(&mut c, &mut s, &mut events);
        assert!(messages.is_empty());
        let log: Vec<_> = events.iter().map(describe).collect();
        assert_eq!(
            log,
            ["ready", "1.0 B554", "1.1 B554", "done 1", "2.0 B554", "done 2"]
        );
        assert!(c.is_idle());

        // Too many recipients for the server: the fourth is deferred.
        let mut c = ClientSession::new(Arc::new(cfg()));
        c.enqueue(txn(1, &["a@y", "b@y", "c@y", "d@y"], BODY));
        let mut s = server(true);
        let mut events = Vec::new();
        let messages = converse(&mut c, &mut s, &mut events);
        assert_eq!(messages.len(), 1);
        let log: Vec<_> = events.iter().map(describe).collect();
        assert_eq!(
            log,
            ["ready", "1.3 T452", "1.0 D250", "1.1 D250", "1.2 D250", "done 1"]
        );
    }
}

// ---- properties ----------------------------------------------------------------

/// Server replies, each group released only once the client has written
/// the commands it answers (as a real server would).
const GROUPS: [&str; 6] = [
    "220-mx.example\r\n220 ESMTP\r\n",
    "250-mx\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 ENHANCEDSTATUSCODES\r\n",
    "250 2.1.0 ok\r\n250 ok\r\n451-4.2.1 busy\r\n451 4.2.1 later\r\n550 5.1.1 no\r\n354 go\r\n",
    "250 2.0.0 queued\r\n",
    "250 ok\r\n250 ok\r\n354 go\r\n",
    "550-5.7.1 spam\r\n550 5.7.1 really\r\n",
];

/// Plays [`GROUPS`] delivering the released bytes in pieces of the given
/// sizes (cycled); returns the event log and everything the client wrote.
fn scripted(sizes: &[usize]) -> (Vec<String>, String) {
    let mut h = H::new(cfg());
    h.s.enqueue(txn(1, &["a@y", "b@y", "c@y"], BODY));
    h.s.enqueue(txn(2, &["d@y"], ".dot\r\n"));
    let mut wire = String::new();
    let mut avail: Vec<u8> = GROUPS[0].as_bytes().to_vec();
    let mut released = 1;
    let mut buf = Vec::new();
    let mut k = 0;
    while !avail.is_empty() {
        let take = sizes[k % sizes.len()].min(avail.len());
        k += 1;
        buf.extend(avail.drain(..take));
        let n = h.s.handle_input(&buf);
        buf.drain(..n);
        h.drain();
        let out = h.tx();
        if !out.is_empty() {
            wire.push_str(&out);
            if let Some(g) = GROUPS.get(released) {
                avail.extend_from_slice(g.as_bytes());
                released += 1;
            }
        }
    }
    assert!(buf.is_empty());
    assert_eq!(released, GROUPS.len());
    (h.take_log(), wire)
}

proptest! {
    #[test]
    fn split_replies_do_not_change_anything(sizes in proptest::collection::vec(1usize..24, 1..16)) {
        let (log_whole, wire_whole) = scripted(&[usize::MAX]);
        let (log_split, wire_split) = scripted(&sizes);
        prop_assert_eq!(&log_split, &log_whole);
        prop_assert_eq!(&wire_split, &wire_whole);
        prop_assert_eq!(
            log_whole,
            vec![
                "ready", "1.1 T451", "1.2 B550", "1.0 D250", "done 1", "2.0 B550", "done 2"
            ]
        );
        prop_assert!(wire_whole.ends_with("..dot\r\n.\r\n"));
    }
}

/// A server that answers each command with a randomly chosen reply,
/// mostly sensible, sometimes hostile.
struct FakeServer {
    choices: Vec<u8>,
    next: usize,
    caps: u8,
    size: u64,
    inbuf: Vec<u8>,
    mode: FakeMode,
    out: Vec<u8>,
    /// Replies were injected or dropped: the client's view of who was
    /// accepted can legitimately diverge from ours.
    desync: bool,
    closed: bool,
    /// Current transaction as the server sees it.
    mail_ok: bool,
    accepted: Vec<String>,
    /// Recipients the server took responsibility for.
    delivered: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum FakeMode {
    Command,
    Data,
    Bdat(usize),
}

impl FakeServer {
    fn choose(&mut self) -> u8 {
        let c = self.choices.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        c
    }

    /// Pushes a reply for a command whose success code is `ok`; returns
    /// whether it was a success.
    fn answer(&mut self, ok: &str) -> bool {
        // About 70% sensible answers, so runs get deep into transactions.
        let c = (self.choose() % 56).saturating_sub(16);
        let line: &str = match c {
            0..=23 => ok,
            24 => "450 4.2.1 busy\r\n",
            25 => "451 4.3.0 later\r\n",
            26 => "452 4.5.3 too many\r\n",
            27 => "550 5.1.1 no\r\n",
            28 => "554 5.7.1 refused\r\n",
            29 => "503 5.5.1 sequence\r\n",
            30 => "421 4.3.2 closing\r\n",
            31 => "not a reply\r\n",
            32 => "354 go\r\n",
            33 => "250-2.0.0 multi\r\n250 2.0.0 line\r\n",
            34 => "220 hi\r\n",
            35 => {
                self.desync = true;
                "250 ok\r\n250 extra\r\n"
            }
            36 => {
                self.desync = true;
                "" // silence: the client will time out
            }
            37 => "250-partial\r\n", // never finished
            38 => "599 odd\r\n",
            _ => "500 5.5.2 what\r\n",
        };
        if c == 30 {
            self.closed = true;
        }
        if c == 37 {
            self.desync = true;
        }
        self.out.extend_from_slice(line.as_bytes());
        // Success as the client sees it: same reply class as `ok`.
        !line.is_empty() && line.as_bytes().first() == ok.as_bytes().first()
    }

    fn ehlo_reply(&self) -> String {
        let mut r = String::from("250-mx.example\r\n");
        let names = [
            "PIPELINING",
            "CHUNKING",
            "STARTTLS",
            "8BITMIME",
            "SMTPUTF8",
            "AUTH PLAIN",
            "ENHANCEDSTATUSCODES",
        ];
        for (i, n) in names.iter().enumerate() {
            if self.caps & (1 << i) != 0 {
                r.push_str(&format!("250-{n}\r\n"));
            }
        }
        r.push_str(&format!("250 SIZE {}\r\n", self.size));
        r
    }

    fn recv(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
        loop {
            if self.closed {
                return;
            }
            match self.mode {
                FakeMode::Bdat(n) => {
                    if self.inbuf.len() < n {
                        return;
                    }
                    self.inbuf.drain(..n);
                    self.mode = FakeMode::Command;
                    self.end_of_message();
                }
                FakeMode::Data | FakeMode::Command => {
                    let Some(lf) = self.inbuf.iter().position(|&b| b == b'\n') else {
                        return;
                    };
                    let line: Vec<u8> = self.inbuf.drain(..=lf).collect();
                    if self.mode == FakeMode::Data {
                        if line == b".\r\n" {
                            self.mode = FakeMode::Command;
                            self.end_of_message();
                        }
                        continue;
                    }
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    self.command(&line);
                }
            }
        }
    }

    fn end_of_message(&mut self) {
        let ok = self.answer("250 2.0.0 queued\r\n");
        if ok && self.mail_ok {
            self.delivered.append(&mut self.accepted);
        }
        self.mail_ok = false;
        self.accepted.clear();
    }

    fn command(&mut self, line: &str) {
        let verb = line.split(' ').next().unwrap_or("");
        match verb {
            "EHLO" => {
                let ok = self.ehlo_reply();
                self.answer(&ok);
            }
            "HELO" => {
                self.answer("250 mx.example\r\n");
            }
            "STARTTLS" => {
                self.answer("220 2.0.0 go\r\n");
            }
            "AUTH" => {
                self.answer("235 2.7.0 ok\r\n");
            }
            "RSET" => {
                self.mail_ok = false;
                self.accepted.clear();
                self.answer("250 2.0.0 ok\r\n");
            }
            "QUIT" => {
                self.answer("221 2.0.0 bye\r\n");
                self.closed = true;
            }
            "MAIL" => {
                self.accepted.clear();
                self.mail_ok = self.answer("250 2.1.0 ok\r\n");
            }
            "RCPT" => {
                let addr = line
                    .trim_start_matches("RCPT TO:<")
                    .trim_end_matches('>')
                    .to_string();
                if self.answer("250 2.1.5 ok\r\n") {
                    self.accepted.push(addr);
                }
            }
            "DATA" => {
                // Decide up front so the body is read after a 354.
                let before = self.out.len();
                self.answer("354 go\r\n");
                if self.out.get(before..before + 4) == Some(&b"354 "[..]) {
                    self.mode = FakeMode::Data;
                } else {
                    self.mail_ok = false;
                    self.accepted.clear();
                }
            }
            "BDAT" => {
                let n = line
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                self.mode = FakeMode::Bdat(n);
                if n == 0 {
                    self.mode = FakeMode::Command;
                    self.end_of_message();
                }
            }
            _ => {
                self.answer("500 5.5.2 what\r\n");
            }
        }
    }
}

#[derive(Debug, Clone)]
struct FuzzTxn {
    rcpts: usize,
    body: u8,
    eight_bit: bool,
    smtputf8: bool,
}

fn fuzz_txn() -> impl Strategy<Value = FuzzTxn> {
    (0usize..5, any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
        |(rcpts, body, eight_bit, smtputf8)| FuzzTxn {
            rcpts,
            body,
            eight_bit: eight_bit && body % 3 == 0,
            smtputf8: smtputf8 && body % 5 == 0,
        },
    )
}

fn make_txn(id: u64, f: &FuzzTxn) -> Transaction {
    let bodies = [
        "",
        "x\r\n",
        ".a\r\n.\r\nb",
        "Subject: s\r\n\r\nhello world\r\n",
    ];
    Transaction {
        id,
        reverse_path: "s@x".into(),
        recipients: (0..f.rcpts)
            .map(|i| Recipient {
                index: i,
                // Unique addresses so the fake server's view can be
                // compared with the client's.
                address: if f.body % 11 == 0 && i == 1 {
                    "bad\r\naddr".into()
                } else {
                    format!("t{id}r{i}@y").into()
                },
            })
            .collect(),
        body: Bytes::from_static(bodies[usize::from(f.body) % bodies.len()].as_bytes()),
        eight_bit: f.eight_bit,
        smtputf8: f.smtputf8,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_recipient_gets_exactly_one_outcome(
        choices in proptest::collection::vec(any::<u8>(), 0..80),
        caps in any::<u8>(),
        size in prop_oneof![Just(0u64), Just(10), Just(1000)],
        initial in proptest::collection::vec(fuzz_txn(), 0..4),
        later in proptest::collection::vec(fuzz_txn(), 0..4),
        chunk in 1usize..40,
        disconnect_at in prop_oneof![Just(usize::MAX), 0usize..40],
        prefer_bdat in any::<bool>(),
        policy in 0u8..3,
        auth in any::<bool>(),
        max_rcpt in 1usize..4,
        window in 1usize..4,
    ) {
        let cfg = ClientConfig {
            ehlo_name: "relay".into(),
            max_rcpt_per_txn: max_rcpt,
            prefer_bdat,
            max_pipelined_txns: window,
            tls_policy: [TlsPolicy::Disabled, TlsPolicy::Opportunistic, TlsPolicy::Required]
                [usize::from(policy)],
            auth: auth.then(|| ("u".to_string(), "p".to_string())),
            ..ClientConfig::default()
        };
        let mut s = ClientSession::new(Arc::new(cfg));
        let mut fake = FakeServer {
            choices,
            next: 0,
            caps,
            size,
            inbuf: Vec::new(),
            mode: FakeMode::Command,
            out: Vec::new(),
            desync: false,
            closed: false,
            mail_ok: false,
            accepted: Vec::new(),
            delivered: Vec::new(),
        };
        let mut expected: HashMap<(u64, usize), String> = HashMap::new();
        let mut next_id = 0u64;
        let mut enqueue = |s: &mut ClientSession, f: &FuzzTxn, expected: &mut HashMap<(u64, usize), String>| {
            let t = make_txn(next_id, f);
            for r in &t.recipients {
                expected.insert((next_id, r.index), r.address.to_string());
            }
            next_id += 1;
            s.enqueue(t);
        };
        for f in &initial {
            enqueue(&mut s, f, &mut expected);
        }
        fake.answer("220 mx.example ESMTP\r\n");
        let mut later = later.into_iter();
        let mut events = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut closed = false;
        let mut quit_called = false;
        for step in 0..400 {
            if step == disconnect_at {
                s.handle_closed();
            }
            // Server to client, in small pieces.
            let incoming = std::mem::take(&mut fake.out);
            for piece in incoming.chunks(chunk) {
                buf.extend_from_slice(piece);
                let n = s.handle_input(&buf);
                prop_assert!(n <= buf.len());
                buf.drain(..n);
                while let Some(ev) = s.poll_event() {
                    if ev == ClientEvent::StartTls {
                        s.tls_established();
                    }
                    events.push(ev);
                }
            }
            if events.iter().any(|e| matches!(e, ClientEvent::Closed { .. })) {
                closed = true;
                break;
            }
            // Client to server.
            let mut wrote = false;
            loop {
                let mut out = Vec::new();
                let body = s.poll_transmit(&mut out);
                if out.is_empty() && body.is_none() {
                    break;
                }
                wrote = true;
                fake.recv(&out);
                if let Some(b) = body {
                    fake.recv(&b);
                }
            }
            while let Some(ev) = s.poll_event() {
                events.push(ev);
            }
            if fake.out.is_empty() && !wrote {
                // Nothing is moving: more work, a QUIT, or a timeout.
                if s.is_idle() {
                    if let Some(f) = later.next() {
                        enqueue(&mut s, &f, &mut expected);
                        continue;
                    }
                    if !quit_called {
                        quit_called = true;
                        s.quit();
                        continue;
                    }
                }
                if fake.closed {
                    s.handle_closed();
                } else {
                    s.handle_timeout();
                }
            }
        }
        if !closed {
            s.handle_closed();
        }
        // Work offered after the end is still settled.
        for f in later {
            enqueue(&mut s, &f, &mut expected);
        }
        while let Some(ev) = s.poll_event() {
            events.push(ev);
        }

        let mut outcomes: HashMap<(u64, usize), Outcome> = HashMap::new();
        let mut done: HashMap<u64, usize> = HashMap::new();
        let mut closes = 0;
        for ev in &events {
            match ev {
                ClientEvent::RcptOutcome { txn, rcpt, outcome } => {
                    prop_assert!(!done.contains_key(txn), "outcome after TxnDone");
                    prop_assert!(
                        outcomes.insert((*txn, *rcpt), outcome.clone()).is_none(),
                        "two outcomes for {txn}.{rcpt}"
                    );
                }
                ClientEvent::TxnDone { txn } => {
                    *done.entry(*txn).or_default() += 1;
                    let want = expected.keys().filter(|(t, _)| t == txn).count();
                    let have = outcomes.keys().filter(|(t, _)| t == txn).count();
                    prop_assert_eq!(want, have, "TxnDone before all outcomes");
                }
                ClientEvent::Closed { .. } => closes += 1,
                _ => {}
            }
        }
        prop_assert_eq!(closes, 1);
        prop_assert_eq!(outcomes.len(), expected.len());
        for key in expected.keys() {
            prop_assert!(outcomes.contains_key(key));
        }
        prop_assert_eq!(done.len() as u64, next_id);
        prop_assert!(done.values().all(|&n| n == 1));
        prop_assert_eq!(s.in_flight(), 0);
        // What the client calls delivered, the server really accepted.
        if !fake.desync {
            for (key, outcome) in &outcomes {
                if let Outcome::Delivered(_) = outcome {
                    let addr = &expected[key];
                    prop_assert!(
                        fake.delivered.contains(addr),
                        "{} delivered per client, not per server", addr
                    );
                }
            }
        }
    }
}
