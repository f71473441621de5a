//! The vocabulary types: identifiers, versions and values.

mod hlc;
mod ids;
mod value;

pub use hlc::{Clock, ClockSkewError, Hlc, Version};
pub use ids::{NodeId, RecordId, Seq};
pub use value::{Timestamp, Value};
