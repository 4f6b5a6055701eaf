//! Typed identifiers. Every id is assigned by the state machine from a counter, so
//! every replica assigns the same id to the same object.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, concat!($prefix, "-{}"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let digits = text.strip_prefix(concat!($prefix, "-")).unwrap_or(text);
                digits
                    .parse::<u64>()
                    .map($name)
                    .map_err(|_| format!("'{text}' is not a valid {} id", $prefix))
            }
        }
    };
}

id_type!(TenantId, "tenant");
id_type!(PoolId, "pool");
id_type!(NodeId, "node");
id_type!(NetworkId, "net");
id_type!(JobId, "job");
id_type!(MeterId, "meter");
id_type!(TokenId, "token");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_with_their_prefix() {
        assert_eq!(JobId(42).to_string(), "job-42");
        assert_eq!("job-42".parse::<JobId>(), Ok(JobId(42)));
        assert_eq!("42".parse::<JobId>(), Ok(JobId(42)));
        assert!("pool-x".parse::<PoolId>().is_err());
    }
}
