//! How the planner ranks the agents that can take an instance.

use std::fmt;

/// Which of the fitting agents an instance goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// The agent that ends up most utilised after placement (mean of used/total over cpus and
    /// mem), so agents fill one after another and whole agents stay free for large tasks.
    #[default]
    BinPack,
    /// The agent running the fewest instances of this app, then the least utilised after
    /// placement.
    Spread,
    /// A uniformly random fitting agent, drawn from the plan's seeded RNG.
    Random,
}

/// A strategy name that is not `binpack`, `spread` or `random`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placement strategy: unknown {name:?}; expected binpack, spread or random")]
pub struct UnknownStrategy {
    /// The name as written.
    pub name: String,
}

impl std::str::FromStr for PlacementStrategy {
    type Err = UnknownStrategy;

    /// Case-insensitive `binpack` (also `bin_pack`, `bin-pack`), `spread` or `random`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text
            .trim()
            .to_ascii_lowercase()
            .replace(['_', '-'], "")
            .as_str()
        {
            "binpack" => Ok(Self::BinPack),
            "spread" => Ok(Self::Spread),
            "random" => Ok(Self::Random),
            _ => Err(UnknownStrategy {
                name: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BinPack => "binpack",
            Self::Spread => "spread",
            Self::Random => "random",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_display() {
        for strategy in [
            PlacementStrategy::BinPack,
            PlacementStrategy::Spread,
            PlacementStrategy::Random,
        ] {
            assert_eq!(
                strategy.to_string().parse::<PlacementStrategy>(),
                Ok(strategy)
            );
        }
        assert_eq!("BIN_PACK".parse(), Ok(PlacementStrategy::BinPack));
        assert_eq!(PlacementStrategy::default(), PlacementStrategy::BinPack);
        let error = "densest".parse::<PlacementStrategy>().unwrap_err();
        assert!(error.to_string().contains("unknown \"densest\""));
    }
}
