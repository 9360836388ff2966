use super::super::{
    Config,
    tests::{GOOD, err},
};

/// The first VIP of the config tests' file with every key of this module.
fn vip() -> String {
    GOOD.replacen(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\n\
         health_check = { kind = \"tcp\", interval_ms = 10000, timeout_ms = 500, fastinter_ms = 100, downinter_ms = 3000 }\n\
         slowstart_ms = 5000\n\
         agent_check = { port = 9999, interval_ms = 500, timeout_ms = 200, send = \"status\\n\" }\n",
        1,
    )
}

#[test]
fn the_keys_parse() {
    let c = Config::from_toml_str(&vip()).unwrap();
    let v = &c.vips[0];
    let hc = v.health_check.as_ref().unwrap();
    assert_eq!((hc.interval_ms, hc.fastinter_ms, hc.downinter_ms), (10_000, Some(100), Some(3_000)));
    assert_eq!(v.slowstart_ms, 5000);
    let a = v.agent_check.as_ref().unwrap();
    assert_eq!((a.port, a.interval_ms, a.timeout_ms, a.send.as_deref()), (9999, 500, 200, Some("status\n")));
}

#[test]
fn the_keys_default_to_off() {
    let text = vip()
        .replace(", fastinter_ms = 100, downinter_ms = 3000", "")
        .replace("slowstart_ms = 5000\n", "")
        .replace(", interval_ms = 500, timeout_ms = 200, send = \"status\\n\"", "");
    let c = Config::from_toml_str(&text).unwrap();
    let v = &c.vips[0];
    let hc = v.health_check.as_ref().unwrap();
    assert_eq!((hc.fastinter_ms, hc.downinter_ms), (None, None));
    assert_eq!(v.slowstart_ms, 0);
    let a = v.agent_check.as_ref().unwrap();
    assert_eq!((a.interval_ms, a.timeout_ms, a.send.as_deref()), (2000, 1000, None));
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("fastinter_ms = 100", "fastinter_ms = 5", "vip[0].health_check.fastinter_ms: 5 must be from 10 to 3600000"),
        ("downinter_ms = 3000", "downinter_ms = 3600001", "vip[0].health_check.downinter_ms: 3600001 must be"),
        ("slowstart_ms = 5000", "slowstart_ms = 3600001", "vip[0].slowstart_ms: 3600001 must be from 0 (off)"),
        ("port = 9999", "port = 0", "vip[0].agent_check.port: must be 1-65535"),
        ("interval_ms = 500,", "interval_ms = 1,", "vip[0].agent_check.interval_ms: 1 must be"),
        ("timeout_ms = 200,", "timeout_ms = 600,", "vip[0].agent_check.timeout_ms: 600 must be from 1 to interval_ms"),
        ("send = \"status\\n\"", "send = \"\"", "vip[0].agent_check.send: must be 1 to 512 bytes"),
        ("send = ", "colour = \"red\", send = ", "colour"),
    ];
    for (from, to, want) in cases {
        let text = vip().replace(from, to);
        assert_ne!(text, vip(), "{from}");
        let e = err(&text);
        assert!(e.starts_with(want) || (want == "colour" && e.contains(want)), "{to}: {e}");
    }
    let long = format!("send = \"{}\"", "x".repeat(513));
    assert!(
        err(&vip().replace("send = \"status\\n\"", &long)).starts_with("vip[0].agent_check.send: must be 1 to 512")
    );
}
