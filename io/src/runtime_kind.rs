//! Which runtime a binary runs on, as its `--runtime` flag spells it.

use std::fmt;
use std::str::FromStr;

/// The async runtimes the adapter is built for. Shared by the Grape and the proxy so that
/// both spell the flag, and name a runtime in their errors, the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// smol (crate `grenache-smol`).
    Smol,
    /// tokio (crate `grenache-tokio`).
    Tokio,
}

impl RuntimeKind {
    /// Every runtime, in the order `--help` lists them.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Smol, RuntimeKind::Tokio];

    /// The flag's spelling.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Smol => "smol",
            RuntimeKind::Tokio => "tokio",
        }
    }

    /// The runtime that is not this one.
    #[must_use]
    pub fn other(self) -> RuntimeKind {
        match self {
            RuntimeKind::Smol => RuntimeKind::Tokio,
            RuntimeKind::Tokio => RuntimeKind::Smol,
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuntimeKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?} (smol or tokio)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        for kind in RuntimeKind::ALL {
            assert_eq!(kind.name().parse::<RuntimeKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
            assert_ne!(kind.other(), kind);
        }
        assert!("async-std".parse::<RuntimeKind>().is_err());
        assert!("Tokio".parse::<RuntimeKind>().is_err());
    }
}
