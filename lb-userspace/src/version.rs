//! `lb --version`: the crate version, the commit it was built from (by
//! build.rs; "unknown" outside a git checkout) and the layout version of the
//! XDP program's maps, which decides whether a running data path is adopted.

use std::sync::OnceLock;

pub fn text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (git {}, program layout v{})",
            env!("CARGO_PKG_VERSION"),
            env!("LB_GIT_COMMIT"),
            lb_common::LAYOUT_VERSION
        )
    })
}
