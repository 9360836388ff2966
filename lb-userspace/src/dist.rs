//! `lb completions SHELL` and `lb man --dir DIR`: generated from the clap
//! definition, so they never drift from `lb --help`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "lb", &mut std::io::stdout());
}

/// Writes `lb.1` and one page per command (`lb-vip-add.1`, ...).
pub fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing man pages to {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1")))
        .count();
    println!("wrote {pages} man pages to {}", dir.display());
    Ok(())
}
