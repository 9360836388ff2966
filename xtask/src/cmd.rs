//! Running child processes: every command that changes something is echoed as
//! `+ VAR=value program args` on stderr before it runs, so logs read like a
//! shell trace.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

/// A child process exited unsuccessfully. `main` turns this into the process'
/// own exit code so that, e.g., a failing `cargo test` or demo keeps its code.
#[derive(Debug)]
pub struct ChildFailed {
    pub command: String,
    pub code: i32,
}

impl fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed with exit code {}", self.command, self.code)
    }
}

impl std::error::Error for ChildFailed {}

/// Exit code of a finished child, shell style: 128+N when killed by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// A `std::process::Command` that remembers a printable form of itself.
pub struct Cmd {
    inner: Command,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            inner: Command::new(program.as_ref()),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.inner.arg(arg.as_ref());
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets a variable in the child's environment (shown in the trace).
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env(key.as_ref(), val.as_ref());
        self.envs.push((key.as_ref().to_owned(), val.as_ref().to_owned()));
        self
    }

    /// Removes a variable from the child's environment (not shown in the trace).
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env_remove(key.as_ref());
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.inner.current_dir(dir.as_ref());
        self
    }

    /// The command line, shell-quoted, with the variables it sets in front.
    pub fn display(&self) -> String {
        let mut parts: Vec<String> =
            self.envs.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), shell_quote(v))).collect();
        parts.push(shell_quote(&self.program));
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        parts.join(" ")
    }

    fn spawn_error(&self) -> String {
        let program = self.program.to_string_lossy();
        format!("could not start `{program}` (is it installed and on PATH?)")
    }

    /// Echoes the command, runs it with inherited stdio, and returns its status.
    pub fn status(&mut self) -> Result<ExitStatus> {
        eprintln!("+ {}", self.display());
        self.inner.status().with_context(|| self.spawn_error())
    }

    /// Echoes and runs the command; a non-zero exit is a [`ChildFailed`] error.
    pub fn run(&mut self) -> Result<()> {
        let status = self.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(ChildFailed { command: self.display(), code: exit_code(status) }.into())
        }
    }

    /// Echoes and runs the command, passing each line of its stdout to
    /// `on_line` (which prints it); stderr is inherited.
    pub fn run_lines(&mut self, mut on_line: impl FnMut(&str)) -> Result<()> {
        use std::io::BufRead;
        eprintln!("+ {}", self.display());
        let mut child = self.inner.stdout(Stdio::piped()).spawn().with_context(|| self.spawn_error())?;
        let stdout = child.stdout.take().expect("piped");
        for line in std::io::BufReader::new(stdout).lines() {
            on_line(&line.context("reading the child's output")?);
        }
        let status = child.wait().with_context(|| self.spawn_error())?;
        if status.success() {
            Ok(())
        } else {
            Err(ChildFailed { command: self.display(), code: exit_code(status) }.into())
        }
    }

    /// Runs a probe silently and returns its stdout, or an error that carries
    /// the command line and its stderr. Used for cheap, read-only checks.
    pub fn read(&mut self) -> Result<String> {
        let out = self.inner.stdin(Stdio::null()).output().with_context(|| self.spawn_error())?;
        if !out.status.success() {
            anyhow::bail!(
                "`{}` failed ({}): {}",
                self.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Replaces the current process with the command (Unix `exec`), so that
    /// signals such as Ctrl-C reach it directly. Returns only on failure.
    pub fn exec(&mut self) -> anyhow::Error {
        use std::os::unix::process::CommandExt;
        eprintln!("+ exec {}", self.display());
        let err = self.inner.exec();
        anyhow::Error::new(err).context(self.spawn_error())
    }
}

/// Quotes a word for display the way a POSIX shell would need it; control
/// characters (e.g. the 0x1f separator of CARGO_ENCODED_RUSTFLAGS) use bash's
/// `$'...'` form.
pub fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c)) {
        return s.into_owned();
    }
    if s.chars().any(|c| c.is_control()) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::shell_quote;
    use std::ffi::OsStr;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(OsStr::new("--target-dir")), "--target-dir");
        assert_eq!(shell_quote(OsStr::new("-L native=/tmp/x")), "'-L native=/tmp/x'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(OsStr::new("-C\x1fdebuginfo=2")), r"$'-C\x1fdebuginfo=2'");
    }
}
