use proptest::prelude::*;

use super::*;

#[test]
fn a_route_stat_name_escapes_all_but_letters_digits_and_dashes() {
    let cases = [
        (("web", "get"), "web__get"),
        (("web-routes", "GET-2"), "web-routes__GET-2"),
        (("a.b", "c_d"), "a_2eb__c_5fd"),
        (("", ""), "__"),
        (("g", "/books/{id}"), "g___2fbooks_2f_7bid_7d"),
        (("g", "é"), "g___c3_a9"),
        (("g", "a__b"), "g__a_5f_5fb"),
    ];
    for ((group, name), written) in cases {
        let r = RouteStatName::new(group, name);
        assert_eq!(r.to_string(), written, "{r:?}");
        assert_eq!(RouteStatName::parse(written), Some(r), "{written}");
        // What Envoy's tag extraction takes as one segment.
        assert!(
            written
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{written}"
        );
    }
}

#[test]
fn only_what_display_writes_parses() {
    for bad in [
        "web",        // no separator
        "web.x__get", // a dot
        "web__g_2",   // an escape cut short
        "web__g_2E",  // upper-case hex
        "web__g_41",  // `A` escaped, which stands for itself
        "web__g_zz",  // not hex
        "web__g_ff",  // not UTF-8
        "web__a___b", // `_` followed by `_`
        "web__g/x",   // a byte that is escaped
    ] {
        assert_eq!(RouteStatName::parse(bad), None, "{bad}");
    }
}

#[test]
fn the_inclusion_list_keeps_route_stats_of_one_segment_only() {
    let set = regex::RegexSet::new(envoy::STATS_INCLUSION).unwrap();
    let name = RouteStatName::new("web.routes", "books").to_string();
    for kept in [
        format!("vhost.inbound|8080.route.{name}.upstream_rq_2xx"),
        format!("vhost.inbound|8080.route.{name}.upstream_rq_time"),
    ] {
        assert!(set.is_match(&kept), "{kept}");
    }
    for left in [
        format!("vhost.inbound|8080.route.{name}.upstream_rq_200"),
        format!("vhost.inbound|8080.route.{name}.upstream_rq_total"),
        "vhost.inbound|8080.route.a.b.upstream_rq_2xx".to_owned(),
        "vhost.inbound|8080.vcluster.other.upstream_rq_2xx".to_owned(),
    ] {
        assert!(!set.is_match(&left), "{left}");
    }
}

proptest! {
    #[test]
    fn every_route_stat_name_round_trips(group in ".*", name in ".*") {
        let r = RouteStatName::new(group, name);
        let written = r.to_string();
        prop_assert!(!written.contains('.'));
        prop_assert_eq!(RouteStatName::parse(&written), Some(r));
    }

    #[test]
    fn whatever_parses_is_written_back_the_same(s in "[a-z0-9_.-]{0,12}") {
        if let Some(r) = RouteStatName::parse(&s) {
            prop_assert_eq!(r.to_string(), s);
        }
    }
}
