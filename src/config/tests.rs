use super::*;
use std::path::Path;

fn err(text: &str) -> String {
    match Config::parse(text, Path::new("/etc/sluice.toml")) {
        Ok(_) => panic!("accepted invalid config:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_is_the_defaults() {
    let c = Config::parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert!(c.smtp.relay_networks[0].contains("127.0.0.1".parse().unwrap()));
    assert!(!c.smtp.relay_networks[0].contains("127.0.0.2".parse().unwrap()));
    assert_eq!(c.ack, AckMode::Journal);
    assert_eq!(c.smtp.command_timeout.0.as_secs(), 300);
}

#[test]
fn missing_file_is_the_defaults() {
    let c = Config::load(Path::new("/nonexistent/sluice.toml")).unwrap();
    assert_eq!(c.smtp.max_recipients, 1000);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("hostname = \"a\"\n\n[smtp]\nmax_errors = 3\nmax_eror = 4\n");
    assert!(
        e.starts_with("/etc/sluice.toml:5: key `smtp.max_eror`"),
        "{e}"
    );
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = err("[smtp]\nmax_recipients = \"many\"\n");
    assert!(
        e.starts_with("/etc/sluice.toml:2: key `smtp.max_recipients`"),
        "{e}"
    );
}

#[test]
fn invalid_values_are_rejected_with_location() {
    let e = err("[smtp]\nrelay_networks = [\"127.0.0.1/33\"]\n");
    assert!(
        e.starts_with("/etc/sluice.toml:2: key `smtp.relay_networks`"),
        "{e}"
    );
    assert!(e.contains("CIDR"), "{e}");
    let e = err("[smtp]\ncommand_timeout = \"5 fortnights\"\n");
    assert!(e.contains(":2: key `smtp.command_timeout`"), "{e}");
    let e = err("[backpressure]\nmax_bytes = \"12XB\"\n");
    assert!(e.contains(":2: key `backpressure.max_bytes`"), "{e}");
    let e = err("cores = \"some\"\n");
    assert!(e.contains(":1: key `cores`"), "{e}");
    let e = err("ack = \"sometimes\"\n");
    assert!(e.contains(":1: key `ack`"), "{e}");
}

#[test]
fn downstream_ack_needs_the_deliver_route() {
    let e = err("\n\nack = \"downstream\"\nroute = \"discard\"\n");
    assert!(e.starts_with("/etc/sluice.toml:3: key `ack`"), "{e}");
    assert!(e.contains("deliver"), "{e}");
}

#[test]
fn journal_limits_are_checked() {
    let e = err("[journal]\nsegment_size = \"1KiB\"\n");
    assert!(e.contains(":2: key `journal.segment_size`"), "{e}");
}

#[test]
fn tls_needs_both_files() {
    let e = err("[tls]\ncertificate = \"/x.pem\"\n");
    assert!(e.contains("tls.certificate"), "{e}");
}

#[test]
fn units_parse() {
    let c = Config::parse(
        "[smtp]\nmax_message_size = \"10MiB\"\ndata_timeout = \"90s\"\ncommand_timeout = 60\n",
        Path::new("x"),
    )
    .unwrap();
    assert_eq!(c.smtp.max_message_size.0, 10 << 20);
    assert_eq!(c.smtp.data_timeout.0.as_secs(), 90);
    assert_eq!(c.smtp.command_timeout.0.as_secs(), 60);
}

#[test]
fn max_hops_defaults_to_50_and_must_allow_our_own_hop() {
    let c = Config::parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c.smtp.max_hops, 50);
    let c = Config::parse("[smtp]\nmax_hops = 7\n", Path::new("x.toml")).unwrap();
    assert_eq!(c.smtp.max_hops, 7);
    let e = err("[smtp]\nmax_hops = 0\n");
    assert!(e.contains(":2: key `smtp.max_hops`"), "{e}");
}
