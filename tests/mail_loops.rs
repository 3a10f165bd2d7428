//! Mail that would come back to sluice itself (an address literal of one of
//! its listeners, or an MX that resolves to one) is bounced once with
//! `5.4.6` and a DSN, instead of circling through the appliance for ever.
//!
//! The lab's MX port is sluice's own listening port here, so every MX
//! delivery is a loop; the sender's domain is routed to the sink, where the
//! DSN lands, and `d1.test` too, to show ordinary mail still flows.

mod common;
use common::lab::{send, Lab};
use common::postfix::free_port;

const ZONE: &str = r#"
[[record]]
name = "loop.test"
type = "MX"
data = "10 mx.lab.test"
"#;

const PROFILE: &str = "[default]\n";

fn lab() -> Lab {
    let own = free_port();
    Lab::start_around_sink(
        ZONE,
        PROFILE,
        &|sink| {
            format!(
                "[smtp]\nlisten = [\"127.0.0.1:{own}\"]\n\
                 [[dns.routes]]\ndomains = [\"sender.test\", \"d1.test\"]\nhosts = [\"{sink}\"]\n"
            )
        },
        Some(own),
    )
}

fn assert_bounced_once_as_loop(lab: &Lab, rcpt: &str) {
    let bounced = lab.wait_log(&["\"event\":\"bounced\"", rcpt], 1);
    assert!(
        bounced[0].contains("\"status\":\"5.4.6\""),
        "{}",
        bounced[0]
    );
    assert!(
        bounced[0].contains("loops back to myself"),
        "{}",
        bounced[0]
    );
    // The DSN reached the sender (the sink owns sender.test).
    lab.wait_sink("the DSN", |r| {
        r.domains
            .get("sender.test")
            .is_some_and(|d| d.accepted == 1)
    });
}

#[test]
fn address_literal_of_our_listener_bounces_once_with_a_dsn() {
    let lab = lab();
    send(
        lab.sluice(),
        "a@sender.test",
        &["x@[127.0.0.1]", "ok@d1.test"],
        1,
    );
    assert_bounced_once_as_loop(&lab, "x@[127.0.0.1]");
    lab.wait_sink("the ordinary recipient", |r| {
        r.domains.get("d1.test").is_some_and(|d| d.accepted == 1)
    });
    let s = lab.stop();
    // One bounce, one DSN; the literal recipient was never delivered (a
    // loop would have delivered it to ourselves again and again).
    assert_eq!((s.bounced, s.dsns, s.delivered), (1, 1, 2), "{s:?}");
}

#[test]
fn mx_pointing_back_at_us_bounces_once_with_a_dsn() {
    let lab = lab();
    send(lab.sluice(), "a@sender.test", &["x@loop.test"], 1);
    assert_bounced_once_as_loop(&lab, "x@loop.test");
    let s = lab.stop();
    assert_eq!((s.bounced, s.dsns, s.delivered), (1, 1, 1), "{s:?}");
}
