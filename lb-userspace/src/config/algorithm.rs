//! `algorithm`: how a VIP spreads new flows.

use std::{fmt, str::FromStr};

use serde::Deserialize;

/// How a VIP picks the backend of a new flow (the connection table then
/// keeps it). The README's "Balancing algorithms" section says what each
/// promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Maglev over the 5-tuple: consistent across instances.
    #[default]
    Maglev,
    /// Maglev over the client address only: every connection of a client
    /// reaches one backend; consistent across instances.
    SourceHash,
    /// Weighted round-robin over new flows, per instance (and per CPU).
    RoundRobin,
    /// The backend with the fewest active connections per unit of weight,
    /// per instance.
    LeastConnections,
}

impl Algorithm {
    /// `lb_common::ALGO_*` value the data path reads.
    pub fn code(self) -> u32 {
        match self {
            Algorithm::Maglev => lb_common::ALGO_MAGLEV,
            Algorithm::SourceHash => lb_common::ALGO_SOURCE_HASH,
            Algorithm::RoundRobin => lb_common::ALGO_ROUND_ROBIN,
            Algorithm::LeastConnections => lb_common::ALGO_LEAST_CONN,
        }
    }

    /// Whether the choice depends on this instance's own state, so several
    /// instances behind ECMP may send one flow to different backends.
    pub fn per_instance(self) -> bool {
        matches!(self, Algorithm::RoundRobin | Algorithm::LeastConnections)
    }

    /// Inverse of [`Algorithm::code`] (an unknown code reads as maglev, what
    /// the program does with it).
    pub fn from_code(code: u32) -> Algorithm {
        match code {
            lb_common::ALGO_SOURCE_HASH => Algorithm::SourceHash,
            lb_common::ALGO_ROUND_ROBIN => Algorithm::RoundRobin,
            lb_common::ALGO_LEAST_CONN => Algorithm::LeastConnections,
            _ => Algorithm::Maglev,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Maglev => "maglev",
            Algorithm::SourceHash => "source-hash",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConnections => "least-connections",
        })
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| format!("{s:?} is not an algorithm: maglev, source-hash, round-robin, least-connections"))
    }
}
